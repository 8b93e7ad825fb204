package node

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
)

// TestDialsNotRateLimited: libp2p's limiter of new connections per address
// counted dials, so re-dialling a member after a dead link ran dry after 16
// attempts (one every 5 s after that). Dials are free now; inbound
// connections keep libp2p's limit, and loopback none.
func TestDialsNotRateLimited(t *testing.T) {
	inner, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits), rcmgr.WithConnRateLimiters(&rate.Limiter{}))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	rm := newInboundRateLimited(inner)
	open := func(dir network.Direction, addr string) error {
		s, err := rm.OpenConnection(dir, true, ma.StringCast(addr))
		if err == nil {
			s.Done()
		}
		return err
	}
	for i := range 100 {
		if err := open(network.DirOutbound, "/ip4/192.0.2.7/udp/4001/quic-v1"); err != nil {
			t.Fatalf("dial %d refused: %v", i+1, err)
		}
	}
	for i := range 100 {
		if err := open(network.DirInbound, "/ip4/127.0.0.1/udp/4001/quic-v1"); err != nil {
			t.Fatalf("loopback connection %d refused: %v", i+1, err)
		}
	}
	refused := 0
	for range 40 {
		if open(network.DirInbound, "/ip4/192.0.2.8/udp/4001/quic-v1") != nil {
			refused++
		}
	}
	if refused != 40-16 {
		t.Errorf("%d of 40 inbound connections from one address refused, want %d (a burst of 16)", refused, 40-16)
	}
	if err := open(network.DirInbound, "/ip6/2001:db8::1/udp/4001/quic-v1"); err != nil {
		t.Errorf("another address refused: %v", err)
	}
}
