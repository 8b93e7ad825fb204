package dag

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// DAGID identifies a DAG (a conversation or the account) in the store.
// It is opaque bytes held in a string, 1 to MaxDAGIDLen bytes.
type DAGID string

// MaxDAGIDLen caps the length of a DAGID.
const MaxDAGIDLen = 128

// Options configure a Store. The zero value is not useful; start from
// DefaultOptions.
type Options struct {
	// Staging bounds the in-memory staging area.
	Staging StagingLimits
	// MaxEvidencePerAuthor caps the equivocation records persisted per
	// author and DAG; further equivocations are still reported as errors.
	MaxEvidencePerAuthor int
	// Records, when set, seals each block's inner bytes at rest: the
	// store then holds no inner block in the clear (a stolen disk gives
	// no message, name or title), only envelopes, which are sealed
	// already, and the record headers (author, seq, Lamport clock).
	// Records written without it still read.
	Records RecordCipher
}

// RecordCipher seals inner blocks at rest, each bound to its envelope (a
// sealed inner moved under another block does not open). The node's
// implementation is keyring.RecordCipher, under the store key.
type RecordCipher interface {
	// SealInner appends inner, sealed and bound to env, to dst.
	SealInner(dst, env, inner []byte) []byte
	// OpenInner opens what SealInner sealed under the same env.
	OpenInner(env, sealed []byte) ([]byte, error)
	// Overhead is how many bytes SealInner adds.
	Overhead() int
}

// DefaultOptions returns the defaults: a 64 MiB / 20,000-block staging
// area, 16 MiB / 5,000 blocks per DAG and 8 MiB / 2,000 blocks per peer,
// and 8 evidence records per author and DAG.
func DefaultOptions() Options {
	return Options{
		Staging: StagingLimits{
			Total:   Quota{Blocks: 20_000, Bytes: 64 << 20},
			PerDAG:  Quota{Blocks: 5_000, Bytes: 16 << 20},
			PerPeer: Quota{Blocks: 2_000, Bytes: 8 << 20},
		},
		MaxEvidencePerAuthor: 8,
	}
}

// Store keeps block DAGs in a go-datastore, each DAG downward-closed: a
// block is committed only after its parents and Prev, with its height and
// Lamport clock computed locally, and at most one block per author and
// sequence number. Blocks given to the store must already be opened and
// authenticated (OpenBlock, then VerifySignature or PlanVerification).
//
// A Store is safe for concurrent use; operations on one DAG are
// serialised, different DAGs proceed in parallel. The store does not own
// the datastore; closing it is the caller's job.
type Store struct {
	kv      kvStore
	opts    Options
	staging *staging

	mu      sync.Mutex
	dags    map[DAGID]*dagState
	nextNum uint32

	recon reconCache // reconciliation sets (reconcile_store.go)
}

// dagState is the in-memory index of one DAG: heads, per-author tips and
// counters, loaded from their own records on first use. It is only
// advanced after a datastore batch commits.
type dagState struct {
	mu        sync.Mutex
	id        DAGID
	loaded    bool
	num       uint32
	persisted bool // the DAG's name record exists
	heads     map[cid.Cid]Ref
	vector    map[DeviceID]ChainState
	count     uint64
	maxHeight uint64
	evidence  map[DeviceID]int
}

// Open returns a store over d, reading the DAG directory. DAG indexes are
// loaded lazily on first use.
//
// When d is a go-ds-pebble datastore, bare or wrapped once by
// go-datastore's namespace.Wrap, the store bypasses go-datastore and
// reads and writes the same keys directly in the underlying pebble
// database (see OpenPebble); any other datastore is used through its
// go-datastore interface. Either way the stored bytes are the same.
func Open(ctx context.Context, d ds.Batching, opts Options) (*Store, error) {
	if p, ok := pebbleFastPath(d); ok {
		return open(ctx, p, opts)
	}
	return open(ctx, dsKV{d: d}, opts)
}

