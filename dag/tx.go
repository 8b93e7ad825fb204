package dag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Batch size estimate per block beyond its envelope and inner bytes (two
// keys, the record header, the index value, pebble's per-entry overhead),
// and per transaction (heads, vector, count).
const (
	txOverheadPerBlock = 256
	txOverheadFixed    = 4 << 10
)

// txBlock is what a transaction remembers about a block it committed, for
// links and chain walks within the same batch.
type txBlock struct {
	ref        Ref
	seq        uint64
	prev       cid.Cid
	prevHeight uint64
}

// tx accumulates the commits of one AddBatch or Append in a datastore
// batch plus an overlay of the in-memory indexes. The DAG lock is held
// for its whole life. Nothing in dagState changes until the batch commits.
type tx struct {
	s   *Store
	st  *dagState
	ctx context.Context

	batch     kvBatch
	sealBuf   []byte // the sealed inner block of the record being written
	sizeHint  int
	expect    int // blocks expected, to size Committed
	num       uint32
	newNum    bool
	added     map[cid.Cid]txBlock
	headsAdd  map[cid.Cid]Ref
	headsDel  map[cid.Cid]struct{}
	vec       map[DeviceID]ChainState
	evidence  map[DeviceID]int
	maxHeight uint64
	taken     []*stagedEntry // removed from staging; restaged on abort
	once      []byte         // AppendOnce: idempotency key of the block
	onceCID   cid.Cid
	buf       []byte
	kbuf      []byte
	res       AddResult
}

// newTx starts a transaction for about n blocks of about bytes bytes.
func (s *Store) newTx(ctx context.Context, st *dagState, n, bytes int) *tx {
	return &tx{
		s: s, st: st, ctx: ctx, num: st.num,
		sizeHint:  bytes + n*txOverheadPerBlock + txOverheadFixed,
		expect:    n,
		added:     make(map[cid.Cid]txBlock, n),
		headsAdd:  make(map[cid.Cid]Ref),
		headsDel:  make(map[cid.Cid]struct{}),
		vec:       make(map[DeviceID]ChainState),
		evidence:  make(map[DeviceID]int),
		maxHeight: st.maxHeight,
	}
}

func (t *tx) ensureBatch() error {
	if t.batch != nil {
		return nil
	}
	if !t.st.persisted && !t.newNum {
		t.s.mu.Lock()
		t.num = t.s.nextNum
		t.s.nextNum++
		t.s.mu.Unlock()
		if t.num >= 1<<(7*dagNumLen) {
			return errors.New("dag store: too many DAGs")
		}
		t.newNum = true
	}
	b, err := t.s.kv.newBatch(t.ctx, t.sizeHint)
	if err != nil {
		return fmt.Errorf("dag store: batch: %w", err)
	}
	t.batch = b
	return nil
}

func (t *tx) tip(a DeviceID) ChainState {
	if v, ok := t.vec[a]; ok {
		return v
	}
	return t.st.vector[a]
}

// lookup returns the height and Lamport clock of committed block c.
func (t *tx) lookup(c cid.Cid) (Ref, bool, error) {
	if b, ok := t.added[c]; ok {
		return b.ref, true, nil
	}
	if r, ok := t.st.heads[c]; ok {
		return r, true, nil
	}
	if !t.st.persisted {
		return Ref{}, false, nil
	}
	t.kbuf = cidKey(t.kbuf[:0], t.num, c.KeyString())
	v, err := t.s.kv.get(t.ctx, t.kbuf)
	if errors.Is(err, errKVNotFound) {
		return Ref{}, false, nil
	}
	if err != nil {
		return Ref{}, false, fmt.Errorf("dag store: lookup %s: %w", c, err)
	}
	h, l, err := parseMeta(v)
	if err != nil {
		return Ref{}, false, err
	}
	return Ref{CID: c, Height: h, Lamport: l}, true, nil
}

func (t *tx) reject(c cid.Cid, err error) {
	t.res.Rejected = append(t.res.Rejected, Rejection{CID: c, Err: err})
}

// offer processes one block and, transitively, the staged blocks it
// completes. Only datastore failures are returned as errors.
func (t *tx) offer(b *Block, from string) error {
	committed, err := t.offerOne(b, from)
	if err != nil || !committed {
		return err
	}
	var queue []*stagedEntry
	for c := b.CID; ; {
		if c.Defined() {
			for _, child := range t.s.staging.takeWaiting(t.st.id, c) {
				t.taken = append(t.taken, child)
				queue = append(queue, child)
			}
		}
		if len(queue) == 0 {
			return nil
		}
		e := queue[0]
		queue = queue[1:]
		committed, err := t.offerOne(&e.blk, e.from)
		if err != nil {
			return err
		}
		c = cid.Undef
		if committed {
			c = e.blk.CID
		}
	}
}

func (t *tx) offerOne(b *Block, from string) (committed bool, err error) {
	in := &b.Inner
	envBytes, innerBytes, err := blockBytes(b)
	if err != nil {
		t.reject(b.CID, err)
		return false, nil
	}
	a := in.Author
	tip := t.tip(a)
	if in.Seq <= tip.Seq {
		_, have, err := t.lookup(b.CID)
		if err != nil {
			return false, err
		}
		if have {
			t.res.Duplicates++
			return false, nil
		}
		return false, t.equivocation(b, envBytes, innerBytes, tip)
	}

	var maxH, maxL uint64
	for i := 0; i <= len(in.Parents); i++ {
		var l cid.Cid
		if i < len(in.Parents) {
			l = in.Parents[i]
		} else if l = in.Prev; !l.Defined() {
			break
		}
		var r Ref
		var ok bool
		if l == tip.Last.CID && l.Defined() {
			// Prev of the author's next block: the tip, known without a read.
			r, ok = tip.Last, true
		} else if r, ok, err = t.lookup(l); err != nil {
			return false, err
		}
		if !ok {
			staged, evicted := t.s.staging.add(t.st.id, from, *b, int64(len(envBytes)+len(innerBytes)), l)
			t.res.Evicted += evicted
			if staged {
				t.res.Staged = append(t.res.Staged, b.CID)
			} else {
				t.res.Dropped = append(t.res.Dropped, b.CID)
			}
			return false, nil
		}
		maxH, maxL = max(maxH, r.Height), max(maxL, r.Lamport)
	}
	if in.Height != maxH+1 || in.Lamport != maxL+1 {
		t.reject(b.CID, fmt.Errorf("block %s claims height %d lamport %d, links give %d and %d: %w",
			b.CID, in.Height, in.Lamport, maxH+1, maxL+1, ErrBadHeight))
		return false, nil
	}
	if in.Seq != tip.Seq+1 || (in.Seq > 1 && in.Prev != tip.Last.CID) {
		t.reject(b.CID, fmt.Errorf("block %s seq %d prev %s, author's chain is at seq %d (%s): %w",
			b.CID, in.Seq, in.Prev, tip.Seq, tip.Last.CID, ErrBadSeq))
		return false, nil
	}

	if err := t.ensureBatch(); err != nil {
		return false, err
	}
	cb := b.CID.KeyString()
	var prevHeight uint64
	if in.Prev.Defined() {
		prevHeight = tip.Last.Height
	}
	t.buf = appendMeta(t.buf[:0], in.Height, in.Lamport)
	t.kbuf = cidKey(t.kbuf[:0], t.num, cb)
	if err := t.batch.put(t.kbuf, t.buf); err != nil {
		return false, fmt.Errorf("dag store: put: %w", err)
	}
	t.kbuf = orderKey(t.kbuf[:0], t.num, in.Height, cb)
	version := byte(recordVersion)
	if rc := t.s.opts.Records; rc != nil {
		t.sealBuf = rc.SealInner(t.sealBuf[:0], envBytes, innerBytes)
		innerBytes, version = t.sealBuf, recordVersionSealed
	}
	if err := t.batch.putRecord(t.kbuf, in, prevHeight, envBytes, innerBytes, version); err != nil {
		return false, fmt.Errorf("dag store: put: %w", err)
	}
	ref := Ref{CID: b.CID, Height: in.Height, Lamport: in.Lamport}
	t.added[b.CID] = txBlock{ref: ref, seq: in.Seq, prev: in.Prev, prevHeight: prevHeight}
	for i := 0; i <= len(in.Parents); i++ {
		var l cid.Cid
		if i < len(in.Parents) {
			l = in.Parents[i]
		} else if l = in.Prev; !l.Defined() {
			break
		}
		if _, ok := t.headsAdd[l]; ok {
			delete(t.headsAdd, l)
		} else if _, ok := t.st.heads[l]; ok {
			t.headsDel[l] = struct{}{}
		}
	}
	t.headsAdd[b.CID] = ref
	t.vec[a] = ChainState{Seq: in.Seq, Last: ref}
	t.maxHeight = max(t.maxHeight, in.Height)
	if t.res.Committed == nil {
		t.res.Committed = make([]Block, 0, t.expect)
	}
	t.res.Committed = append(t.res.Committed, *b)
	return true, nil
}

// blockBytes returns the block's canonical envelope and inner encodings,
// checking the CID, the caps and the structure.
func blockBytes(b *Block) (env, inner []byte, err error) {
	if env, err = b.EnvelopeBytes(); err != nil {
		return nil, nil, err
	}
	if b.envBytes == nil && EnvelopeCID(env) != b.CID {
		// Blocks from OpenBlock or Build carry the bytes their CID was
		// computed from; anything else is hashed here.
		return nil, nil, fmt.Errorf("block %s: %w", b.CID, ErrCIDMismatch)
	}
	if len(env) > MaxEnvelopeSize {
		return nil, nil, fmt.Errorf("block %s: envelope of %d bytes: %w", b.CID, len(env), ErrTooLarge)
	}
	if err := checkInner(&b.Inner, true); err != nil {
		return nil, nil, fmt.Errorf("block %s: %w", b.CID, err)
	}
	if inner, err = b.InnerBytes(); err != nil {
		return nil, nil, fmt.Errorf("block %s: %w", b.CID, err)
	}
	if len(inner) > MaxInnerSize {
		return nil, nil, fmt.Errorf("block %s: inner of %d bytes: %w", b.CID, len(inner), ErrTooLarge)
	}
	return env, inner, nil
}

// equivocation records that b conflicts with the author's committed block
// at the same sequence number.
func (t *tx) equivocation(b *Block, env, inner []byte, tip ChainState) error {
	a, seq := b.Inner.Author, b.Inner.Seq
	existing, err := t.findBySeq(a, seq, tip)
	if err != nil {
		return err
	}
	e := &EquivocationError{DAG: t.st.id, Author: a, Seq: seq, Existing: existing, Conflicting: b.CID}
	t.res.Equivocations = append(t.res.Equivocations, e)
	if t.st.evidence[a]+t.evidence[a] >= t.s.opts.MaxEvidencePerAuthor {
		return nil
	}
	if err := t.ensureBatch(); err != nil {
		return err
	}
	k := evidenceKey(nil, t.num, a, seq)
	if t.st.persisted {
		if has, err := t.s.kv.has(t.ctx, k); err != nil {
			return fmt.Errorf("dag store: evidence: %w", err)
		} else if has {
			return nil // keep the first evidence for this sequence number
		}
	}
	if err := t.batch.put(k, appendEvidence(nil, existing, b.CID, env, inner)); err != nil {
		return fmt.Errorf("dag store: evidence: %w", err)
	}
	t.evidence[a]++
	return nil
}

// findBySeq walks the author's chain back from its tip to the committed
// block with sequence number seq. The walk reads one record per step; it
// runs only when an equivocation is detected.
func (t *tx) findBySeq(a DeviceID, seq uint64, tip ChainState) (cid.Cid, error) {
	cur, curSeq, curHeight := tip.Last.CID, tip.Seq, tip.Last.Height
	for curSeq > seq {
		if err := t.ctx.Err(); err != nil {
			return cid.Undef, err
		}
		if b, ok := t.added[cur]; ok {
			cur, curHeight = b.prev, b.prevHeight
			curSeq--
			continue
		}
		rec, err := t.s.kv.get(t.ctx, orderKey(nil, t.num, curHeight, cur.KeyString()))
		if err != nil {
			return cid.Undef, fmt.Errorf("dag store: walk chain of %s: %w", a, err)
		}
		h, _, _, err := parseRecord(rec)
		if err != nil {
			return cid.Undef, err
		}
		if h.prev == nil || h.author != a {
			return cid.Undef, fmt.Errorf("%w: chain of %s broken at seq %d", errBadRecord, a, curSeq)
		}
		if cur, err = cid.Cast(h.prev); err != nil {
			return cid.Undef, fmt.Errorf("%w: %w", errBadRecord, err)
		}
		curHeight = h.prevHeight
		curSeq--
	}
	return cur, nil
}

// abort discards the transaction: staged blocks it took are staged again.
func (t *tx) abort() {
	if t.batch != nil {
		t.batch.discard()
		t.batch = nil
	}
	for _, e := range t.taken {
		t.s.staging.add(e.key.dag, e.from, e.blk, e.size-stagingOverhead, e.waitOn)
	}
	t.taken = nil
}

// commit writes the index deltas and commits the batch; on success it
// advances the in-memory state. With sync it also makes the write durable
// (own blocks must be on disk before they are published).
func (t *tx) commit(sync bool) error {
	if t.batch == nil {
		return nil
	}
	st := t.st
	put := func(k, v []byte) error {
		if err := t.batch.put(k, v); err != nil {
			return fmt.Errorf("dag store: put: %w", err)
		}
		return nil
	}
	if t.newNum {
		if err := put(dagNameKey(t.kbuf[:0], st.id), binary.AppendUvarint(t.buf[:0], uint64(t.num))); err != nil {
			return t.fail(err)
		}
	}
	for c := range t.headsDel {
		t.kbuf = headKey(t.kbuf[:0], t.num, c.KeyString())
		if err := t.batch.del(t.kbuf); err != nil {
			return t.fail(fmt.Errorf("dag store: delete: %w", err))
		}
	}
	for c, r := range t.headsAdd {
		t.kbuf = headKey(t.kbuf[:0], t.num, c.KeyString())
		t.buf = appendMeta(t.buf[:0], r.Height, r.Lamport)
		if err := put(t.kbuf, t.buf); err != nil {
			return t.fail(err)
		}
	}
	for a, v := range t.vec {
		t.kbuf = vectorKey(t.kbuf[:0], t.num, a)
		t.buf = appendTip(t.buf[:0], v)
		if err := put(t.kbuf, t.buf); err != nil {
			return t.fail(err)
		}
	}
	if t.once != nil {
		if err := put(onceKey(t.kbuf[:0], t.num, t.once), t.onceCID.Bytes()); err != nil {
			return t.fail(err)
		}
	}
	count := st.count + uint64(len(t.added))
	if len(t.added) > 0 {
		if err := put(countKey(t.kbuf[:0], t.num), binary.AppendUvarint(t.buf[:0], count)); err != nil {
			return t.fail(err)
		}
	}
	b := t.batch
	t.batch = nil
	if err := b.commit(sync); err != nil {
		return t.fail(fmt.Errorf("dag store: %w", err))
	}
	st.num, st.persisted = t.num, true
	for c := range t.headsDel {
		delete(st.heads, c)
	}
	for c, r := range t.headsAdd {
		st.heads[c] = r
	}
	for a, v := range t.vec {
		st.vector[a] = v
	}
	for a, n := range t.evidence {
		st.evidence[a] += n
	}
	st.count, st.maxHeight = count, t.maxHeight
	return nil
}

// fail handles a failed write: the batch may or may not have reached the
// disk, so the in-memory state is dropped and reloaded from the datastore
// on next use rather than guessed. Staged blocks taken by this
// transaction go back to staging.
func (t *tx) fail(err error) error {
	t.st.loaded = false
	t.abort()
	return err
}
