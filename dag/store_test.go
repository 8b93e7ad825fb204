package dag

// The tests of the block store (store.go), one file over 800 lines: each
// property of the store (commit order and heads, staging and its quotas,
// forged heights and caps, equivocation, idempotent appends, reopening,
// paging, merge parents) on the same fixtures, most of them on both
// backends (forBackends).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

const testDAG DAGID = "conversation-1"

func headCIDs(t tb, s *Store, dag DAGID) []cid.Cid {
	t.Helper()
	h, err := s.Heads(context.Background(), dag)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]cid.Cid, len(h))
	for i, r := range h {
		out[i] = r.CID
	}
	return out
}

func allCIDs(t tb, s *Store, dag DAGID) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for b, err := range s.Blocks(context.Background(), dag, Position{}, false) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b.CID)
	}
	return out
}

func TestStoreCommitsInOrderAndTracksHeads(t *testing.T) {
	forBackends(t, testStoreCommitsInOrderAndTracksHeads)
}

func testStoreCommitsInOrderAndTracksHeads(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	a1 := cb.block(testSigner(1), nil, "a1")
	b1 := cb.block(testSigner(2), refs(a1), "b1")
	a2 := cb.block(testSigner(1), refs(a1), "a2")
	res := mustAdd(t, s, testDAG, b1, a2, a1)
	if len(res.Committed) != 3 || len(res.Staged) != 0 {
		t.Fatalf("committed %d staged %d", len(res.Committed), len(res.Staged))
	}
	if res.Committed[0].CID != a1.CID {
		t.Fatal("root not committed first")
	}
	want := []cid.Cid{b1.CID, a2.CID}
	slices.SortFunc(want, func(x, y cid.Cid) int { return ComparePositions(Position{2, x}, Position{2, y}) })
	if got := headCIDs(t, s, testDAG); !slices.Equal(got, want) {
		t.Fatalf("heads %v want %v", got, want)
	}
	v, _ := s.SeqVector(context.Background(), testDAG)
	if v[a1.Inner.Author] != 2 || v[b1.Inner.Author] != 1 || len(v) != 2 {
		t.Fatalf("vector %v", v)
	}
	// Duplicates are counted, not re-committed.
	res = mustAdd(t, s, testDAG, a1, b1)
	if res.Duplicates != 2 || len(res.Committed) != 0 {
		t.Fatalf("duplicates %d committed %d", res.Duplicates, len(res.Committed))
	}
	got, err := s.Get(context.Background(), testDAG, a2.CID)
	if err != nil || string(got.Inner.Body) != "a2" || got.Inner.Prev != a1.CID {
		t.Fatalf("get: %v %+v", err, got.Inner)
	}
	if _, err := s.Get(context.Background(), testDAG, cb.block(testSigner(3), nil, "x").CID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

func TestStoreStagesChildFirst(t *testing.T) { forBackends(t, testStoreStagesChildFirst) }

func testStoreStagesChildFirst(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	chain := []Block{cb.block(testSigner(1), nil, "0")}
	for i := range 5 {
		chain = append(chain, cb.block(testSigner(1+byte(i%2)), refs(chain[len(chain)-1]), "n"))
	}
	// Deliver newest first, one block per call, as gossip might.
	for i := len(chain) - 1; i >= 1; i-- {
		res, err := s.Add(context.Background(), testDAG, "p1", chain[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Staged) != 1 || len(res.Committed) != 0 {
			t.Fatalf("block %d: staged %d committed %d", i, len(res.Staged), len(res.Committed))
		}
	}
	if n, _ := s.Staged(testDAG); n != 5 {
		t.Fatalf("staged %d", n)
	}
	if c, _ := s.Count(context.Background(), testDAG); c != 0 {
		t.Fatalf("committed %d before the root arrived", c)
	}
	res := mustAdd(t, s, testDAG, chain[0])
	if !slices.Equal(cids(res.Committed), cids(chain)) {
		t.Fatalf("cascade committed %d blocks, not in topological order", len(res.Committed))
	}
	if n, _ := s.Staged(testDAG); n != 0 {
		t.Fatalf("staging not drained: %d", n)
	}
	if got := headCIDs(t, s, testDAG); !slices.Equal(got, []cid.Cid{chain[5].CID}) {
		t.Fatalf("heads %v", got)
	}
}

func TestStagingQuotaEvictsOldest(t *testing.T) { forBackends(t, testStagingQuotaEvictsOldest) }

func testStagingQuotaEvictsOldest(t *testing.T, be backend) {
	opts := DefaultOptions()
	opts.Staging.PerPeer = Quota{Blocks: 3, Bytes: 1 << 20}
	opts.Staging.PerDAG = Quota{Blocks: 5, Bytes: 1 << 20}
	s, err := be.openStore(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	cb := newChainBuilder(t)
	missing := cb.block(testSigner(9), nil, "never delivered")
	var orphans []Block
	for i := range 10 {
		orphans = append(orphans, cb.block(testSigner(byte(10+i)), refs(missing), "orphan"))
	}
	for i, o := range orphans[:6] {
		if _, err := s.Add(context.Background(), testDAG, "flooder", o); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Staged(testDAG); n != min(i+1, 3) {
			t.Fatalf("after %d: %d staged", i+1, n)
		}
	}
	// The flooder's three newest survive; the oldest were evicted.
	for i, o := range orphans[:6] {
		if got, want := s.IsStaged(testDAG, o.CID), i >= 3; got != want {
			t.Fatalf("orphan %d staged=%v", i, got)
		}
	}
	// Another peer fills the per-DAG quota (5): the DAG's oldest go first.
	for _, o := range orphans[6:9] {
		if _, err := s.Add(context.Background(), testDAG, "honest", o); err != nil {
			t.Fatal(err)
		}
	}
	if n, b := s.Staged(testDAG); n != 5 || b <= 0 {
		t.Fatalf("per-DAG quota: %d staged, %d bytes", n, b)
	}
	if s.IsStaged(testDAG, orphans[3].CID) {
		t.Fatal("oldest block of the DAG not evicted")
	}
	// A block larger than any quota allows is dropped, not staged.
	opts.Staging.PerPeer.Bytes = 600
	s2, _ := be.openStore(t, opts)
	res, _ := s2.Add(context.Background(), testDAG, "x", orphans[9])
	if len(res.Dropped) != 1 {
		t.Fatalf("oversized orphan not dropped: %+v", res)
	}
}

func TestStoreRejectsForgedHeightAndCaps(t *testing.T) {
	forBackends(t, testStoreRejectsForgedHeightAndCaps)
}

func testStoreRejectsForgedHeightAndCaps(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	root := cb.block(testSigner(1), nil, "root")
	mustAdd(t, s, testDAG, root)
	forge := func(mut func(*Inner)) Block {
		b := cb.block(testSigner(2), refs(root), "x")
		mut(&b.Inner)
		msg, err := SigningMessage(b.Inner)
		if err != nil {
			t.Fatal(err)
		}
		b.Inner.Sig, _ = testSigner(2).Sign(msg)
		inner, err := EncodeInner(b.Inner)
		if err != nil {
			t.Fatal(err)
		}
		sealed, _ := cb.cipher.Seal(inner)
		b.Envelope = Envelope{Version: 1, Epoch: sealed.Epoch, Nonce: sealed.Nonce, Ciphertext: sealed.Ciphertext}
		env, _ := EncodeEnvelope(b.Envelope)
		ob, err := OpenBlock(env, cb.cipher)
		if err != nil {
			t.Fatal(err)
		}
		delete(cb.chains, b.Inner.Author)
		return ob
	}
	for _, tc := range []struct {
		name string
		mut  func(*Inner)
		want error
	}{
		{"height too high", func(in *Inner) { in.Height = 1 << 62 }, ErrBadHeight},
		{"height too low", func(in *Inner) { in.Height = 1 }, ErrBadHeight},
		{"lamport forged", func(in *Inner) { in.Lamport = 99 }, ErrBadHeight},
		{"seq skips", func(in *Inner) { in.Seq, in.Prev = 3, root.CID }, ErrBadSeq},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Add(context.Background(), testDAG, "p", forge(tc.mut))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Rejected) != 1 || !errors.Is(res.Rejected[0].Err, tc.want) {
				t.Fatalf("got %+v, want %v", res, tc.want)
			}
		})
	}
	// Caps are enforced on blocks built outside the codec as well.
	big := cb.block(testSigner(3), refs(root), "x")
	big.Envelope.Ciphertext = make([]byte, MaxCiphertextSize+1)
	big.envBytes = nil
	many := cb.block(testSigner(4), refs(root), "x")
	for i := range 17 {
		many.Inner.Parents = append(many.Inner.Parents, cb.block(testSigner(byte(20+i)), nil, "p").CID)
	}
	many.innerBytes = nil
	res, err := s.AddBatch(context.Background(), testDAG, "p", []Block{big, many})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 2 || !errors.Is(res.Rejected[0].Err, ErrTooLarge) && !errors.Is(res.Rejected[1].Err, ErrTooLarge) {
		t.Fatalf("oversized: %+v", res.Rejected)
	}
	if !errors.Is(res.Rejected[0].Err, ErrTooManyParents) && !errors.Is(res.Rejected[1].Err, ErrTooManyParents) {
		t.Fatalf("too many parents: %+v", res.Rejected)
	}
	// A Block whose CID was not computed from its envelope is refused.
	wrong := cb.block(testSigner(5), refs(root), "x")
	wrong.CID = root.CID
	wrong.envBytes = nil
	res, _ = s.Add(context.Background(), testDAG, "p", wrong)
	if len(res.Rejected) != 1 || !errors.Is(res.Rejected[0].Err, ErrCIDMismatch) {
		t.Fatalf("cid mismatch: %+v", res)
	}
	if c, _ := s.Count(context.Background(), testDAG); c != 1 {
		t.Fatalf("count %d after rejections", c)
	}
}

func TestStoreEquivocation(t *testing.T) { forBackends(t, testStoreEquivocation) }

func testStoreEquivocation(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	a1 := cb.block(testSigner(1), nil, "a1")
	a2 := cb.block(testSigner(1), refs(a1), "a2")
	a3 := cb.block(testSigner(1), refs(a2), "a3")
	mustAdd(t, s, testDAG, a1, a2, a3)
	// A second block at seq 2 (same Prev, different body).
	fork := newChainBuilder(t)
	fork.cipher = cb.cipher
	fork.chains[a1.Inner.Author] = ChainState{Seq: 1, Last: refOf(a1)}
	a2x := fork.block(testSigner(1), refs(a1), "a2 conflicting")
	res, err := s.Add(context.Background(), testDAG, "p", a2x)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Equivocations) != 1 || len(res.Committed) != 0 {
		t.Fatalf("equivocation not reported: %+v", res)
	}
	eq := res.Equivocations[0]
	var asErr error = eq
	if !errors.Is(asErr, ErrEquivocation) || eq.Existing != a2.CID || eq.Conflicting != a2x.CID || eq.Seq != 2 {
		t.Fatalf("evidence %+v", eq)
	}
	recs, err := s.Equivocations(context.Background(), testDAG)
	if err != nil || len(recs) != 1 || recs[0].Existing != a2.CID || recs[0].Conflicting != a2x.CID || recs[0].Seq != 2 {
		t.Fatalf("recorded evidence %v %+v", err, recs)
	}
	if ob, err := OpenBlock(recs[0].ConflictEnv, cb.cipher); err != nil || ob.CID != a2x.CID {
		t.Fatalf("evidence envelope does not reopen: %v", err)
	}
	// Both conflicting blocks in one batch: the first in display order
	// commits, the other is evidence.
	s2, _ := be.store(t)
	res = mustAdd(t, s2, testDAG, a1, a2, a2x)
	if len(res.Committed) != 2 || len(res.Equivocations) != 1 {
		t.Fatalf("in-batch equivocation: %+v", res)
	}
	if h := headCIDs(t, s, testDAG); !slices.Equal(h, []cid.Cid{a3.CID}) {
		t.Fatal("equivocating block changed the heads")
	}
}