// OpenPebble returns a store that keeps its keys directly in db, each
// prefixed by prefix. The layout is the one Open writes through
// go-datastore: a go-ds-pebble datastore over db wrapped by
// namespace.Wrap(d, ds.NewKey(prefix)) holds the same keys, so the two
// are interchangeable (prefix "" for an unwrapped datastore). Batches
// are written without a WAL sync except for Append, which syncs the WAL
// (and so fails if db's WAL is disabled; Open over a go-ds-pebble
// datastore syncs as that datastore does instead). The store does not
// own db.
func OpenPebble(ctx context.Context, db *pebble.DB, prefix string, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("open dag store: nil pebble db")
	}
	if prefix != "" {
		prefix = ds.NewKey(prefix).String()
	}
	return open(ctx, &pebbleKV{db: db, prefix: []byte(prefix)}, opts)
}

func open(ctx context.Context, k kvStore, opts Options) (*Store, error) {
	s := &Store{kv: k, opts: opts, staging: newStaging(opts.Staging), dags: make(map[DAGID]*dagState)}
	err := k.scan(ctx, []byte("/m/d"), false, false, func(_, v []byte) (bool, error) {
		num, n := binary.Uvarint(v)
		if n <= 0 || num >= 1<<(7*dagNumLen) {
			return false, fmt.Errorf("%w: dag number", errBadRecord)
		}
		s.nextNum = max(s.nextNum, uint32(num)+1)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("open dag store: %w", err)
	}
	return s, nil
}

// lockDAG returns the locked, loaded state of dag. The caller unlocks.
func (s *Store) lockDAG(ctx context.Context, dag DAGID) (*dagState, error) {
	if len(dag) == 0 || len(dag) > MaxDAGIDLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalidDAGID, len(dag))
	}
	s.mu.Lock()
	st := s.dags[dag]
	if st == nil {
		st = &dagState{id: dag}
		s.dags[dag] = st
	}
	s.mu.Unlock()
	st.mu.Lock()
	if !st.loaded {
		if err := s.load(ctx, st); err != nil {
			st.mu.Unlock()
			return nil, fmt.Errorf("load dag: %w", err)
		}
	}
	return st, nil
}

// load reads a DAG's heads, vector, count and evidence counts: a few
// records, independent of the number of blocks.
func (s *Store) load(ctx context.Context, st *dagState) error {
	st.heads = make(map[cid.Cid]Ref)
	st.vector = make(map[DeviceID]ChainState)
	st.evidence = make(map[DeviceID]int)
	st.count, st.maxHeight, st.persisted, st.num = 0, 0, false, 0
	v, err := s.kv.get(ctx, dagNameKey(nil, st.id))
	if errors.Is(err, errKVNotFound) {
		st.loaded = true
		return nil
	}
	if err != nil {
		return err
	}
	num, n := binary.Uvarint(v)
	if n <= 0 || num >= 1<<(7*dagNumLen) {
		return fmt.Errorf("%w: dag number", errBadRecord)
	}
	st.num, st.persisted = uint32(num), true

	if err := s.queryEach(ctx, dagPrefix('h', st.num), false, func(k, v []byte) error {
		cb, ok := unpack7(lastComponent(k), cidLen)
		if !ok {
			return fmt.Errorf("%w: head key", errBadRecord)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return fmt.Errorf("%w: head cid: %w", errBadRecord, err)
		}
		h, l, err := parseMeta(v)
		if err != nil {
			return err
		}
		st.heads[c] = Ref{CID: c, Height: h, Lamport: l}
		st.maxHeight = max(st.maxHeight, h)
		return nil
	}); err != nil {
		return err
	}
	if err := s.queryEach(ctx, dagPrefix('v', st.num), false, func(k, v []byte) error {
		ab, ok := unpack7(lastComponent(k), 32)
		if !ok {
			return fmt.Errorf("%w: vector key", errBadRecord)
		}
		t, err := parseTip(v)
		if err != nil {
			return err
		}
		st.vector[DeviceID(ab)] = t
		return nil
	}); err != nil {
		return err
	}
	if err := s.queryEach(ctx, dagPrefix('e', st.num), true, func(k, _ []byte) error {
		eb, ok := unpack7(lastComponent(k), 40)
		if !ok {
			return fmt.Errorf("%w: evidence key", errBadRecord)
		}
		st.evidence[DeviceID(eb[:32])]++
		return nil
	}); err != nil {
		return err
	}
	cv, err := s.kv.get(ctx, countKey(nil, st.num))
	switch {
	case errors.Is(err, errKVNotFound):
	case err != nil:
		return err
	default:
		if st.count, n = binary.Uvarint(cv); n <= 0 {
			return fmt.Errorf("%w: count", errBadRecord)
		}
	}
	st.loaded = true
	return nil
}

