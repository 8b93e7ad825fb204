package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
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
			testsupport.Eventually(b, 15*time.Second, "the routing table to fill", func() bool { return n.DHT.RoutingTable().Size() >= 2 })
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

// BenchmarkLinkDeviceWith10kHistory: a fresh node linked to an account
// whose conversation holds 10,000 messages, from the link request until
// the new device shows them all (history streamed by the linker, every
// author signature checked), on real hosts over loopback. Goal < 2 s.
func BenchmarkLinkDeviceWith10kHistory(b *testing.B) {
	n := 10_000
	if testing.Short() {
		n = 500
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		ada := startTestNode(b, loopbackConfig(b))
		bob := startTestNode(b, loopbackConfig(b))
		phone := startTestNode(b, loopbackConfig(b))
		setUpAccounts(b, map[*Node]string{ada: "Ada", bob: "Bob"})
		conv := befriend(b, ada, bob)
		for i := range n {
			if _, err := ada.Send(ctx, conv, fmt.Sprintf("message %d", i), ""); err != nil {
				b.Fatal(err)
			}
		}
		code, err := ada.Chat.devices.CreateLinkCode(ctx)
		if err != nil {
			b.Fatal(err)
		}
		testsupport.Connect(b, phone.Host, ada.Host)
		b.StartTimer()
		if err := phone.Link(ctx, code.Link); err != nil {
			b.Fatal(err)
		}
		for {
			p, err := phone.Messages(ctx, conv, 0, 1)
			if err == nil && p.Total == n {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		b.StopTimer()
		for _, nd := range []*Node{ada, bob, phone} {
			nd.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "messages")
}
