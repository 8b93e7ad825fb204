package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	"pgregory.net/rapid"
)

// reconRun is the outcome of an in-memory exchange between two sides.
type reconRun struct {
	a, b     *Reconciler
	messages int
	bytes    int
}

// runRecon reconciles a (initiator) with b, passing every message through
// the wire encoding.
func runRecon(t tb, a, b *ReconSet, cfg ReconConfig) reconRun {
	t.Helper()
	ra, rb := NewReconciler(a, cfg), NewReconciler(b, cfg)
	run := reconRun{a: ra, b: rb}
	msg := ra.Initiate()
	sides := [2]*Reconciler{rb, ra}
	for turn := 0; ; turn++ {
		wire := EncodeReconMessage(msg)
		if len(wire) > ReconMaxMessage {
			t.Fatalf("message %d of %d bytes", run.messages+1, len(wire))
		}
		run.messages++
		run.bytes += len(wire)
		in, err := DecodeReconMessage(wire)
		if err != nil {
			t.Fatalf("message %d does not decode: %v", run.messages, err)
		}
		out, reply, err := sides[turn%2].Receive(in)
		if err != nil {
			t.Fatalf("message %d: %v", run.messages, err)
		}
		if !reply {
			return run
		}
		msg = out
		if !msg.NeedsReply() {
			// The last message still travels: it may carry Have/Want.
			wire := EncodeReconMessage(msg)
			run.messages++
			run.bytes += len(wire)
			in, err := DecodeReconMessage(wire)
			if err != nil {
				t.Fatal(err)
			}
			if _, reply, err := sides[(turn+1)%2].Receive(in); err != nil || reply {
				t.Fatalf("final message: reply %v, %v", reply, err)
			}
			return run
		}
	}
}

// ids returns the ids of the items at idx.
func setIDs(s *ReconSet, idx []int) []string {
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, string(s.Item(i).ID))
	}
	slices.Sort(out)
	return out
}

// minus returns the sorted ids of x not in y.
func minus(x, y []ReconItem) []string {
	in := map[string]bool{}
	for _, it := range y {
		in[string(it.ID)] = true
	}
	var out []string
	for _, it := range x {
		if !in[string(it.ID)] {
			out = append(out, string(it.ID))
		}
	}
	slices.Sort(out)
	return out
}

func randItems(r *rand.Rand, n int, maxHeight uint64) []ReconItem {
	out := make([]ReconItem, n)
	for i := range out {
		id := make([]byte, cidLen)
		for k := range id {
			id[k] = byte(r.Uint32())
		}
		out[i] = ReconItem{Height: 1 + r.Uint64N(maxHeight), ID: id}
	}
	return out
}

// messageBound is the number of messages an exchange over n items may
// take when its messages never fill up: one per level of the bucket tree,
// plus the opening fingerprint and the id-list answers. Random ids do not
// split evenly: a random trie is deeper than log(n/threshold) by a few
// levels (one seed in a few hundred needed one more message than the even
// split gives), hence half as many levels again.
func messageBound(n int, cfg ReconConfig) int {
	cfg.defaults()
	levels := 0
	for m := float64(n) / float64(cfg.IDListThreshold); m > 1; m /= float64(cfg.Buckets) {
		levels++
	}
	return levels + levels/2 + 5
}

