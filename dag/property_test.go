package dag

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"pgregory.net/rapid"
)

// genDAG extends a store-independent DAG: each new block by one of the
// authors builds on a random subset of the current heads.
func genBlocks(t *rapid.T, cb *chainBuilder, heads []Block, n int, label string) ([]Block, []Block) {
	var out []Block
	for i := range n {
		author := rapid.ByteRange(1, 4).Draw(t, label+"author")
		k := rapid.IntRange(0, min(len(heads), 3)).Draw(t, label+"k")
		perm := rapid.Permutation(heads).Draw(t, label+"perm")
		parents := perm[:k]
		b := cb.block(testSigner(author), refs(parents...), label)
		_ = i
		out = append(out, b)
		next := []Block{b}
		for _, h := range heads {
			if !slices.ContainsFunc(parents, func(p Block) bool { return p.CID == h.CID }) {
				next = append(next, h)
			}
		}
		heads = next
	}
	return out, heads
}

func TestMissingConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		a, _ := newMapStore(t)
		b, _ := newMapStore(t)
		// Each side gets its own builder state per author so the two
		// suffixes never equivocate: side A writes with authors 1-4 after
		// the prefix, side B with authors 5-8.
		cb := newChainBuilder(t)
		prefix, heads := genBlocks(t, cb, nil, rapid.IntRange(0, 12).Draw(t, "np"), "p")
		cbB := newChainBuilder(t)
		cbB.cipher = cb.cipher
		for k, v := range cb.chains {
			cbB.chains[k] = v
		}
		sufA, _ := genBlocks(t, cb, heads, rapid.IntRange(0, 12).Draw(t, "na"), "a")
		var sufB []Block
		hb := heads
		for range rapid.IntRange(0, 12).Draw(t, "nb") {
			author := rapid.ByteRange(5, 8).Draw(t, "bauthor")
			k := rapid.IntRange(0, min(len(hb), 3)).Draw(t, "bk")
			x := cbB.block(testSigner(author), refs(hb[:k]...), "b")
			sufB = append(sufB, x)
			hb = append([]Block{x}, hb[k:]...)
		}
		mustAdd(t, a, testDAG, append(slices.Clone(prefix), sufA...)...)
		mustAdd(t, b, testDAG, append(slices.Clone(prefix), sufB...)...)

		exchange := func(from, to *Store) {
			heads := headCIDs(t, to, testDAG)
			vec, _ := to.SeqVector(ctx, testDAG)
			envs, err := from.Missing(ctx, testDAG, heads, vec)
			if err != nil {
				t.Fatal(err)
			}
			// Exactly the difference: nothing the receiver already has.
			var blocks []Block
			for _, e := range envs {
				ob, err := OpenBlock(e, cb.cipher)
				if err != nil {
					t.Fatal(err)
				}
				if has, _ := to.Has(ctx, testDAG, ob.CID); has {
					t.Fatalf("Missing sent a block the peer has")
				}
				blocks = append(blocks, ob)
			}
			if !slices.IsSortedFunc(blocks, func(x, y Block) int { return CompareBlocks(&x, &y) }) {
				t.Fatal("Missing not in display order")
			}
			// Topological order: committing one at a time never stages.
			for _, blk := range blocks {
				res, err := to.Add(ctx, testDAG, "peer", blk)
				if err != nil || len(res.Committed) != 1 {
					t.Fatalf("block not committable in order: %+v %v", res, err)
				}
			}
		}
		exchange(a, b)
		exchange(b, a)
		if ha, hb := headCIDs(t, a, testDAG), headCIDs(t, b, testDAG); !slices.Equal(ha, hb) {
			t.Fatalf("heads differ: %v vs %v", ha, hb)
		}
		all := allCIDs(t, a, testDAG)
		if !slices.Equal(all, allCIDs(t, b, testDAG)) {
			t.Fatal("block sets differ")
		}
		if len(all) != len(prefix)+len(sufA)+len(sufB) {
			t.Fatalf("union has %d blocks, want %d", len(all), len(prefix)+len(sufA)+len(sufB))
		}
		if m, _ := a.Missing(ctx, testDAG, headCIDs(t, b, testDAG), mustVec(t, b)); len(m) != 0 {
			t.Fatal("Missing not empty after sync")
		}
	})
}

func mustVec(t tb, s *Store) map[DeviceID]uint64 {
	v, err := s.SeqVector(context.Background(), testDAG)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Any delivery order, with duplicates, yields the same store, and the
// store is downward-closed after every block.
func TestAnyDeliveryOrderConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cb := newChainBuilder(t)
		blocks, _ := genBlocks(t, cb, nil, rapid.IntRange(1, 25).Draw(t, "n"), "x")
		ref, _ := newMapStore(t)
		mustAdd(t, ref, testDAG, blocks...)
		s, _ := newMapStore(t)
		order := rapid.SliceOfN(rapid.IntRange(0, len(blocks)-1), len(blocks), 3*len(blocks)).Draw(t, "order")
		for _, i := range order {
			if _, err := s.Add(context.Background(), testDAG, "p", blocks[i]); err != nil {
				t.Fatal(err)
			}
			checkDownwardClosed(t, s)
		}
		mustAdd(t, s, testDAG, blocks...) // fill whatever the random order skipped
		if !slices.Equal(headCIDs(t, s, testDAG), headCIDs(t, ref, testDAG)) || !slices.Equal(allCIDs(t, s, testDAG), allCIDs(t, ref, testDAG)) {
			t.Fatal("delivery order changed the result")
		}
		if n, _ := s.Staged(testDAG); n != 0 {
			t.Fatalf("%d blocks left in staging", n)
		}
	})
}

