package dag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// The store side of set reconciliation: a ReconSet per DAG, built from a
// key-only walk of the ordered index (/o keys hold the height and the
// CID, so no record is decoded) and cached until the DAG's block count
// changes. Blocks are only ever added, so the count names the contents.
// Reconciliation is a fallback that runs rarely; rebuilding on demand
// keeps commits free of any extra work.

// reconCacheSize is how many DAGs keep their set cached (a set costs
// about 80 bytes per block: 8 MB at 100k blocks).
const reconCacheSize = 2

// reconCache holds the most recently used sets (Store.recon). The zero
// value is ready.
type reconCache struct {
	mu      sync.Mutex
	entries []reconCacheEntry // most recently used last
}

type reconCacheEntry struct {
	num   uint32
	count uint64
	set   *ReconSet
}

func (c *reconCache) get(num uint32, count uint64) *ReconSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if e.num == num && e.count == count {
			c.entries = append(append(c.entries[:i:i], c.entries[i+1:]...), e)
			return e.set
		}
	}
	return nil
}

func (c *reconCache) put(num uint32, count uint64, set *ReconSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if e.num == num {
			c.entries = append(c.entries[:i:i], c.entries[i+1:]...)
			break
		}
	}
	if len(c.entries) == reconCacheSize {
		c.entries = c.entries[1:]
	}
	c.entries = append(c.entries, reconCacheEntry{num: num, count: count, set: set})
}

// ReconSet returns the committed blocks of dag as a reconciliation set,
// keyed by (height, CID). The set is a snapshot: blocks committed later
// show up in the next call. An unknown DAG gives an empty set.
func (s *Store) ReconSet(ctx context.Context, dag DAGID) (*ReconSet, error) {
	num, ok, _, _, count, err := s.snapshot(ctx, dag)
	if err != nil {
		return nil, err
	}
	if !ok {
		return NewReconSet(nil), nil
	}
	if set := s.recon.get(num, count); set != nil {
		return set, nil
	}
	var b reconSetBuilder
	b.s.heights = make([]uint64, 0, count)
	b.s.offs = make([]uint32, 1, count+1)
	b.s.ids = make([]byte, 0, count*uint64(cidLen))
	b.s.sums = make([][4]uint64, 1, count+1)
	prefix := dagPrefix('o', num)
	var last ReconItem
	err = s.kv.scan(ctx, prefix, true, false, func(k, _ []byte) (bool, error) {
		// k = prefix '/' bucket(8) '/' pack7(low(2) cid)
		lc := lastComponent(k)
		bstart := len(k) - len(lc) - 1 - bucketLen
		if bstart < len(prefix)+1 {
			return false, fmt.Errorf("%w: order key", errBadRecord)
		}
		raw, ok := unpack7(lc, 2+cidLen)
		if !ok {
			return false, fmt.Errorf("%w: order key", errBadRecord)
		}
		var bucket uint64
		for _, c := range k[bstart : bstart+bucketLen] {
			bucket = bucket<<7 | uint64(c&0x7f)
		}
		it := ReconItem{Height: bucket<<bucketBits | uint64(binary.BigEndian.Uint16(raw[:2])), ID: raw[2:]}
		if len(b.s.heights) > 0 && compareItems(last, it) >= 0 {
			return false, fmt.Errorf("%w: order keys out of order", errBadRecord)
		}
		b.add(it.Height, it.ID)
		last = it
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconciliation set of %q: %w", dag, err)
	}
	set := b.finish()
	s.recon.put(num, count, set)
	return set, nil
}

// EnvelopesAt calls fn with the envelope of each committed block of dag
// named by items (height and CID bytes), in the order given; pass them in
// key order for a topological stream. Items not held are skipped. env is
// only valid during the call; an error from fn stops the walk and is
// returned wrapped.
func (s *Store) EnvelopesAt(ctx context.Context, dag DAGID, items []ReconItem, fn func(env []byte) error) error {
	num, ok, _, _, _, err := s.snapshot(ctx, dag)
	if err != nil || !ok {
		return err
	}
	var key []byte
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(it.ID) != cidLen {
			continue
		}
		key = orderKey(key[:0], num, it.Height, it.ID)
		rec, err := s.kv.get(ctx, key)
		if err != nil {
			if errors.Is(err, errKVNotFound) {
				continue
			}
			return fmt.Errorf("envelopes: %w", err)
		}
		_, env, _, err := parseRecord(rec)
		if err != nil {
			return fmt.Errorf("envelopes: %w", err)
		}
		if err := fn(env); err != nil {
			return fmt.Errorf("envelopes: %w", err)
		}
	}
	return nil
}
