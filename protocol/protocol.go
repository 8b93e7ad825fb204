// Package protocol names everything Glitr puts on the wire: libp2p protocol
// IDs, the private DHT's prefix and record namespaces, gossipsub topic names,
// and the formats of records that other nodes validate.
//
// Nothing here does I/O; the node package wires these names into a host.
package protocol

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Version is the wire protocol generation. Every label and protocol ID below
// carries it, so a future incompatible change can run beside this one.
const Version = "v1"

// DHTPrefix is the protocol prefix of Glitr's private Kademlia DHT. Its
// protocol ID becomes "/glitr/kad/1.0.0", so Glitr nodes never speak to (or
// join) the public IPFS DHT, whose ID is "/ipfs/kad/1.0.0".
const DHTPrefix protocol.ID = "/glitr"

// DHTProtocol is the full DHT protocol ID derived from DHTPrefix.
const DHTProtocol protocol.ID = DHTPrefix + "/kad/1.0.0"

// RendezvousNamespace is the DHT record namespace for signed rendezvous
// records: keys look like "/glitr-rv/<64 hex digits>".
const RendezvousNamespace = "glitr-rv"

// SyncProtocol is the direct stream protocol for catch-up sync.
const SyncProtocol protocol.ID = "/glitr/sync/1.0.0"

// UserAgent is announced through identify. It names the software, not the
// user or the machine.
const UserAgent = "glitr"

// Label returns the domain-separation label "glitr/v1/<name>" used for
// signatures and key derivations, so that a signature or key made for one
// purpose can never be valid for another.
func Label(name string) string { return "glitr/" + Version + "/" + name }

// ErrBadPeer marks an error caused by what a peer sent: bytes that break
// a format or a rule of a protocol. Whoever reads them penalises the peer
// (the catch-up engine, the gossip validator, the history transfer, the
// request handlers), and nothing of it is kept.
var ErrBadPeer = errors.New("peer misbehaved")