// queryEach runs a prefix query in key order and calls fn per entry; k
// and v are only valid during the call.
func (s *Store) queryEach(ctx context.Context, prefix []byte, keysOnly bool, fn func(k, v []byte) error) error {
	return s.kv.scan(ctx, prefix, keysOnly, false, func(k, v []byte) (bool, error) {
		return true, fn(k, v)
	})
}

// AddResult reports what AddBatch did with each block.
type AddResult struct {
	// Committed lists the newly committed blocks in commit order, which is
	// topological: the given blocks and any staged blocks they completed.
	Committed []Block
	// Staged lists blocks parked until their missing links arrive.
	Staged []cid.Cid
	// Duplicates counts blocks that were already committed.
	Duplicates int
	// Rejected lists invalid blocks (ErrBadHeight, ErrBadSeq, ErrTooLarge,
	// ErrTooManyParents, ErrCIDMismatch, ...), including staged blocks
	// found invalid once their links arrived.
	Rejected []Rejection
	// Equivocations lists conflicting blocks that were refused; the
	// evidence is recorded (see Store.Equivocations).
	Equivocations []*EquivocationError
	// Dropped lists blocks that could not be staged (larger than a
	// staging quota); a later sync brings them again.
	Dropped []cid.Cid
	// Evicted counts staged blocks evicted to make room.
	Evicted int
}

// Rejection is an invalid block and why.
type Rejection struct {
	CID cid.Cid
	Err error
}

// Add adds one block; see AddBatch.
func (s *Store) Add(ctx context.Context, dag DAGID, from string, b Block) (AddResult, error) {
	return s.AddBatch(ctx, dag, from, []Block{b})
}

// AddBatch adds opened, authenticated blocks received from peer from (any
// string naming the peer, for staging quotas). Blocks whose links are all
// committed are validated and committed; the others are staged and
// committed automatically, in topological order, once their links
// arrive. All commits of one call go into one datastore batch: if it
// fails, nothing is committed, the in-memory indexes stay where they were
// and the error is returned; retrying the call is safe.
//
// Invalid blocks are reported in the result, not as the error, which is
// reserved for datastore failures.
func (s *Store) AddBatch(ctx context.Context, dag DAGID, from string, blocks []Block) (AddResult, error) {
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return AddResult{}, err
	}
	defer st.mu.Unlock()
	size := 0
	for i := range blocks {
		size += len(blocks[i].envBytes) + len(blocks[i].innerBytes)
	}
	t := s.newTx(ctx, st, len(blocks), size)
	// Offer in claimed display order so that an honest batch (sent in
	// topological order or not) commits without touching staging. Claimed
	// heights are only a hint here; they are verified at commit.
	sorted := true
	for i := 1; i < len(blocks) && sorted; i++ {
		sorted = CompareBlocks(&blocks[i-1], &blocks[i]) <= 0
	}
	var order []int
	if !sorted {
		order = make([]int, len(blocks))
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(i, j int) int { return CompareBlocks(&blocks[i], &blocks[j]) })
	}
	for k := range blocks {
		i := k
		if !sorted {
			i = order[k]
		}
		if err := t.offer(&blocks[i], from); err != nil {
			t.abort()
			return AddResult{}, err
		}
	}
	if err := t.commit(false); err != nil {
		return AddResult{}, err
	}
	return t.res, nil
}

