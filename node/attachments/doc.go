// Package attachments stores, seals and moves the files that messages
// carry (docs/attachments.md): a file is padded to a size bucket, split
// into fixed chunks, each sealed under a per-file key and named by the
// CID of its ciphertext; a sealed chunk index lists them, and the
// manifest (inside the message's encrypted block) names the index, the
// key and what the UI shows. Chunks live in a Store on the node's
// datastore, with a quota and owners whose release deletes them; a Server
// answers chunk requests over protocol.ChunkProtocol to the peers the
// node's Access allows; a Fetcher brings a file's missing chunks from
// several providers at once, checking each on arrival and penalising a
// peer that sends garbage or withholds.
//
// The format (manifest, padding, sealing, index) is pure and in
// manifest.go and seal.go; the store, the server and the fetcher do the
// I/O. The package knows nothing of conversations or members: the node
// answers for those through Access and Providers.
package attachments
