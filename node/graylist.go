package node

import (
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// graylistGater keeps graylisted peers off the host: it refuses to dial
// them and refuses their connections. Closing the connection when a peer
// crosses the threshold (Node.Penalize) is not enough on its own: whatever
// dials next — the offender itself, discovery reconnecting a contact, a
// catch-up session or a DHT query (the DHT's check of a just-identified
// peer dials it within milliseconds of the disconnect) — connects it again,
// and it stays connected, its gossip ignored but its other streams served,
// until its penalty decays.
type graylistGater struct{ pen *penalties }

func (g graylistGater) InterceptPeerDial(p peer.ID) bool { return !g.pen.graylisted(p) }

func (g graylistGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool {
	return !g.pen.graylisted(p)
}

// InterceptAccept lets every connection through: the remote peer is not
// known before the security handshake.
func (g graylistGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g graylistGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.pen.graylisted(p)
}

func (g graylistGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return !g.pen.graylisted(c.RemotePeer()), 0
}
