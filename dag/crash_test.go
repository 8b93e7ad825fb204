package dag

import (
	"context"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// TestAppendDurableAcrossCrash simulates a power loss with pebble's
// crashable in-memory filesystem: whatever was not synced is gone. A block
// returned by Append (and so possibly published) survives with its past,
// the device's next block continues its chain instead of reusing the
// sequence number, and peer blocks committed after it without a sync are
// lost without leaving the store inconsistent. The last point also proves
// that the simulation drops unsynced writes, so the first is not vacuous.
func TestAppendDurableAcrossCrash(t *testing.T) {
	type opened struct {
		s     *Store
		close func()
	}
	// Each way the node may reach pebble: the fast path over go-ds-pebble
	// under a namespace (the node), OpenPebble, and the go-datastore path.
	for _, tc := range []struct {
		name string
		open func(t *testing.T, fs vfs.FS) opened
	}{
		{"pebble-fast", func(t *testing.T, fs vfs.FS) opened {
			d, err := pebbleds.NewDatastore("db", pebbleds.WithPebbleOpts(&pebble.Options{FS: fs}))
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), namespace.Wrap(d, ds.NewKey("/dag")), DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.kv.(*pebbleKV); !ok {
				t.Fatal("fast path not taken")
			}
			return opened{s, func() { _ = d.Close() }}
		}},
		{"open-pebble", func(t *testing.T, fs vfs.FS) opened {
			db, err := pebble.Open("db", &pebble.Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			s, err := OpenPebble(context.Background(), db, "dag", DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			return opened{s, func() { _ = db.Close() }}
		}},
		{"pebble-ds", func(t *testing.T, fs vfs.FS) opened {
			d, err := pebbleds.NewDatastore("db", pebbleds.WithPebbleOpts(&pebble.Options{FS: fs}))
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), &failingDS{Batching: d, faults: &faults{}}, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			return opened{s, func() { _ = d.Close() }}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fs := vfs.NewCrashableMem()
			o := tc.open(t, fs)
			cb := newChainBuilder(t)
			root := cb.block(testSigner(1), nil, "root")
			peer := cb.block(testSigner(2), refs(root), "peer")
			mustAdd(t, o.s, testDAG, root, peer) // not synced by itself
			au := Author{Signer: testSigner(3), Sealer: cb.cipher}
			own, err := o.s.Append(ctx, testDAG, au, []byte("own"), testEpoch)
			if err != nil {
				t.Fatal(err)
			}
			late := cb.block(testSigner(2), refs(own), "after the last sync")
			mustAdd(t, o.s, testDAG, late)

			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
			o.close()
			r := tc.open(t, crashed)
			defer r.close()
			if has, err := r.s.Has(ctx, testDAG, late.CID); err != nil || has {
				t.Fatalf("unsynced block survived the simulated crash (has=%v, %v): the test proves nothing", has, err)
			}
			for _, b := range []Block{root, peer, own} {
				got, err := r.s.Get(ctx, testDAG, b.CID)
				if err != nil || got.CID != b.CID {
					t.Fatalf("block %q lost in the crash after Append returned: %v", b.Inner.Body, err)
				}
			}
			if h := headCIDs(t, r.s, testDAG); !slices.Equal(h, []cid.Cid{own.CID}) {
				t.Fatalf("heads after the crash %v, want the own block", h)
			}
			if c, _ := r.s.Count(ctx, testDAG); c != 3 {
				t.Fatalf("count %d after the crash, want 3", c)
			}
			next, err := r.s.Append(ctx, testDAG, au, []byte("next"), testEpoch)
			if err != nil {
				t.Fatal(err)
			}
			if next.Inner.Seq != own.Inner.Seq+1 || next.Inner.Prev != own.CID {
				t.Fatalf("after the crash the device wrote seq %d prev %s, want %d after %s",
					next.Inner.Seq, next.Inner.Prev, own.Inner.Seq+1, own.CID)
			}
			// The lost block comes back with the next sync and commits.
			if res := mustAdd(t, r.s, testDAG, late); len(res.Committed) != 1 {
				t.Fatalf("lost block not committable again: %+v", res)
			}
		})
	}
}