// checkDownwardClosed fails unless every committed block's links are
// committed (invariant I1) and its height and Lamport clock are those its
// links give (I2).
func checkDownwardClosed(t *rapid.T, s *Store) {
	ctx := context.Background()
	for b, err := range s.Blocks(ctx, testDAG, Position{}, false) {
		if err != nil {
			t.Fatal(err)
		}
		var h, l uint64
		for _, c := range b.Inner.Links() {
			p, err := s.Get(ctx, testDAG, c)
			if err != nil {
				t.Fatalf("block %s committed before its link %s: %v", b.CID, c, err)
			}
			h, l = max(h, p.Inner.Height), max(l, p.Inner.Lamport)
		}
		if b.Inner.Height != h+1 || b.Inner.Lamport != l+1 {
			t.Fatalf("block %s committed with height %d lamport %d, links give %d and %d", b.CID, b.Inner.Height, b.Inner.Lamport, h+1, l+1)
		}
	}
}

func TestPlanVerification(t *testing.T) {
	cb := newChainBuilder(t)
	a1 := cb.block(testSigner(1), nil, "a1")
	b1 := cb.block(testSigner(2), refs(a1), "b1")
	a2 := cb.block(testSigner(1), refs(b1), "a2")
	a3 := cb.block(testSigner(1), nil, "a3")
	b2 := cb.block(testSigner(2), refs(a3), "b2")
	batch := []Block{a3, b2, a1, b1, a2, a1}
	plan := PlanVerification(batch)
	// Tips: a3 (author 1) and b2 (author 2).
	if !slices.Equal(plan.Verify, []int{0, 1}) {
		t.Fatalf("verify %v", plan.Verify)
	}
	wantVia := []int{0, 1, 0, 1, 0, 0}
	if !slices.Equal(plan.Via, wantVia) {
		t.Fatalf("via %v want %v", plan.Via, wantVia)
	}
	// A Prev link to another author's block does not authenticate it.
	forged := a2
	forged.Inner.Prev = b1.CID
	plan = PlanVerification([]Block{b1, forged})
	if !slices.Equal(plan.Verify, []int{0, 1}) {
		t.Fatalf("cross-author prev authenticated a block: %v", plan.Verify)
	}
	// Soundness end to end: a tampered middle block changes its CID, so
	// the verified tip's Prev no longer names it.
	for _, i := range plan.Verify {
		if err := VerifySignature(batch[i].Inner); err != nil && i < 2 {
			t.Fatal(err)
		}
	}
}

// go-ipld-prime's dagcbor codec must read our bytes and write them back
// identically, and go-cid must compute the same CID.
func TestIPLDInterop(t *testing.T) {
	cb := newChainBuilder(t)
	a := cb.block(testSigner(1), nil, "a")
	b := cb.block(testSigner(2), refs(a), "b")
	c := cb.block(testSigner(1), refs(b), "c")
	c2 := newChainBuilder(t)
	withCert, err := Build(BuildParams{Signer: testSigner(3), Sealer: c2.cipher, Parents: refs(c), Cert: []byte("certificate"), Body: []byte("x"), Now: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	for _, blk := range []Block{a, b, c, withCert} {
		env, _ := blk.EnvelopeBytes()
		inner, _ := blk.InnerBytes()
		for _, raw := range [][]byte{env, inner} {
			nb := basicnode.Prototype.Any.NewBuilder()
			if err := dagcbor.Decode(nb, bytes.NewReader(raw)); err != nil {
				t.Fatalf("go-ipld-prime cannot decode: %v", err)
			}
			var out bytes.Buffer
			if err := dagcbor.Encode(nb.Build(), &out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), raw) {
				t.Fatalf("go-ipld-prime re-encodes differently:\n ours %x\n ipld %x", raw, out.Bytes())
			}
		}
		if blk.Inner.Prev.Defined() || len(blk.Inner.Parents) > 0 {
			nb := basicnode.Prototype.Any.NewBuilder()
			_ = dagcbor.Decode(nb, bytes.NewReader(blk.innerBytes))
			n := nb.Build()
			p, err := n.LookupByString("p")
			if err != nil {
				t.Fatal(err)
			}
			first, err := p.LookupByIndex(0)
			if err != nil {
				t.Fatal(err)
			}
			l, err := first.AsLink()
			if err != nil || l.String() != blk.Inner.Parents[0].String() {
				t.Fatalf("parent is not an IPLD link: %v %v", l, err)
			}
		}
		want, err := cid.Prefix{Version: 1, Codec: CodecDagCBOR, MhType: 0x12, MhLength: -1}.Sum(env)
		if err != nil || want != blk.CID {
			t.Fatalf("cid mismatch %s vs %s", blk.CID, want)
		}
	}
}

func TestDecodeErrorsAreMalformed(t *testing.T) {
	_, err := DecodeInner([]byte{0xff})
	if !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
}
