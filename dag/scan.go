package dag

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"iter"

	"github.com/ipfs/go-cid"
)

// scanOrder visits committed records of DAG num in display order
// (descending if desc) from height from to height to inclusive, one
// bucket query at a time. fn gets the position and the record, which is
// only valid during the call, and returns false to stop.
func (s *Store) scanOrder(ctx context.Context, num uint32, from, to uint64, desc bool, fn func(pos Position, rec []byte) (bool, error)) error {
	if from > to {
		return nil
	}
	lo, hi := from>>bucketBits, to>>bucketBits
	for i := uint64(0); i <= hi-lo; i++ {
		bucket := lo + i
		if desc {
			bucket = hi - i
		}
		stop := false
		err := s.kv.scan(ctx, bucketPrefix(num, bucket), false, desc, func(k, v []byte) (bool, error) {
			raw, ok := unpack7(lastComponent(k), 2+cidLen)
			if !ok {
				return false, fmt.Errorf("%w: order key", errBadRecord)
			}
			h := bucket<<bucketBits | uint64(binary.BigEndian.Uint16(raw[:2]))
			if h < from || h > to {
				return true, nil
			}
			c, err := cid.Cast(raw[2:])
			if err != nil {
				return false, fmt.Errorf("%w: order key cid: %w", errBadRecord, err)
			}
			more, err := fn(Position{Height: h, CID: c}, v)
			stop = !more
			return more, err
		})
		if err != nil || stop {
			return err
		}
	}
	return nil
}

// Blocks iterates the committed blocks of dag in display order, ascending
// or (newestFirst) descending, starting after the position after (the
// zero Position starts at the beginning or the end). Paging newest-first
// is a range scan: pass the last position of a page as after for the
// next one. The DAG lock is not held while the caller's loop body runs.
func (s *Store) Blocks(ctx context.Context, dag DAGID, after Position, newestFirst bool) iter.Seq2[Block, error] {
	return func(yield func(Block, error) bool) {
		num, ok, _, maxHeight, _, err := s.snapshot(ctx, dag)
		if err != nil {
			yield(Block{}, err)
			return
		}
		if !ok {
			return
		}
		from, to := uint64(1), maxHeight
		if after.CID.Defined() {
			if newestFirst {
				to = min(to, after.Height)
			} else {
				from = after.Height
			}
		}
		stopped := false
		err = s.scanOrder(ctx, num, from, to, newestFirst, func(pos Position, rec []byte) (bool, error) {
			if after.CID.Defined() {
				c := ComparePositions(pos, after)
				if (!newestFirst && c <= 0) || (newestFirst && c >= 0) {
					return true, nil
				}
			}
			b, err := blockFromRecord(bytes.Clone(rec), s.opts.Records)
			if err != nil {
				return false, err
			}
			if !yield(b, nil) {
				stopped = true
				return false, nil
			}
			return true, nil
		})
		if err != nil && !stopped {
			yield(Block{}, fmt.Errorf("scan %q: %w", dag, err))
		}
	}
}

// Missing returns the envelopes of every committed block of dag that a
// peer with the given heads and per-author sequence vector lacks, in
// topological (display) order, so the peer can commit them as they come
// without staging. See MissingFunc.
func (s *Store) Missing(ctx context.Context, dag DAGID, theirHeads []cid.Cid, theirVector map[DeviceID]uint64) ([][]byte, error) {
	var out [][]byte
	err := s.MissingFunc(ctx, dag, theirHeads, theirVector, func(_ cid.Cid, env []byte) error {
		out = append(out, env)
		return nil
	})
	return out, err
}

// MissingFunc streams what Missing returns to fn, which may stop the
// stream by returning an error (returned wrapped). The env slice must not
// be retained past the call unless copied.
//
// A downward-closed store holding author a's block with sequence number n
// also holds a's blocks 1..n (through Prev), so the peer's vector
// describes its store exactly and the difference is every block whose
// sequence number exceeds the peer's entry for its author. Heads of the
// peer that this store knows raise those entries. The result is fixed to
// the blocks committed when the call starts; blocks committed meanwhile
// are left for the next sync. The scan starts at the lowest height of a
// missing block, so a peer that is slightly behind costs a scan of the
// recent part of the DAG only.
func (s *Store) MissingFunc(ctx context.Context, dag DAGID, theirHeads []cid.Cid, theirVector map[DeviceID]uint64, fn func(c cid.Cid, env []byte) error) error {
	num, ok, mine, maxHeight, count, err := s.snapshot(ctx, dag)
	if err != nil || !ok {
		return err
	}
	theirs := make(map[DeviceID]uint64, len(theirVector))
	for a, n := range theirVector {
		theirs[a] = n
	}
	for _, h := range theirHeads {
		rec, err := s.getRecord(ctx, num, h)
		if err != nil {
			continue // unknown to us: the peer has something we lack
		}
		hdr, _, _, err := parseRecord(rec)
		if err != nil {
			return fmt.Errorf("missing: %w", err)
		}
		theirs[hdr.author] = max(theirs[hdr.author], hdr.seq)
	}
	var total uint64
	for a, t := range mine {
		if t.Seq > theirs[a] {
			total += t.Seq - theirs[a]
		}
	}
	if total == 0 {
		return nil
	}
	// Find the lowest missing height. Walking back along authors' chains
	// costs one read per missing block; when a large share of the DAG is
	// missing, scanning from the bottom is cheaper.
	from := uint64(1)
	if total*4 < count {
		from = maxHeight
		for a, t := range mine {
			if t.Seq <= theirs[a] {
				continue
			}
			h, err := s.lowestAbove(ctx, num, t, theirs[a])
			if err != nil {
				return fmt.Errorf("missing: %w", err)
			}
			from = min(from, h)
		}
	}
	var sent uint64
	err = s.scanOrder(ctx, num, from, maxHeight, false, func(pos Position, rec []byte) (bool, error) {
		hdr, env, _, err := parseRecord(rec)
		if err != nil {
			return false, err
		}
		if hdr.seq <= theirs[hdr.author] || hdr.seq > mine[hdr.author].Seq {
			return true, nil
		}
		if err := fn(pos.CID, env); err != nil {
			return false, err
		}
		sent++
		return sent < total, nil
	})
	if err != nil {
		return fmt.Errorf("missing: %w", err)
	}
	return nil
}

// lowestAbove returns the height of the author's block with sequence
// number have+1, walking back from the tip.
func (s *Store) lowestAbove(ctx context.Context, num uint32, tip ChainState, have uint64) (uint64, error) {
	c, seq, h := tip.Last.CID.Bytes(), tip.Seq, tip.Last.Height
	var key []byte
	for seq > have+1 {
		key = orderKey(key[:0], num, h, c)
		rec, err := s.kv.get(ctx, key)
		if err != nil {
			return 0, err
		}
		hdr, _, _, err := parseRecord(rec)
		if err != nil {
			return 0, err
		}
		if hdr.prev == nil {
			return 0, fmt.Errorf("%w: chain ends at seq %d", errBadRecord, seq)
		}
		c, h = hdr.prev, hdr.prevHeight
		seq--
	}
	return h, nil
}
