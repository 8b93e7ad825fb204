package node

import (
	"context"
	"testing"
	"time"
)

// BenchmarkInviteToFirstMessage: from accepting an invite (no address known
// but the DHT's) to the accepter's first message shown at the inviter, on
// real hosts over loopback. Goal < 1 s.
func BenchmarkInviteToFirstMessage(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		boot := startTestNode(b, loopbackConfig(b))
		bootAddr := boot.Host.Addrs()[0].String() + "/p2p/" + boot.Host.ID().String()
		var ns []*Node
		for range 2 {
			cfg := loopbackConfig(b)
			cfg.Network.BootstrapPeers = []string{bootAddr}
			ns = append(ns, startTestNode(b, cfg))
		}
		for _, n := range ns {
			eventually(b, 15*time.Second, "the routing table to fill", func() bool { return n.DHT.RoutingTable().Size() >= 2 })
		}
		inv, err := ns[0].CreateInvite(ctx, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		_, conv, err := ns[1].AcceptInvite(ctx, inv.Link)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ns[1].Send(ctx, conv, "first", ""); err != nil {
			b.Fatal(err)
		}
		for {
			p, err := ns[0].Messages(ctx, conv, 0, 1)
			if err == nil && len(p.Messages) == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		for _, n := range append(ns, boot) {
			n.Close()
		}
		b.StartTimer()
	}
}