func TestStoreFailedCommitLeavesStoreConsistent(t *testing.T) {
	forBackends(t, testStoreFailedCommitLeavesStoreConsistent)
}

func testStoreFailedCommitLeavesStoreConsistent(t *testing.T, be backend) {
	for _, afterWrite := range []bool{false, true} {
		d, fds := be.open(t)
		fds.afterWrite = afterWrite
		s, err := openWithFaults(d, fds, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		cb := newChainBuilder(t)
		a1 := cb.block(testSigner(1), nil, "a1")
		mustAdd(t, s, testDAG, a1)
		a2 := cb.block(testSigner(1), refs(a1), "a2")
		a3 := cb.block(testSigner(2), refs(a2), "a3")
		// a3 first: staged; then a2 completes it in a batch that fails.
		if _, err := s.Add(context.Background(), testDAG, "p", a3); err != nil {
			t.Fatal(err)
		}
		fds.fail = true
		if _, err := s.Add(context.Background(), testDAG, "p", a2); !errors.Is(err, errInjected) {
			t.Fatalf("afterWrite=%v: failure not reported: %v", afterWrite, err)
		}
		fds.fail = false
		if afterWrite {
			// The write reached the datastore: the reloaded index shows it.
			if h := headCIDs(t, s, testDAG); !slices.Equal(h, []cid.Cid{a3.CID}) {
				t.Fatalf("after a written-but-failed commit heads are %v", h)
			}
			continue
		}
		if h := headCIDs(t, s, testDAG); !slices.Equal(h, []cid.Cid{a1.CID}) {
			t.Fatalf("heads advanced by a failed commit: %v", h)
		}
		if c, _ := s.Count(context.Background(), testDAG); c != 1 {
			t.Fatalf("count advanced by a failed commit: %d", c)
		}
		if !s.IsStaged(testDAG, a3.CID) {
			t.Fatal("staged child lost by a failed commit")
		}
		res := mustAdd(t, s, testDAG, a2)
		if len(res.Committed) != 2 {
			t.Fatalf("retry committed %d", len(res.Committed))
		}
		if h := headCIDs(t, s, testDAG); !slices.Equal(h, []cid.Cid{a3.CID}) {
			t.Fatalf("heads after retry %v", h)
		}
	}
}

func TestAppendNeverReusesSeq(t *testing.T) { forBackends(t, testAppendNeverReusesSeq) }

func testAppendNeverReusesSeq(t *testing.T, be backend) {
	d, fds := be.open(t)
	ctx := context.Background()
	s, _ := openWithFaults(d, fds, DefaultOptions())
	au := Author{Signer: testSigner(1), Sealer: newTestCipher(1), Cert: []byte("cert")}
	b1, err := s.Append(ctx, testDAG, au, []byte("one"), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if b1.Inner.Seq != 1 || string(b1.Inner.Cert) != "cert" || b1.Inner.Height != 1 {
		t.Fatalf("first block %+v", b1.Inner)
	}
	fds.fail = true
	if b, err := s.Append(ctx, testDAG, au, []byte("lost"), testEpoch); err == nil || b.CID.Defined() {
		t.Fatalf("append returned a block despite a failed commit: %v", err)
	}
	fds.afterWrite = true // written, then the sync fails: the seq is spent
	if _, err := s.Append(ctx, testDAG, au, []byte("unsynced"), testEpoch); err == nil {
		t.Fatal("append succeeded despite a failed sync")
	}
	fds.fail, fds.afterWrite = false, false
	b3, err := s.Append(ctx, testDAG, au, []byte("three"), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if b3.Inner.Seq != 3 || b3.Inner.Cert != nil {
		t.Fatalf("after failures seq %d (want 3: the written-but-unsynced block used 2)", b3.Inner.Seq)
	}
	// Reopen: the sequence continues after the last committed block.
	s2, _ := openWithFaults(d, fds, DefaultOptions())
	b4, err := s2.Append(ctx, testDAG, au, []byte("four"), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if b4.Inner.Seq != 4 || b4.Inner.Prev != b3.CID || b4.Inner.Height != 4 {
		t.Fatalf("after reopen %+v", b4.Inner)
	}
	if err := VerifySignature(b4.Inner); err != nil {
		t.Fatal(err)
	}
}

func TestAppendOnce(t *testing.T) { forBackends(t, testAppendOnce) }

// testAppendOnce: a key makes one block whatever the retries, across a
// failed commit (nothing made, the retry makes it) and a reopen; another
// key or no key makes a new block.
func testAppendOnce(t *testing.T, be backend) {
	d, fds := be.open(t)
	ctx := context.Background()
	s, _ := openWithFaults(d, fds, DefaultOptions())
	au := Author{Signer: testSigner(1), Sealer: newTestCipher(1), Cert: []byte("cert")}
	if _, err := s.Once(ctx, testDAG, []byte("k1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key before any block: %v", err)
	}
	fds.fail = true
	if _, _, err := s.AppendOnce(ctx, testDAG, []byte("k1"), au, []byte("one"), testEpoch); err == nil {
		t.Fatal("append succeeded despite a failed commit")
	}
	fds.fail = false
	b1, created, err := s.AppendOnce(ctx, testDAG, []byte("k1"), au, []byte("one"), testEpoch)
	if err != nil || !created {
		t.Fatalf("first append: created %v, %v", created, err)
	}
	again, created, err := s.AppendOnce(ctx, testDAG, []byte("k1"), au, []byte("one, retried"), testEpoch)
	if err != nil || created || again.CID != b1.CID || string(again.Inner.Body) != "one" {
		t.Fatalf("retry: created %v, %v, body %q", created, err, again.Inner.Body)
	}
	b2, created, err := s.AppendOnce(ctx, testDAG, []byte("k2"), au, []byte("two"), testEpoch)
	if err != nil || !created || b2.Inner.Seq != 2 {
		t.Fatalf("another key: created %v seq %d, %v", created, b2.Inner.Seq, err)
	}
	if _, err := s.Append(ctx, testDAG, au, []byte("three"), testEpoch); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AppendOnce(ctx, testDAG, make([]byte, MaxOnceKey+1), au, []byte("x"), testEpoch); err == nil {
		t.Fatal("an oversized key was taken")
	}
	s2, _ := openWithFaults(d, fds, DefaultOptions())
	if c, err := s2.Once(ctx, testDAG, []byte("k1")); err != nil || c != b1.CID {
		t.Fatalf("after reopen: %v %v", c, err)
	}
	again, created, err = s2.AppendOnce(ctx, testDAG, []byte("k2"), au, []byte("two, retried"), testEpoch)
	if err != nil || created || again.CID != b2.CID {
		t.Fatalf("retry after reopen: created %v, %v", created, err)
	}
	if n, _ := s2.Count(ctx, testDAG); n != 3 {
		t.Fatalf("%d blocks, want 3", n)
	}
}

func TestReopenPreservesEverything(t *testing.T) { forBackends(t, testReopenPreservesEverything) }

func testReopenPreservesEverything(t *testing.T, be backend) {
	ctx := context.Background()
	d, _ := be.open(t)
	s, _ := Open(ctx, d, DefaultOptions())
	cb := newChainBuilder(t)
	var all []Block
	heads := []Block{cb.block(testSigner(1), nil, "root")}
	all = append(all, heads[0])
	for i := range 40 {
		b := cb.block(testSigner(byte(1+i%4)), refs(heads...), "m")
		all = append(all, b)
		if i%3 == 0 {
			heads = append(heads, b)
		} else {
			heads = []Block{b}
		}
	}
	mustAdd(t, s, testDAG, all...)
	mustAdd(t, s, "other", cb.block(testSigner(7), nil, "elsewhere"))
	wantHeads, _ := s.Heads(ctx, testDAG)
	wantVec, _ := s.Vector(ctx, testDAG)
	wantAll := allCIDs(t, s, testDAG)

	s2, _ := Open(ctx, d, DefaultOptions())
	gotHeads, _ := s2.Heads(ctx, testDAG)
	gotVec, _ := s2.Vector(ctx, testDAG)
	if !slices.Equal(gotHeads, wantHeads) || len(gotVec) != len(wantVec) {
		t.Fatalf("heads or vector changed on reopen")
	}
	for a, v := range wantVec {
		if gotVec[a] != v {
			t.Fatalf("vector entry changed: %+v vs %+v", gotVec[a], v)
		}
	}
	if got := allCIDs(t, s2, testDAG); !slices.Equal(got, wantAll) || len(got) != len(all) {
		t.Fatalf("blocks changed on reopen: %d vs %d", len(got), len(wantAll))
	}
	if c, _ := s2.Count(ctx, testDAG); c != uint64(len(all)) {
		t.Fatalf("count %d", c)
	}
	if c, _ := s2.Count(ctx, "other"); c != 1 {
		t.Fatalf("other dag count %d", c)
	}
	// A new DAG after reopen gets a fresh number, not a reused one.
	mustAdd(t, s2, "third", cb.block(testSigner(8), nil, "x"))
	if got := allCIDs(t, s2, "other"); len(got) != 1 {
		t.Fatalf("dag numbers collided: other has %d blocks", len(got))
	}
}

func TestBlocksOrderAndPaging(t *testing.T) { forBackends(t, testBlocksOrderAndPaging) }

func testBlocksOrderAndPaging(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	var all []Block
	prev := []Block{cb.block(testSigner(1), nil, "r")}
	all = append(all, prev...)
	for i := range 30 {
		x := cb.block(testSigner(2), refs(prev...), "x")
		y := cb.block(testSigner(3), refs(prev...), "y")
		all = append(all, x, y)
		prev = []Block{x, y}
		_ = i
	}
	mustAdd(t, s, testDAG, all...)
	want := slices.Clone(all)
	slices.SortFunc(want, func(a, b Block) int { return CompareBlocks(&a, &b) })
	if got := allCIDs(t, s, testDAG); !slices.Equal(got, cids(want)) {
		t.Fatal("ascending iteration is not display order")
	}
	// Newest first, pages of 7.
	var paged []cid.Cid
	after := Position{}
	for {
		n := 0
		for b, err := range s.Blocks(context.Background(), testDAG, after, true) {
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, b.CID)
			after = Position{b.Inner.Height, b.CID}
			if n++; n == 7 {
				break
			}
		}
		if n < 7 {
			break
		}
	}
	rev := cids(want)
	slices.Reverse(rev)
	if !slices.Equal(paged, rev) {
		t.Fatalf("newest-first paging gave %d blocks", len(paged))
	}
}

func TestMergeParents(t *testing.T) { forBackends(t, testMergeParents) }

func testMergeParents(t *testing.T, be backend) {
	s, _ := be.store(t)
	cb := newChainBuilder(t)
	root := cb.block(testSigner(1), nil, "r")
	mustAdd(t, s, testDAG, root)
	for i := range 20 {
		mustAdd(t, s, testDAG, cb.block(testSigner(byte(10+i)), refs(root), "w"))
	}
	mp, err := s.MergeParents(context.Background(), testDAG)
	if err != nil || len(mp) != MaxParents {
		t.Fatalf("merge parents %d %v", len(mp), err)
	}
	b, err := s.Append(context.Background(), testDAG, Author{Signer: testSigner(1), Sealer: cb.cipher}, nil, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Inner.Parents) != MaxParents {
		t.Fatalf("merge block has %d parents", len(b.Inner.Parents))
	}
	if h := headCIDs(t, s, testDAG); len(h) != 20-MaxParents+1 {
		t.Fatalf("heads after merge: %d", len(h))
	}
	if mp, _ := s.MergeParents(context.Background(), testDAG); mp != nil {
		t.Fatal("merge still needed with 5 heads")
	}
}

func TestPebbleStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := pebbleds.NewDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := Open(ctx, d, DefaultOptions())
	cb := newChainBuilder(t)
	var all []Block
	prev := cb.block(testSigner(1), nil, "r")
	all = append(all, prev)
	for i := range 2100 { // crosses two height buckets
		prev = cb.block(testSigner(byte(1+i%3)), refs(prev), "m")
		all = append(all, prev)
	}
	mustAdd(t, s, testDAG, all...)
	au := Author{Signer: testSigner(1), Sealer: cb.cipher}
	own, err := s.Append(ctx, testDAG, au, []byte("own"), testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	theirs := map[DeviceID]uint64{}
	for _, b := range all[:2001] {
		theirs[b.Inner.Author] = b.Inner.Seq
	}
	missing, err := s.Missing(ctx, testDAG, []cid.Cid{all[2000].CID}, theirs)
	if err != nil || len(missing) != 101 {
		t.Fatalf("missing %d %v", len(missing), err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = pebbleds.NewDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s2, _ := Open(ctx, d, DefaultOptions())
	if h := headCIDs(t, s2, testDAG); !slices.Equal(h, []cid.Cid{own.CID}) {
		t.Fatalf("heads after reopen %v", h)
	}
	if got := allCIDs(t, s2, testDAG); len(got) != len(all)+1 || got[len(got)-1] != own.CID {
		t.Fatalf("blocks after reopen: %d", len(got))
	}
}

// TestStagingFloodStaysBounded floods staging with orphans from several
// peers (one of them sending half of everything) into several DAGs (one of
// them getting half): after every block, each scope (total, per DAG, per
// peer) is within its block and byte quota, and each kind of quota was
// reached at some point, so each one was enforced. Oldest-first eviction
// per peer and per DAG is TestStagingQuotaEvictsOldest; the total quota's
// order is TestStagingTotalEvictsOldest.
func TestStagingFloodStaysBounded(t *testing.T) {
	opts := DefaultOptions()
	opts.Staging = StagingLimits{
		Total:   Quota{Blocks: 30, Bytes: 1 << 20},
		PerDAG:  Quota{Blocks: 14, Bytes: 1 << 20},
		PerPeer: Quota{Blocks: 1000, Bytes: 8 << 10},
	}
	s, _ := backends[0].openStore(t, opts)
	cb := newChainBuilder(t)
	missing := cb.block(testSigner(9), nil, "never delivered")
	type sent struct {
		dag  DAGID
		peer string
		b    Block
	}
	var all []sent
	var maxTotal, maxDAG int
	var maxPeerBytes, entry int64
	for i := range 200 { // one block per author, so each waits only on missing
		dag := DAGID([]string{"d1", "d1", "d2", "d3"}[i%4])
		peer := "flooder"
		if i%2 == 1 {
			peer = fmt.Sprintf("p%d", i%5)
		}
		x := sent{dag, peer, cb.block(testSigner(byte(10+i)), refs(missing), "orphan")}
		res, err := s.Add(context.Background(), x.dag, x.peer, x.b)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Staged) != 1 {
			t.Fatalf("orphan %d not staged: %+v", i, res)
		}
		all = append(all, x)
		st := s.staging
		st.mu.Lock()
		check := func(name string, sc *stageScope, q Quota) {
			if sc != nil && (sc.blocks > q.Blocks || sc.bytes > q.Bytes) {
				t.Fatalf("after %d orphans %s holds %d blocks, %d bytes (quota %+v)", i+1, name, sc.blocks, sc.bytes, q)
			}
		}
		check("total", &st.total, opts.Staging.Total)
		maxTotal = max(maxTotal, st.total.blocks)
		for d, sc := range st.perDAG {
			check(string(d), sc, opts.Staging.PerDAG)
			maxDAG = max(maxDAG, sc.blocks)
		}
		for p, sc := range st.perPeer {
			check(p, sc, opts.Staging.PerPeer)
			maxPeerBytes = max(maxPeerBytes, sc.bytes)
		}
		if len(st.entries) != st.total.blocks {
			t.Fatalf("%d entries, %d counted", len(st.entries), st.total.blocks)
		}
		entry = max(entry, st.entries[stageKey{x.dag, x.b.CID}].size)
		st.mu.Unlock()
	}
	if maxTotal != opts.Staging.Total.Blocks || maxDAG != opts.Staging.PerDAG.Blocks || maxPeerBytes <= opts.Staging.PerPeer.Bytes-entry {
		t.Fatalf("not every quota was reached: total %d blocks, a DAG %d blocks, a peer %d bytes", maxTotal, maxDAG, maxPeerBytes)
	}
	if last := all[len(all)-1]; !s.IsStaged(last.dag, last.b.CID) {
		t.Fatal("the newest orphan was evicted")
	}
	// Delivering the missing parent commits exactly the survivors of d1.
	want, _ := s.Staged("d1")
	res := mustAdd(t, s, "d1", missing)
	if want == 0 || len(res.Committed) != 1+want {
		t.Fatalf("parent completed %d blocks, %d were staged", len(res.Committed)-1, want)
	}
}

// TestEvidenceCapped: equivocations are always reported, but at most
// MaxEvidencePerAuthor records per author are kept, across reopenings.
func TestEvidenceCapped(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		d, f := be.open(t)
		opts := DefaultOptions()
		opts.MaxEvidencePerAuthor = 3
		s, _ := openWithFaults(d, f, opts)
		cb := newChainBuilder(t)
		chain := []Block{cb.block(testSigner(1), nil, "a1")}
		for range 5 {
			chain = append(chain, cb.block(testSigner(1), refs(chain[len(chain)-1]), "a"))
		}
		mustAdd(t, s, testDAG, chain...)
		forks := func(body string) []Block {
			var out []Block
			for i := 1; i < len(chain); i++ { // a conflicting block at seq 2..6
				fb := newChainBuilder(t)
				fb.cipher = cb.cipher
				fb.chains[chain[i].Inner.Author] = ChainState{Seq: uint64(i), Last: refOf(chain[i-1])}
				out = append(out, fb.block(testSigner(1), refs(chain[i-1]), body))
			}
			return out
		}
		res, err := s.AddBatch(ctx, testDAG, "p", forks("fork")[:2])
		if err != nil || len(res.Equivocations) != 2 {
			t.Fatalf("equivocations %d, %v", len(res.Equivocations), err)
		}
		s2, _ := openWithFaults(d, f, opts)
		res, err = s2.AddBatch(ctx, testDAG, "p", forks("fork again"))
		if err != nil || len(res.Equivocations) != 5 {
			t.Fatalf("equivocations after reopen %d, %v", len(res.Equivocations), err)
		}
		recs, err := s2.Equivocations(ctx, testDAG)
		if err != nil || len(recs) != 3 {
			t.Fatalf("%d evidence records kept (cap 3): %v", len(recs), err)
		}
	})
}

// TestMergeParentsDeterministic: the merge parents are the 16 oldest heads
// in display order, whatever order the heads arrived in.
func TestMergeParentsDeterministic(t *testing.T) {
	cb := newChainBuilder(t)
	root := cb.block(testSigner(1), nil, "r")
	mid := cb.block(testSigner(2), refs(root), "m")
	var heads []Block
	for i := range 12 {
		heads = append(heads, cb.block(testSigner(byte(10+i)), refs(root), "h2"))
		heads = append(heads, cb.block(testSigner(byte(40+i)), refs(mid), "h3"))
	}
	want := refs(heads...)
	slices.SortFunc(want, func(a, b Ref) int { return ComparePositions(Position{a.Height, a.CID}, Position{b.Height, b.CID}) })
	want = want[:MaxParents]
	for k := range 3 {
		s, _ := newMapStore(t)
		order := slices.Clone(heads)
		if k > 0 {
			slices.Reverse(order)
		}
		if k == 2 {
			order = append(order[1:], order[0])
		}
		mustAdd(t, s, testDAG, root, mid)
		mustAdd(t, s, testDAG, order...)
		mp, err := s.MergeParents(context.Background(), testDAG)
		if err != nil || !slices.Equal(mp, want) {
			t.Fatalf("order %d: merge parents %v, want the 16 oldest %v (%v)", k, mp, want, err)
		}
		// mid is not a head: 12 heads of height 2 come first.
		if mp[0].Height != 2 || mp[11].Height != 2 || mp[12].Height != 3 {
			t.Fatalf("merge parents not oldest first: %v", mp)
		}
	}
}

// TestSizeAndParentCapsBoundary: exactly MaxParents parents and an inner
// block of exactly MaxInnerSize bytes are accepted; one more is refused.
func TestSizeAndParentCapsBoundary(t *testing.T) {
	cb := newChainBuilder(t)
	s, _ := newMapStore(t)
	root := cb.block(testSigner(1), nil, "r")
	var tips []Block
	for i := range MaxParents + 1 {
		tips = append(tips, cb.block(testSigner(byte(10+i)), refs(root), "t"))
	}
	mustAdd(t, s, testDAG, append([]Block{root}, tips...)...)
	if res := mustAdd(t, s, testDAG, cb.block(testSigner(60), refs(tips[:MaxParents]...), "16")); len(res.Committed) != 1 {
		t.Fatalf("16 parents not accepted: %+v", res)
	}
	if _, err := Build(BuildParams{Signer: testSigner(61), Sealer: cb.cipher, Parents: refs(tips...), Now: testEpoch}); !errors.Is(err, ErrTooManyParents) {
		t.Fatalf("build with 17 parents: %v", err)
	}
	// Find the body length that makes the inner block exactly 64 KiB.
	probe, err := Build(BuildParams{Signer: testSigner(62), Sealer: cb.cipher, Parents: refs(root), Body: make([]byte, 60<<10), Now: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	n := 60<<10 + MaxInnerSize - len(probe.innerBytes)
	fit, err := Build(BuildParams{Signer: testSigner(62), Sealer: cb.cipher, Parents: refs(root), Body: make([]byte, n), Now: testEpoch})
	if err != nil || len(fit.innerBytes) != MaxInnerSize {
		t.Fatalf("inner of %d bytes: %v", len(fit.innerBytes), err)
	}
	env, _ := fit.EnvelopeBytes()
	if ob, err := OpenBlock(env, cb.cipher); err != nil || len(ob.innerBytes) != MaxInnerSize {
		t.Fatalf("a 64 KiB block does not open: %v", err)
	}
	if res := mustAdd(t, s, testDAG, fit); len(res.Committed) != 1 {
		t.Fatalf("64 KiB block not accepted: %+v", res)
	}
	if _, err := Build(BuildParams{Signer: testSigner(63), Sealer: cb.cipher, Parents: refs(root), Body: make([]byte, n+1), Now: testEpoch}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("build of a 64 KiB + 1 inner block: %v", err)
	}
}

// TestStagingTotalEvictsOldest: when only the store-wide quota binds, the
// blocks still staged are exactly the newest ones, across DAGs and peers.
func TestStagingTotalEvictsOldest(t *testing.T) {
	opts := DefaultOptions()
	opts.Staging.Total = Quota{Blocks: 7, Bytes: 1 << 20}
	s, _ := backends[0].openStore(t, opts)
	cb := newChainBuilder(t)
	missing := cb.block(testSigner(9), nil, "never delivered")
	type sent struct {
		dag DAGID
		c   cid.Cid
	}
	var all []sent
	for i := range 30 {
		dag := DAGID([]string{"d1", "d2"}[i%2])
		b := cb.block(testSigner(byte(10+i)), refs(missing), "orphan")
		res, err := s.Add(context.Background(), dag, []string{"p1", "p2", "p3"}[i%3], b)
		if err != nil || len(res.Staged) != 1 || res.Evicted != min(1, max(0, i+1-7)) {
			t.Fatalf("orphan %d: %+v %v", i, res, err)
		}
		all = append(all, sent{dag, b.CID})
	}
	for i, x := range all {
		if got, want := s.IsStaged(x.dag, x.c), i >= len(all)-7; got != want {
			t.Fatalf("orphan %d staged=%v, want %v", i, got, want)
		}
	}
}

// TestStagedForgedHeightRejected: a block staged for a missing parent is
// validated when the parent arrives, and a forged height is refused then
// (wire heights are never trusted, staged or not).
func TestStagedForgedHeightRejected(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		s, _ := be.store(t)
		cb := newChainBuilder(t)
		root := cb.block(testSigner(1), nil, "root")
		mid := cb.block(testSigner(2), refs(root), "mid")
		child := cb.block(testSigner(3), refs(mid), "child")
		child.Inner.Height = 7 // links give 3
		msg, err := SigningMessage(child.Inner)
		if err != nil {
			t.Fatal(err)
		}
		child.Inner.Sig, _ = testSigner(3).Sign(msg)
		inner, err := EncodeInner(child.Inner)
		if err != nil {
			t.Fatal(err)
		}
		sealed, _ := cb.cipher.Seal(inner)
		env, _ := EncodeEnvelope(Envelope{Version: EnvelopeVersion, Epoch: sealed.Epoch, Nonce: sealed.Nonce, Ciphertext: sealed.Ciphertext})
		forged, err := OpenBlock(env, cb.cipher)
		if err != nil {
			t.Fatal(err)
		}
		if res, err := s.Add(context.Background(), testDAG, "p", forged); err != nil || len(res.Staged) != 1 {
			t.Fatalf("forged child not staged: %+v %v", res, err)
		}
		res, err := s.AddBatch(context.Background(), testDAG, "p", []Block{root, mid})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Committed) != 2 || len(res.Rejected) != 1 || !errors.Is(res.Rejected[0].Err, ErrBadHeight) || res.Rejected[0].CID != forged.CID {
			t.Fatalf("staged forged block: %+v", res)
		}
		if n, _ := s.Staged(testDAG); n != 0 {
			t.Fatalf("%d blocks left in staging", n)
		}
		if h := headCIDs(t, s, testDAG); !slices.Equal(h, []cid.Cid{mid.CID}) {
			t.Fatalf("heads %v", h)
		}
	})
}
