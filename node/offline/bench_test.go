package offline

import (
	"context"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/mailbox"
)

// BenchmarkOfflineDrain measures what a device coming back online does
// with n messages waiting in its mailbox: one Drain of the service, which
// fetches the sealed items from the relay on loopback, opens and decodes
// each, hands it to the conversations (here a chat that keeps it) and
// acks them all. The deposits happen outside the timer. Issue 13's goal:
// 10,000 in < 500 ms; -short: 1,000.
func BenchmarkOfflineDrain(b *testing.B) {
	n := 10_000
	if testing.Short() {
		n = 1000
	}
	ctx := context.Background()
	r := newRelay(b, mailbox.Limits{MailboxEnvelopes: int64(n), MailboxDeposits: 1 << 30, MailboxBytes: 1 << 40, TotalBytes: 1 << 40},
		mailbox.Options{PeerBytes: 1 << 40, AddrBytes: 1 << 40, RequestRate: 1e6, RequestBurst: 1e6, DrainRate: 1e12, DrainBurst: 1e12})
	client := mailbox.NewClient(testsupport.Host(b), mailbox.ClientOptions{})
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		bob := newDevice(b, r)
		addr, _ := mailbox.ParseAddress(bob.addr)
		capa, _ := addr.Key.Capability(mailbox.PeriodOf(time.Now()))
		items := make([][]byte, n)
		for i := range items {
			items[i], _ = addr.Key.SealItem(encodeItem([]byte("conversation-sync-id-32-bytes..."), envelope(i)))
		}
		if _, err := client.Deposit(ctx, r.info(), capa, items); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		got, err := bob.svc.Drain(ctx)
		total += time.Since(start)
		if err != nil || got != n || bob.chat.count("conversation-sync-id-32-bytes...") != n {
			b.Fatalf("drained %d of %d: %v", got, n, err)
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/drain")
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "msgs/s")
}