// Author is what Append needs to make a device's own blocks.
type Author struct {
	Signer Signer
	Sealer Sealer
	// Cert is the device certificate, included in the device's first block
	// of each DAG.
	Cert []byte
}

// Append builds the device's next block in dag on top of the current
// heads (the MaxParents oldest if there are more), commits it and syncs
// the datastore, and only then returns it for publishing. If any step
// fails no block is returned and the sequence number is not consumed, so
// a crash can never make the device publish two blocks with one sequence
// number.
func (s *Store) Append(ctx context.Context, dag DAGID, au Author, body []byte, now time.Time) (Block, error) {
	b, _, err := s.AppendOnce(ctx, dag, nil, au, body, now)
	return b, err
}

// MaxOnceKey bounds an idempotency key of AppendOnce.
const MaxOnceKey = 128

// AppendOnce is Append under an idempotency key: the key is committed with
// the block in the same atomic write, and a later AppendOnce with the same
// key in dag returns the block made then (created false) instead of
// building another. So a caller that retries after a lost answer or a
// crash, at any point, makes the block exactly once. A nil key is Append.
func (s *Store) AppendOnce(ctx context.Context, dag DAGID, key []byte, au Author, body []byte, now time.Time) (b Block, created bool, err error) {
	if len(key) > MaxOnceKey {
		return Block{}, false, fmt.Errorf("append: idempotency key of %d bytes > %d", len(key), MaxOnceKey)
	}
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return Block{}, false, err
	}
	defer st.mu.Unlock()
	if key != nil && st.persisted {
		c, err := s.onceLookup(ctx, st.num, key)
		if err == nil {
			rec, err := s.getRecord(ctx, st.num, c)
			if err != nil {
				return Block{}, false, fmt.Errorf("append: block %s of the idempotency key: %w", c, err)
			}
			b, err := blockFromRecord(rec, s.opts.Records)
			return b, false, err
		}
		if !errors.Is(err, ErrNotFound) {
			return Block{}, false, err
		}
	}
	b, err = s.appendLocked(ctx, st, key, au, body, now)
	return b, err == nil, err
}

// Once returns the CID of the block appended under key, or ErrNotFound.
func (s *Store) Once(ctx context.Context, dag DAGID, key []byte) (cid.Cid, error) {
	num, ok, _, _, _, err := s.snapshot(ctx, dag)
	if err != nil {
		return cid.Undef, err
	}
	if !ok {
		return cid.Undef, ErrNotFound
	}
	return s.onceLookup(ctx, num, key)
}

func (s *Store) onceLookup(ctx context.Context, num uint32, key []byte) (cid.Cid, error) {
	v, err := s.kv.get(ctx, onceKey(nil, num, key))
	if errors.Is(err, errKVNotFound) {
		return cid.Undef, ErrNotFound
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("idempotency key: %w", err)
	}
	c, err := cid.Cast(v)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: idempotency key names no CID: %w", errBadRecord, err)
	}
	return c, nil
}

