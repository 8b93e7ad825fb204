package dag

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// backend is a datastore a store test runs on.
type backend struct {
	name string
	// open returns a fresh datastore to Open the store on, and the faults
	// that openWithFaults injects into its commits.
	open func(t *testing.T) (ds.Batching, *faults)
}

func tempPebble(t *testing.T) *pebbleds.Datastore {
	t.Helper()
	d, err := pebbleds.NewDatastore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

var backends = []backend{
	{"map", func(t *testing.T) (ds.Batching, *faults) {
		f := &faults{}
		return &failingDS{Batching: dssync.MutexWrap(ds.NewMapDatastore()), faults: f}, f
	}},
	// go-datastore path over pebble (failingDS hides the pebble type).
	{"pebble-ds", func(t *testing.T) (ds.Batching, *faults) {
		f := &faults{}
		return &failingDS{Batching: namespace.Wrap(tempPebble(t), ds.NewKey("/dag")), faults: f}, f
	}},
	// fast path, detected under a namespace as node opens it.
	{"pebble-fast", func(t *testing.T) (ds.Batching, *faults) {
		return namespace.Wrap(tempPebble(t), ds.NewKey("/dag")), &faults{}
	}},
}

func forBackends(t *testing.T, fn func(t *testing.T, be backend)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { fn(t, be) })
	}
}

// openWithFaults opens a store on d and, on the fast path, routes its
// commits through f (the other paths get f from failingDS).
func openWithFaults(d ds.Batching, f *faults, opts Options) (*Store, error) {
	s, err := Open(context.Background(), d, opts)
	if err != nil {
		return nil, err
	}
	if p, ok := s.kv.(*pebbleKV); ok && f != nil {
		p.commitHook = f.hook
	}
	return s, nil
}

func (be backend) openStore(t *testing.T, opts Options) (*Store, error) {
	d, f := be.open(t)
	return openWithFaults(d, f, opts)
}

