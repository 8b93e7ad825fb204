// Package dag implements Glitr's content-addressed block DAG: the wire
// format of blocks (a sealed DAG-CBOR envelope around a signed DAG-CBOR
// inner block), the builder for a device's own blocks, and a block store
// over go-datastore that keeps every conversation DAG downward-closed.
//
// On a go-ds-pebble datastore (bare or under a namespace) the store
// writes its keys straight into the pebble database (see Open and
// OpenPebble): two keys per committed block, one pebble batch per
// AddBatch. The bytes and keys are those the go-datastore path writes.
//
// The package never decrypts or verifies on its own initiative beyond what
// is cheap and structural: encryption goes through the Sealer and Opener
// interfaces (implemented by keyring), signatures through Signer and
// crypto/ed25519, and the body of a block is opaque bytes owned by crdt.
// The store accepts blocks that the caller has already opened and
// authenticated, so that decoding, decryption and signature checks can run
// in parallel outside the store's locks.
//
// The wire format is specified field by field in docs/protocol.md.
package dag