func (s *Store) appendLocked(ctx context.Context, st *dagState, key []byte, au Author, body []byte, now time.Time) (Block, error) {
	if au.Signer == nil {
		return Block{}, errors.New("append: nil signer")
	}
	id, err := DeviceIDFromKey(au.Signer.Public())
	if err != nil {
		return Block{}, fmt.Errorf("append: %w", err)
	}
	chain := st.vector[id]
	parents := sortedHeads(st.heads)
	if len(parents) > MaxParents {
		parents = SelectMergeParents(parents)
	}
	var cert []byte
	if chain.Seq == 0 {
		cert = au.Cert
	}
	b, err := Build(BuildParams{Signer: au.Signer, Sealer: au.Sealer, Chain: chain, Parents: parents, Cert: cert, Body: body, Now: now})
	if err != nil {
		return Block{}, fmt.Errorf("append: %w", err)
	}
	t := s.newTx(ctx, st, 1, len(b.envBytes)+len(b.innerBytes))
	if key != nil {
		t.once, t.onceCID = key, b.CID
	}
	if err := t.offer(&b, ""); err != nil {
		t.abort()
		return Block{}, fmt.Errorf("append: %w", err)
	}
	if len(t.res.Committed) != 1 {
		t.abort()
		return Block{}, fmt.Errorf("append: own block not committable: %+v", t.res.Rejected)
	}
	if err := t.commit(true); err != nil {
		return Block{}, fmt.Errorf("append: %w", err)
	}
	return b, nil
}

func sortedHeads(m map[cid.Cid]Ref) []Ref {
	out := make([]Ref, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Ref) int {
		return ComparePositions(Position{a.Height, a.CID}, Position{b.Height, b.CID})
	})
	return out
}

// Heads returns the committed blocks without committed children, in
// display order.
func (s *Store) Heads(ctx context.Context, dag DAGID) ([]Ref, error) {
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return nil, err
	}
	defer st.mu.Unlock()
	return sortedHeads(st.heads), nil
}

// MergeParents returns the parents for a merge block when dag has more
// than MaxParents heads (see SelectMergeParents), or nil.
func (s *Store) MergeParents(ctx context.Context, dag DAGID) ([]Ref, error) {
	heads, err := s.Heads(ctx, dag)
	if err != nil {
		return nil, err
	}
	return SelectMergeParents(heads), nil
}

// Vector returns each author's chain state: highest committed sequence
// number and that block.
func (s *Store) Vector(ctx context.Context, dag DAGID) (map[DeviceID]ChainState, error) {
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return nil, err
	}
	defer st.mu.Unlock()
	out := make(map[DeviceID]ChainState, len(st.vector))
	for k, v := range st.vector {
		out[k] = v
	}
	return out, nil
}

// SeqVector returns each author's highest committed sequence number, the
// summary the sync protocol sends.
func (s *Store) SeqVector(ctx context.Context, dag DAGID) (map[DeviceID]uint64, error) {
	v, err := s.Vector(ctx, dag)
	if err != nil {
		return nil, err
	}
	out := make(map[DeviceID]uint64, len(v))
	for k, t := range v {
		out[k] = t.Seq
	}
	return out, nil
}

// Count returns the number of committed blocks in dag.
func (s *Store) Count(ctx context.Context, dag DAGID) (uint64, error) {
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return 0, err
	}
	defer st.mu.Unlock()
	return st.count, nil
}

// Staged returns the number of blocks and bytes waiting in staging for dag.
func (s *Store) Staged(dag DAGID) (blocks int, bytes int64) { return s.staging.stats(dag) }

// IsStaged reports whether block c of dag waits in staging.
func (s *Store) IsStaged(dag DAGID, c cid.Cid) bool { return s.staging.has(dag, c) }

// snapshot returns the DAG number and a copy of the per-author sequence
// numbers and max height, for scans that run without the DAG lock.
func (s *Store) snapshot(ctx context.Context, dag DAGID) (num uint32, ok bool, vec map[DeviceID]ChainState, maxHeight, count uint64, err error) {
	st, err := s.lockDAG(ctx, dag)
	if err != nil {
		return 0, false, nil, 0, 0, err
	}
	defer st.mu.Unlock()
	vec = make(map[DeviceID]ChainState, len(st.vector))
	for k, v := range st.vector {
		vec[k] = v
	}
	return st.num, st.persisted, vec, st.maxHeight, st.count, nil
}

