package dag

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

var benchBlocks = flag.Int("dag.benchblocks", 100_000, "blocks in store benchmarks (1,000 under -short)")

func benchN() int {
	if testing.Short() {
		return 1000
	}
	return *benchBlocks
}

// benchChain builds n ~300-byte blocks: a chain with three authors.
func benchChain(b *testing.B, n int) []Block {
	cb := newChainBuilder(b)
	body := make([]byte, 150)
	out := make([]Block, 0, n)
	prev := cb.block(testSigner(1), nil, string(body))
	out = append(out, prev)
	for i := 1; i < n; i++ {
		prev = cb.block(testSigner(byte(1+i%3)), refs(prev), string(body))
		out = append(out, prev)
	}
	return out
}

// BenchmarkDecodeBlock: envelope decode + CID + inner decode of a ~300-byte
// block (decryption excluded: that is keyring's cost).
func BenchmarkDecodeBlock(b *testing.B) {
	blk := benchChain(b, 2)[1]
	env, inner := blk.envBytes, blk.innerBytes
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEnvelope(env); err != nil {
			b.Fatal(err)
		}
		_ = EnvelopeCID(env)
		if _, err := DecodeInner(inner); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	blk := benchChain(b, 2)[1]
	for b.Loop() {
		if err := VerifySignature(blk.Inner); err != nil {
			b.Fatal(err)
		}
	}
}

func openPebble(b *testing.B) *pebbleds.Datastore {
	d, err := pebbleds.NewDatastore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	return d
}

// BenchmarkStoreCommitPebble commits n blocks in batches of 5,000 into a
// fresh pebble store opened as the node opens it (one op = the whole n),
// with pebble's default options.
func BenchmarkStoreCommitPebble(b *testing.B) { benchCommitPebble(b) }

// BenchmarkStoreCommitPebbleMemtable32 is BenchmarkStoreCommitPebble with
// 32 MiB memtables: a 5,000-block batch fits in the memtable, but 100,000
// blocks need three flushes, and writes stall while one runs.
func BenchmarkStoreCommitPebbleMemtable32(b *testing.B) {
	benchCommitPebble(b, pebbleds.WithPebbleOpts(&pebble.Options{MemTableSize: 32 << 20}))
}

// BenchmarkStoreCommitPebbleMemtable64 is BenchmarkStoreCommitPebble with
// PebbleOptions (64 MiB memtables). With the default 4 MiB memtable, a
// 5,000-block batch (about 5 MB) exceeds pebble's large-batch threshold
// (half the memtable), which makes every batch its own L0 flush, and the
// random CID index keys in every flushed table make them overlap, so most
// of the data is compacted again while the commits run. With 64 MiB the
// batches land in the memtable and 100,000 blocks need one flush.
func BenchmarkStoreCommitPebbleMemtable64(b *testing.B) {
	benchCommitPebble(b, pebbleds.WithPebbleOpts(PebbleOptions()))
}

func benchCommitPebble(b *testing.B, opts ...pebbleds.Option) {
	n := benchN()
	blocks := benchChain(b, n)
	ctx := context.Background()
	b.ReportAllocs()
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		d, err := pebbleds.NewDatastore(b.TempDir(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		s, err := Open(ctx, namespace.Wrap(d, ds.NewKey("/dag")), DefaultOptions())
		if err != nil {
			b.Fatal(err)
		}
		c0 := processCPU()
		b.StartTimer()
		for i := 0; i < n; i += 5000 {
			res, err := s.AddBatch(ctx, testDAG, "p", blocks[i:min(i+5000, n)])
			if err != nil || len(res.Committed) != min(5000, n-i) {
				b.Fatalf("commit: %v %d", err, len(res.Committed))
			}
		}
		// The previous iteration's background compactions must not run
		// into the next one.
		b.StopTimer()
		cpu += processCPU() - c0
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "blocks/op")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkMissingPebble streams every block of an n-block store to an
// empty peer, and the newest 1% to a peer that is slightly behind.
func BenchmarkMissingPebble(b *testing.B) {
	n := benchN()
	blocks := benchChain(b, n)
	ctx := context.Background()
	s, err := Open(ctx, openPebble(b), DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 5000 {
		if _, err := s.AddBatch(ctx, testDAG, "p", blocks[i:min(i+5000, n)]); err != nil {
			b.Fatal(err)
		}
	}
	behind := map[DeviceID]uint64{}
	for _, blk := range blocks[:n-n/100] {
		behind[blk.Inner.Author] = blk.Inner.Seq
	}
	for _, tc := range []struct {
		name string
		vec  map[DeviceID]uint64
		want int
	}{{"all", nil, n}, {"newest1pct", behind, n / 100}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				got := 0
				err := s.MissingFunc(ctx, testDAG, nil, tc.vec, func(_ cid.Cid, _ []byte) error { got++; return nil })
				if err != nil || got != tc.want {
					b.Fatalf("missing %d want %d: %v", got, tc.want, err)
				}
			}
		})
	}
}

// BenchmarkReopen loads a DAG's heads and vector after reopening.
func BenchmarkReopen(b *testing.B) {
	n := benchN()
	blocks := benchChain(b, n)
	ctx := context.Background()
	d := openPebble(b)
	s, _ := Open(ctx, d, DefaultOptions())
	for i := 0; i < n; i += 5000 {
		if _, err := s.AddBatch(ctx, testDAG, "p", blocks[i:min(i+5000, n)]); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		s2, err := Open(ctx, d, DefaultOptions())
		if err != nil {
			b.Fatal(err)
		}
		if c, err := s2.Count(ctx, testDAG); err != nil || c != uint64(n) {
			b.Fatal(c, err)
		}
	}
}