func TestReconcileConvergesToSymmetricDifference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		r := rand.New(rand.NewPCG(seed, 1))
		n := rapid.IntRange(0, 3000).Draw(t, "n")
		// Few heights make many items share one, so bounds need prefixes.
		maxHeight := rapid.SampledFrom([]uint64{1, 3, 100, 1 << 40}).Draw(t, "maxHeight")
		pa := rapid.Float64Range(0, 1).Draw(t, "pa")
		pb := rapid.Float64Range(0, 1).Draw(t, "pb")
		cfg := ReconConfig{Buckets: rapid.IntRange(2, 16).Draw(t, "buckets")}
		var a, b []ReconItem
		for _, it := range randItems(r, n, maxHeight) {
			inA, inB := r.Float64() < pa, r.Float64() < pb
			if inA {
				a = append(a, it)
			}
			if inB {
				b = append(b, it)
			}
		}
		sa, sb := NewReconSet(a), NewReconSet(b)
		run := runRecon(t, sa, sb, cfg)
		if got, want := setIDs(sa, run.a.Sending()), minus(a, b); !slices.Equal(got, want) {
			t.Fatalf("initiator ships %d items, want %d", len(got), len(want))
		}
		if got, want := setIDs(sb, run.b.Sending()), minus(b, a); !slices.Equal(got, want) {
			t.Fatalf("responder ships %d items, want %d", len(got), len(want))
		}
		if got, want := run.a.Expected(), uint64(len(minus(b, a))); got != want {
			t.Fatalf("initiator expects %d, responder ships %d", got, want)
		}
		if got, want := run.b.Expected(), uint64(len(minus(a, b))); got != want {
			t.Fatalf("responder expects %d, initiator ships %d", got, want)
		}
		if bound := messageBound(max(len(a), len(b)), cfg); run.messages > bound {
			t.Fatalf("%d messages for %d items, bound %d", run.messages, max(len(a), len(b)), bound)
		}
		if run.a.Incomplete() || run.b.Incomplete() {
			t.Fatal("incomplete")
		}
	})
}