// Has reports whether block c is committed in dag.
func (s *Store) Has(ctx context.Context, dag DAGID, c cid.Cid) (bool, error) {
	num, ok, _, _, _, err := s.snapshot(ctx, dag)
	if err != nil || !ok {
		return false, err
	}
	has, err := s.kv.has(ctx, cidKey(nil, num, c.KeyString()))
	if err != nil {
		return false, fmt.Errorf("has %s: %w", c, err)
	}
	return has, nil
}

// Get returns committed block c of dag, or ErrNotFound.
func (s *Store) Get(ctx context.Context, dag DAGID, c cid.Cid) (Block, error) {
	num, ok, _, _, _, err := s.snapshot(ctx, dag)
	if err != nil {
		return Block{}, err
	}
	if !ok {
		return Block{}, fmt.Errorf("get %s: %w", c, ErrNotFound)
	}
	rec, err := s.getRecord(ctx, num, c)
	if err != nil {
		return Block{}, fmt.Errorf("get %s: %w", c, err)
	}
	return blockFromRecord(rec, s.opts.Records)
}

func (s *Store) getRecord(ctx context.Context, num uint32, c cid.Cid) ([]byte, error) {
	m, err := s.kv.get(ctx, cidKey(nil, num, c.KeyString()))
	if errors.Is(err, errKVNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	h, _, err := parseMeta(m)
	if err != nil {
		return nil, err
	}
	rec, err := s.kv.get(ctx, orderKey(nil, num, h, c.KeyString()))
	if errors.Is(err, errKVNotFound) {
		return nil, fmt.Errorf("%w: index without record", errBadRecord)
	}
	return rec, err
}

// EquivocationRecord is persisted evidence of an equivocation: the
// committed block and the refused conflicting block, whose envelope and
// inner bytes are kept so the evidence can be shown to others.
type EquivocationRecord struct {
	Author        DeviceID
	Seq           uint64
	Existing      cid.Cid
	Conflicting   cid.Cid
	ConflictEnv   []byte
	ConflictInner []byte
}

// Equivocations returns the recorded equivocation evidence of dag.
func (s *Store) Equivocations(ctx context.Context, dag DAGID) ([]EquivocationRecord, error) {
	num, ok, _, _, _, err := s.snapshot(ctx, dag)
	if err != nil || !ok {
		return nil, err
	}
	var out []EquivocationRecord
	err = s.queryEach(ctx, dagPrefix('e', num), false, func(k, v []byte) error {
		eb, ok := unpack7(lastComponent(k), 40)
		if !ok {
			return fmt.Errorf("%w: evidence key", errBadRecord)
		}
		r, err := parseEvidence(v)
		if err != nil {
			return err
		}
		r.Author = DeviceID(eb[:32])
		r.Seq = binary.BigEndian.Uint64(eb[32:])
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("equivocations: %w", err)
	}
	return out, nil
}

func appendEvidence(dst []byte, existing, conflicting cid.Cid, env, inner []byte) []byte {
	dst = append(dst, existing.Bytes()...)
	dst = append(dst, conflicting.Bytes()...)
	dst = binary.AppendUvarint(dst, uint64(len(env)))
	dst = append(dst, env...)
	return append(dst, inner...)
}

func parseEvidence(v []byte) (EquivocationRecord, error) {
	var r EquivocationRecord
	if len(v) < 2*cidLen {
		return r, fmt.Errorf("%w: evidence", errBadRecord)
	}
	var err error
	if r.Existing, err = cid.Cast(v[:cidLen]); err != nil {
		return r, fmt.Errorf("%w: evidence: %w", errBadRecord, err)
	}
	if r.Conflicting, err = cid.Cast(v[cidLen : 2*cidLen]); err != nil {
		return r, fmt.Errorf("%w: evidence: %w", errBadRecord, err)
	}
	p := v[2*cidLen:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return r, fmt.Errorf("%w: evidence envelope", errBadRecord)
	}
	r.ConflictEnv = bytes.Clone(p[k : k+int(n)])
	r.ConflictInner = bytes.Clone(p[k+int(n):])
	return r, nil
}