func (be backend) store(t *testing.T) (*Store, ds.Batching) {
	t.Helper()
	d, f := be.open(t)
	s, err := openWithFaults(d, f, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return s, d
}

// TestPebbleFastPathInterop: the fast path is detected for a bare and a
// namespaced go-ds-pebble datastore, and writes exactly the keys the
// go-datastore path writes, so either path reads what the other wrote.
func TestPebbleFastPathInterop(t *testing.T) {
	ctx := context.Background()
	p := tempPebble(t)
	if s, _ := Open(ctx, p, DefaultOptions()); s == nil {
		t.Fatal("open")
	} else if k, ok := s.kv.(*pebbleKV); !ok || len(k.prefix) != 0 {
		t.Fatalf("bare go-ds-pebble: fast path not detected: %T", s.kv)
	}
	nsd := namespace.Wrap(p, ds.NewKey("/dag"))
	fast, _ := Open(ctx, nsd, DefaultOptions())
	if k, ok := fast.kv.(*pebbleKV); !ok || string(k.prefix) != "/dag" {
		t.Fatalf("namespaced go-ds-pebble: fast path not detected: %T", fast.kv)
	}
	slow, _ := Open(ctx, &failingDS{Batching: nsd, faults: &faults{}}, DefaultOptions())

	cb := newChainBuilder(t)
	all := []Block{cb.block(testSigner(1), nil, "r")}
	for i := range 1100 { // two height buckets
		all = append(all, cb.block(testSigner(byte(1+i%3)), refs(all[len(all)-1]), "m"))
	}
	mustAdd(t, fast, testDAG, all[:600]...)
	mustAdd(t, slow, testDAG, all[600:]...) // must see the fast path's heads
	// Stores number DAGs in memory: one store per datastore at a time.
	explicit, err := OpenPebble(ctx, p.DB, "dag", DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, explicit, "other", cb.block(testSigner(9), nil, "x"))

	// Every key the fast path wrote is visible through go-datastore.
	for _, s := range []*Store{fast, slow, explicit} {
		s2, err := Open(ctx, &failingDS{Batching: nsd, faults: &faults{}}, DefaultOptions())
		if s == fast {
			s2, err = Open(ctx, nsd, DefaultOptions())
		} else if s == explicit {
			s2, err = OpenPebble(ctx, p.DB, "/dag", DefaultOptions())
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := allCIDs(t, s2, testDAG); !slices.Equal(got, cids(all)) {
			t.Fatalf("reopened store sees %d of %d blocks", len(got), len(all))
		}
		if h := headCIDs(t, s2, testDAG); !slices.Equal(h, []cid.Cid{all[len(all)-1].CID}) {
			t.Fatalf("heads %v", h)
		}
		if c, _ := s2.Count(ctx, "other"); c != 1 {
			t.Fatalf("other dag count %d", c)
		}
		if ok, err := s2.Has(ctx, testDAG, all[3].CID); !ok || err != nil {
			t.Fatalf("has: %v %v", ok, err)
		}
		missing, err := s2.Missing(ctx, testDAG, nil, nil)
		if err != nil || len(missing) != len(all) {
			t.Fatalf("missing %d %v", len(missing), err)
		}
	}
	// Nothing outside the namespace.
	res, err := p.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for r := range res.Next() {
		if !strings.HasPrefix(r.Key, "/dag/") {
			t.Fatalf("key outside the namespace: %q", r.Key)
		}
	}
}

func TestPack7MatchesBitwise(t *testing.T) {
	ref := func(src []byte) []byte {
		var out []byte
		var bits []byte
		for _, b := range src {
			for i := 7; i >= 0; i-- {
				bits = append(bits, b>>i&1)
			}
		}
		for len(bits)%7 != 0 {
			bits = append(bits, 0)
		}
		for i := 0; i < len(bits); i += 7 {
			v := byte(0x80)
			for j := range 7 {
				v |= bits[i+j] << (6 - j)
			}
			out = append(out, v)
		}
		return out
	}
	for n := range 60 {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i*151 + n*7 + 3)
		}
		want := ref(src)
		if got := pack7(nil, src); !bytes.Equal(got, want) {
			t.Fatalf("n=%d: %x want %x", n, got, want)
		}
		if got := pack7([]byte("x"), string(src)); !bytes.Equal(got[1:], want) {
			t.Fatalf("n=%d string: %x want %x", n, got, want)
		}
	}
}

func TestRecordLen(t *testing.T) {
	cb := newChainBuilder(t)
	a := cb.block(testSigner(1), nil, "a")
	b := cb.block(testSigner(1), refs(a), strings.Repeat("b", 300))
	for _, blk := range []Block{a, b} {
		for _, ph := range []uint64{0, 1, 200, 1 << 40} {
			rec := appendRecord(nil, &blk.Inner, ph, blk.envBytes, blk.innerBytes, recordVersion)
			if n := recordLen(&blk.Inner, ph, blk.envBytes, blk.innerBytes); n != len(rec) {
				t.Fatalf("recordLen %d, record has %d bytes", n, len(rec))
			}
		}
	}
}

// TestPebbleFastPathWALDisabled: over a go-ds-pebble datastore without a
// WAL, Append syncs as the datastore does (a no-op) instead of failing.
func TestPebbleFastPathWALDisabled(t *testing.T) {
	d, err := pebbleds.NewDatastore(t.TempDir(), pebbleds.WithPebbleOpts(&pebble.Options{DisableWAL: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	s, err := Open(ctx, namespace.Wrap(d, ds.NewKey("/dag")), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.kv.(*pebbleKV); !ok {
		t.Fatal("fast path not detected")
	}
	au := Author{Signer: testSigner(1), Sealer: newTestCipher(1)}
	if _, err := s.Append(ctx, testDAG, au, []byte("x"), testEpoch); err != nil {
		t.Fatal(err)
	}
}