// TestReconcileRounds measures messages and bytes for typical shapes at
// growing sizes: rounds grow with log16(n), bytes with the difference.
func TestReconcileRounds(t *testing.T) {
	sizes := []int{1_000, 10_000, 100_000}
	if testing.Short() {
		sizes = sizes[:2]
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range sizes {
		for _, diff := range []float64{0, 0.001, 0.01, 0.5} {
			items := randItems(r, n, uint64(n/4+1))
			var a, b []ReconItem
			for _, it := range items {
				switch x := r.Float64(); {
				case x < diff/2:
					a = append(a, it)
				case x < diff:
					b = append(b, it)
				default:
					a, b = append(a, it), append(b, it)
				}
			}
			run := runRecon(t, NewReconSet(a), NewReconSet(b), ReconConfig{})
			da, db := len(minus(a, b)), len(minus(b, a))
			if len(run.a.Sending()) != da || len(run.b.Sending()) != db {
				t.Fatalf("n=%d diff=%g: ships %d/%d, want %d/%d", n, diff, len(run.a.Sending()), len(run.b.Sending()), da, db)
			}
			t.Logf("n=%d diff=%.1f%% (%d+%d): %d messages (%d round trips), %d bytes, %.1f bytes/differing item",
				n, 100*diff, da, db, run.messages, (run.messages+1)/2, run.bytes, float64(run.bytes)/math.Max(1, float64(da+db)))
			if diff <= 0.01 && run.messages > messageBound(n, ReconConfig{}) {
				t.Errorf("n=%d diff=%g: %d messages", n, diff, run.messages)
			}
		}
	}
}

func TestReconcileSmallMessagesDefer(t *testing.T) {
	// A tight size cap makes replies carry part of the difference and
	// defer the rest as one fingerprint: still converges, in more rounds.
	// A cap too tight for the difference ends at the message cap with a
	// correct part of it, marked incomplete.
	r := rand.New(rand.NewPCG(3, 4))
	items := randItems(r, 5000, 1000)
	a, b := items[:3000], items[2000:]
	for _, tc := range []struct {
		limit    int
		complete bool
	}{{32 << 10, true}, {4 << 10, false}} {
		run := runRecon(t, NewReconSet(a), NewReconSet(b), ReconConfig{MaxMessage: tc.limit})
		sa, sb := setIDs(run.a.set, run.a.Sending()), setIDs(run.b.set, run.b.Sending())
		incomplete := run.a.Incomplete() || run.b.Incomplete()
		t.Logf("%d KiB messages: %d messages, %d bytes, shipping %d/%d, incomplete %v", tc.limit>>10, run.messages, run.bytes, len(sa), len(sb), incomplete)
		if tc.complete {
			if len(sa) != 2000 || len(sb) != 2000 || incomplete {
				t.Fatalf("%d KiB: ships %d/%d, want 2000/2000", tc.limit>>10, len(sa), len(sb))
			}
			continue
		}
		if !incomplete || run.messages > ReconMaxMessages {
			t.Fatalf("%d KiB: incomplete %v after %d messages", tc.limit>>10, incomplete, run.messages)
		}
		wa, wb := minus(a, b), minus(b, a)
		for _, id := range sa {
			if _, ok := slices.BinarySearch(wa, id); !ok {
				t.Fatal("initiator ships an item the peer holds")
			}
		}
		for _, id := range sb {
			if _, ok := slices.BinarySearch(wb, id); !ok {
				t.Fatal("responder ships an item the peer holds")
			}
		}
	}
}

func TestReconcileMessageCap(t *testing.T) {
	// A peer that answers every message with a mismatching fingerprint is
	// refused once the cap is reached; an honest side never needs a
	// reply past it.
	set := NewReconSet(randItems(rand.New(rand.NewPCG(5, 6)), 100, 10))
	r := NewReconciler(set, ReconConfig{})
	r.Initiate()
	hostile := ReconMessage{Ranges: []ReconRange{{Upper: ReconBound{Inf: true}, Mode: ReconFingerprint}}}
	for i := 0; ; i++ {
		out, reply, err := r.Receive(hostile)
		if err != nil {
			if !errors.Is(err, ErrReconProtocol) {
				t.Fatalf("error %v, want ErrReconProtocol", err)
			}
			if r.Messages() > ReconMaxMessages {
				t.Fatalf("refused after %d messages", r.Messages())
			}
			return
		}
		if !reply {
			t.Fatal("no reply to a fingerprint")
		}
		if r.Messages() >= ReconMaxMessages && out.NeedsReply() {
			t.Fatalf("message %d needs a reply", r.Messages())
		}
		if i > ReconMaxMessages {
			t.Fatal("never refused")
		}
	}
}

func TestReconcileRejects(t *testing.T) {
	set := NewReconSet(randItems(rand.New(rand.NewPCG(7, 8)), 10, 10))
	cases := map[string]ReconMessage{
		"bounds out of order": {Ranges: []ReconRange{{Upper: ReconBound{Height: 5}, Mode: ReconFingerprint}, {Upper: ReconBound{Height: 5}, Mode: ReconFingerprint}}},
		"unknown mode":        {Ranges: []ReconRange{{Upper: ReconBound{Inf: true}, Mode: 7}}},
		"huge id list":        {Ranges: []ReconRange{{Upper: ReconBound{Inf: true}, Mode: ReconIDList, IDs: make([][]byte, ReconMaxIDList+1)}}},
	}
	for name, m := range cases {
		r := NewReconciler(set, ReconConfig{})
		if _, _, err := r.Receive(m); !errors.Is(err, ErrReconProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
	wire := map[string][]byte{
		"empty":          {},
		"truncated":      {1, 0},
		"trailing":       {0, 0, 0, 9},
		"long list":      {0xff, 0xff, 0x03},
		"id too long":    append([]byte{0, 1, 65}, make([]byte, 65)...),
		"empty id":       {0, 1, 0, 0},
		"inf not last":   {2, 0, 0, 0, 1, 0, 0, 0, 0},
		"height wraps":   {2, 3, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0},
		"bad mode":       {1, 0, 0, 3, 0, 0},
		"short finger":   {1, 0, 0, 1, 1, 2, 3},
		"oversized":      make([]byte, ReconMaxMessage+1),
		"varint overrun": {0x80},
	}
	for name, b := range wire {
		if _, err := DecodeReconMessage(b); !errors.Is(err, ErrReconProtocol) {
			t.Errorf("%s: %v, want ErrReconProtocol", name, err)
		}
	}
}

func TestReconMessageRoundTrip(t *testing.T) {
	m := ReconMessage{
		Ranges: []ReconRange{
			{Upper: ReconBound{Height: 3}, Mode: ReconSkip},
			{Upper: ReconBound{Height: 3, Prefix: []byte{1, 2}}, Mode: ReconFingerprint, Fingerprint: [16]byte{9}},
			{Upper: ReconBound{Height: 1 << 50}, Mode: ReconIDList, IDs: [][]byte{{1}, bytes.Repeat([]byte{2}, 64)}},
			{Upper: ReconBound{Inf: true}, Mode: ReconIDList},
		},
		Have: [][]byte{{5}},
		Want: [][]byte{{6, 7}},
	}
	got, err := DecodeReconMessage(EncodeReconMessage(m))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
}

func TestReconSetFingerprint(t *testing.T) {
	// The fingerprint of a range depends on its items only, not on how
	// the set around it was built.
	items := randItems(rand.New(rand.NewPCG(9, 10)), 200, 20)
	whole := NewReconSet(items)
	part := NewReconSet(whole.items(50, 120))
	if whole.Fingerprint(50, 120) != part.Fingerprint(0, part.Len()) {
		t.Fatal("fingerprint depends on the surrounding set")
	}
	if whole.Fingerprint(50, 120) == whole.Fingerprint(50, 121) {
		t.Fatal("fingerprint ignores an item")
	}
	// Duplicates and bad ids are dropped.
	dup := NewReconSet(append(slices.Clone(items[:3]), items[0], ReconItem{Height: 1}))
	if dup.Len() != 3 {
		t.Fatalf("len %d, want 3", dup.Len())
	}
}

func (s *ReconSet) items(i, j int) []ReconItem {
	var out []ReconItem
	for k := i; k < j; k++ {
		out = append(out, s.Item(k))
	}
	return out
}

func TestStoreReconSet(t *testing.T) {
	ctx := context.Background()
	s, _ := newMapStore(t)
	cb := newChainBuilder(t)
	var blocks []Block
	var heads []Block
	for i := range 300 {
		parents := heads
		if len(parents) > 2 {
			parents = parents[len(parents)-2:]
		}
		b := cb.block(testSigner(byte(1+i%4)), refs(parents...), "x")
		blocks = append(blocks, b)
		heads = append(heads, b)
	}
	mustAdd(t, s, testDAG, blocks[:200]...)
	set, err := s.ReconSet(ctx, testDAG)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 200 {
		t.Fatalf("len %d, want 200", set.Len())
	}
	var want []ReconItem
	for _, b := range blocks[:200] {
		want = append(want, ReconItem{Height: b.Inner.Height, ID: b.CID.Bytes()})
	}
	if ref := NewReconSet(want); ref.Fingerprint(0, ref.Len()) != set.Fingerprint(0, set.Len()) || !reflect.DeepEqual(ref.items(0, 200), set.items(0, 200)) {
		t.Fatal("store set differs from the blocks")
	}
	if again, _ := s.ReconSet(ctx, testDAG); again != set {
		t.Fatal("unchanged DAG: set rebuilt")
	}
	mustAdd(t, s, testDAG, blocks[200:]...)
	if set, _ = s.ReconSet(ctx, testDAG); set.Len() != 300 {
		t.Fatalf("after commit: len %d, want 300", set.Len())
	}
	// EnvelopesAt streams envelopes in the given order, skipping unknowns.
	items := []ReconItem{set.Item(0), {Height: 1, ID: bytes.Repeat([]byte{1}, cidLen)}, set.Item(299)}
	var got [][]byte
	if err := s.EnvelopesAt(ctx, testDAG, items, func(env []byte) error { got = append(got, bytes.Clone(env)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d envelopes, want 2", len(got))
	}
	for k, i := range []int{0, 299} {
		b, err := s.Get(ctx, testDAG, mustCast(t, set.Item(i).ID))
		if err != nil {
			t.Fatal(err)
		}
		env, _ := b.EnvelopeBytes()
		if !bytes.Equal(env, got[k]) {
			t.Fatalf("envelope %d differs", k)
		}
	}
	if empty, err := s.ReconSet(ctx, "unknown"); err != nil || empty.Len() != 0 {
		t.Fatalf("unknown dag: %v %v", empty.Len(), err)
	}
}

func FuzzDecodeReconMessage(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	a, b := NewReconSet(randItems(r, 300, 30)), NewReconSet(randItems(r, 300, 30))
	ra := NewReconciler(a, ReconConfig{})
	m := ra.Initiate()
	f.Add(EncodeReconMessage(m))
	if out, _, err := NewReconciler(b, ReconConfig{}).Receive(m); err == nil {
		f.Add(EncodeReconMessage(out))
	}
	f.Add([]byte{1, 0, 0, 2, 1, 1, 7, 1, 1, 9, 0})
	f.Fuzz(func(t *testing.T, wire []byte) {
		checkAlloc(t, "DecodeReconMessage", wire, func() { _, _ = DecodeReconMessage(wire) })
		m, err := DecodeReconMessage(wire)
		if err != nil {
			if !errors.Is(err, ErrReconProtocol) {
				t.Fatalf("error %v does not wrap ErrReconProtocol", err)
			}
			return
		}
		again, err := DecodeReconMessage(EncodeReconMessage(m))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoding changes the message: %v", err)
		}
		// Whatever a peer sends, a reconciler answers within bounds.
		out, _, err := NewReconciler(a, ReconConfig{}).Receive(m)
		if err != nil {
			return
		}
		if n := len(EncodeReconMessage(out)); n > ReconMaxMessage {
			t.Fatalf("reply of %d bytes", n)
		}
	})
}

func mustCast(t testing.TB, b []byte) cid.Cid {
	t.Helper()
	c, err := cid.Cast(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BenchmarkReconcile runs whole in-memory exchanges (both sides, wire
// encoding included) between two sets of n items (100k; 2k with -short)
// that differ by the given share, half on each side.
func BenchmarkReconcile(b *testing.B) {
	n := 100_000
	if testing.Short() {
		n = 2_000
	}
	r := rand.New(rand.NewPCG(13, 14))
	items := randItems(r, n, uint64(n/4))
	for _, diff := range []float64{0.001, 0.01, 0.1} {
		var a, bb []ReconItem
		for _, it := range items {
			switch x := r.Float64(); {
			case x < diff/2:
				a = append(a, it)
			case x < diff:
				bb = append(bb, it)
			default:
				a, bb = append(a, it), append(bb, it)
			}
		}
		sa, sb := NewReconSet(a), NewReconSet(bb)
		b.Run(fmt.Sprintf("n=%d/diff=%g%%", n, 100*diff), func(b *testing.B) {
			var run reconRun
			for b.Loop() {
				run = runRecon(b, sa, sb, ReconConfig{})
			}
			b.ReportMetric(float64(run.messages), "messages")
			b.ReportMetric(float64(run.bytes), "wire-bytes")
			b.ReportMetric(float64(len(run.a.Sending())+len(run.b.Sending())), "diff-items")
		})
	}
}

// BenchmarkReconSetPebble builds the reconciliation set of an n-block DAG
// (100k; 1k with -short) from a pebble store: what the first
// reconciliation after a commit costs. The set is cached until the next
// commit.
func BenchmarkReconSetPebble(b *testing.B) {
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
	var set *ReconSet
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			s.recon = reconCache{} // measure the build, not the cache
			if set, err = s.ReconSet(ctx, testDAG); err != nil || set.Len() != n {
				b.Fatalf("set of %d: %v", set.Len(), err)
			}
		}
		b.ReportMetric(float64(set.MemoryBytes())/float64(n), "set-bytes/block")
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ReconSet(ctx, testDAG); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fingerprint", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i = (i + 7919) % n
			_ = set.Fingerprint(i/2, i)
		}
	})
}
