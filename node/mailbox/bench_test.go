package mailbox

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkMailbox measures, between two loopback hosts in one process,
// depositing n envelopes of 400 bytes (requests of up to 256 envelopes,
// each synced to disk before it is acknowledged) and draining and acking
// them all (one drain of up to 4096, acks on the same stream). With
// -short, n is 1,000.
func BenchmarkMailbox(b *testing.B) {
	n := 20_000
	if testing.Short() {
		n = 1000
	}
	const size = 400
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(b, clk, Options{PeerBytes: 1 << 40, AddrBytes: 1 << 40, RequestRate: 1e6, RequestBurst: 1e6, DrainItems: 4096, DrainRate: 1e12, DrainBurst: 1e12},
		Limits{MailboxEnvelopes: int64(n), MailboxDeposits: 1 << 40, MailboxBytes: 1 << 40, TotalBytes: 1 << 40})
	sender, owner := newClient(b, clk), newClient(b, clk)
	var depositTime, drainTime time.Duration
	round := 0
	for b.Loop() {
		// A fresh owner each round: a mailbox remembers acked digests.
		o := testOwner(byte(round))
		round++
		capa := capFor(b, contactKey(b, o), clk.Now())
		es := envs(fmt.Sprint("bench", round), n, size)
		start := time.Now()
		if res, err := sender.Deposit(ctx, relay.info(), capa, es); err != nil || res.Stored != n {
			b.Fatalf("deposit: %+v %v", res, err)
		}
		depositTime += time.Since(start)
		start = time.Now()
		keys := o.DrainKeys([]Period{capa.Period})
		got, acked := 0, 0
		for {
			d, err := owner.Drain(ctx, relay.info(), keys, DrainOptions{}, func(Item) error { got++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			acked += d.Acked
			if !d.More {
				break
			}
		}
		drainTime += time.Since(start)
		if got != n || acked != n {
			b.Fatalf("drained %d, acked %d of %d", got, acked, n)
		}
	}
	rounds := float64(round)
	b.ReportMetric(float64(n)*rounds/depositTime.Seconds(), "deposited/s")
	b.ReportMetric(float64(n)*rounds/drainTime.Seconds(), "drained+acked/s")
	b.ReportMetric(float64(n*size)*rounds/depositTime.Seconds()/1e6, "deposit-MB/s")
	b.ReportMetric(float64(n*size)*rounds/drainTime.Seconds()/1e6, "drain-MB/s")
}
