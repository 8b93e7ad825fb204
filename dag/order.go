package dag

import (
	"cmp"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
)

// Position is a block's place in the total display order: ascending
// height, ties broken by the CID bytes. Every replica computes heights
// locally (invariant I2), so every replica orders the same blocks the same
// way, and the order is topological: a block's links all have smaller
// heights.
type Position struct {
	Height uint64
	CID    cid.Cid
}

// ComparePositions orders a before b (-1), equal (0) or after (+1) in the
// display order.
func ComparePositions(a, b Position) int {
	if c := cmp.Compare(a.Height, b.Height); c != 0 {
		return c
	}
	return strings.Compare(a.CID.KeyString(), b.CID.KeyString())
}

// CompareBlocks orders blocks by display order (see Position).
func CompareBlocks(a, b *Block) int {
	return ComparePositions(Position{a.Inner.Height, a.CID}, Position{b.Inner.Height, b.CID})
}

// SelectMergeParents picks the parents of a merge block when a DAG has
// more than MaxParents heads: the MaxParents oldest heads in display order
// (lowest height first, then CID), so that long-ignored branches are
// absorbed first and every replica with the same heads picks the same set.
// It returns nil when no merge is needed. Rate-limiting merges is the
// caller's job.
func SelectMergeParents(heads []Ref) []Ref {
	if len(heads) <= MaxParents {
		return nil
	}
	sorted := slices.Clone(heads)
	slices.SortFunc(sorted, func(a, b Ref) int {
		return ComparePositions(Position{a.Height, a.CID}, Position{b.Height, b.CID})
	})
	return sorted[:MaxParents:MaxParents]
}

// VerifyPlan says which signatures of a batch must be checked.
type VerifyPlan struct {
	// Verify lists the indices of the blocks whose signatures must be
	// checked: the tip of every same-author Prev chain in the batch.
	Verify []int
	// Via[i] is the index of the block whose valid signature authenticates
	// block i (Via[i] == i for blocks in Verify).
	Via []int
}

// PlanVerification computes, for a batch of opened blocks, the minimal set
// of signatures to check. Within a batch, an author's blocks form a chain
// through Prev; a block c whose Prev names block p of the same author with
// c.Seq == p.Seq+1 authenticates p, because c's signature covers Prev, the
// sha2-256 hash of p's envelope bytes, and those bytes determine p's inner
// block (the Opener is deterministic per envelope). By induction the
// signature of the chain's tip authenticates the whole chain: one check per
// author tip instead of one per block. A block whose signature fails
// invalidates exactly the blocks with Via pointing to it. Blocks whose
// Prev is outside the batch, or names a block of another author or with a
// non-consecutive sequence number, are tips of their own chains.
//
// Single blocks arriving live have no chain and are checked in full.
func PlanVerification(blocks []Block) VerifyPlan {
	idx := make(map[cid.Cid]int, len(blocks))
	for i := range blocks {
		if _, dup := idx[blocks[i].CID]; !dup {
			idx[blocks[i].CID] = i
		}
	}
	// child[i] is a block that vouches for block i, or -1.
	child := make([]int, len(blocks))
	for i := range child {
		child[i] = -1
	}
	for i := range blocks {
		in := &blocks[i].Inner
		if !in.Prev.Defined() {
			continue
		}
		p, ok := idx[in.Prev]
		if !ok || p == i {
			continue
		}
		pin := &blocks[p].Inner
		if pin.Author == in.Author && pin.Seq+1 == in.Seq && child[p] < 0 {
			child[p] = i
		}
	}
	plan := VerifyPlan{Via: make([]int, len(blocks))}
	for i := range plan.Via {
		plan.Via[i] = -1
	}
	var path []int
	for i := range blocks {
		// Walk up to the tip, then assign it to the whole path so every
		// block is visited a bounded number of times. Sequence numbers
		// strictly increase along child links, so the walk terminates.
		path = path[:0]
		j := i
		for plan.Via[j] < 0 && child[j] >= 0 {
			path = append(path, j)
			j = child[j]
		}
		tip := plan.Via[j]
		if tip < 0 {
			tip = j
		}
		plan.Via[j] = tip
		for _, k := range path {
			plan.Via[k] = tip
		}
	}
	for i := range blocks {
		if first := idx[blocks[i].CID]; first != i {
			// A duplicate in the batch: same bytes and CID as its first
			// copy, so authenticated the same way.
			plan.Via[i] = plan.Via[first]
		}
		if plan.Via[i] == i {
			plan.Verify = append(plan.Verify, i)
		}
	}
	return plan
}
