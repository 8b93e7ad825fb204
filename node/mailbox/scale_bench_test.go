package mailbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkRelayScale fills a relay with many mailboxes of many sealed
// items (552 bytes: a 500-byte envelope sealed and padded, the common size
// of a text message) and reports what holding them costs: bytes on disk
// per message beyond the item itself, the process's peak RSS (relay and
// the depositing client share the process) and the Go heap in use with
// everything stored, and the time to drain and ack one full mailbox.
// Full size: 100 mailboxes of 10,000 (issue 13's goal: RSS < 200 MB);
// -short: 5 of 1,000.
func BenchmarkRelayScale(b *testing.B) {
	boxes, per := 100, 10_000
	if testing.Short() {
		boxes, per = 5, 1000
	}
	const size = 552
	ctx := context.Background()
	for b.Loop() {
		clk := &clock{t: t0}
		relay := newRelay(b, clk, Options{PeerBytes: 1 << 40, AddrBytes: 1 << 40, PeerMailboxes: 1 << 20, AddrMailboxes: 1 << 20,
			RequestRate: 1e6, RequestBurst: 1e6, DrainRate: 1e12, DrainBurst: 1e12},
			Limits{MailboxEnvelopes: int64(per), MailboxDeposits: 1 << 40, MailboxBytes: 1 << 40, TotalBytes: 1 << 40, Mailboxes: 1 << 20})
		sender, owner := newClient(b, clk), newClient(b, clk)
		var owners []*OwnerKey
		start := time.Now()
		for i := range boxes {
			o := OwnerKeyFromSecret([SecretSize]byte{byte(i), byte(i >> 8), 0xbe})
			owners = append(owners, o)
			capa := capFor(b, contactKey(b, o), clk.Now())
			if res, err := sender.Deposit(ctx, relay.info(), capa, sealedItems(per, size)); err != nil || res.Stored != per {
				b.Fatalf("deposit %d: %+v %v", i, res, err)
			}
		}
		fill := time.Since(start)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		total := int64(boxes * per)
		disk := dirSize(b, relay.dir)
		b.ReportMetric(float64(disk-total*size)/float64(total), "disk-overhead-B/msg")
		b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-RSS-MB")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
		b.ReportMetric(float64(total)/fill.Seconds(), "deposited/s")

		start = time.Now()
		keys := owners[0].DrainKeys([]Period{PeriodOf(clk.Now())})
		got := 0
		for {
			d, err := owner.Drain(ctx, relay.info(), keys, DrainOptions{}, func(Item) error { got++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			if !d.More {
				break
			}
		}
		if got != per {
			b.Fatalf("drained %d of %d", got, per)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "drain-one-mailbox-ms")
	}
}

// sealedItems are random, like sealed items: nothing for pebble to compress.
func sealedItems(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		rand.Read(out[i])
	}
	return out
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// peakRSS is the process's high-water resident set (Linux), in bytes.
func peakRSS(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Skip("no /proc: peak RSS unknown")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
