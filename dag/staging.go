package dag

import (
	"container/list"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
)

// Quota bounds a staging scope by block count and bytes.
type Quota struct {
	Blocks int
	Bytes  int64
}

// StagingLimits bound the staging area, where blocks wait for missing
// parents (invariant I1). When a quota is exceeded the oldest blocks of
// that scope are evicted first; they come back with the next sync.
type StagingLimits struct {
	Total   Quota
	PerDAG  Quota
	PerPeer Quota
}

// stagingOverhead approximates the memory of one staged entry beyond its
// bytes (maps, list elements, decoded fields), so the byte quota also
// bounds memory for tiny blocks.
const stagingOverhead = 512

type stageKey struct {
	dag DAGID
	cid cid.Cid
}

type stagedEntry struct {
	key    stageKey
	from   string
	blk    Block
	size   int64
	waitOn cid.Cid
	elems  [3]*list.Element // in total, per-DAG, per-peer scope
}

type stageScope struct {
	l      list.List
	blocks int
	bytes  int64
}

// staging is the in-memory staging area shared by all DAGs of a store.
//
// It lives in memory, not on disk: staged blocks are unconnected to the
// committed DAG, so persisting them would only let a peer fill the disk,
// and after a crash the next sync re-sends them anyway. Memory is bounded
// by the quotas. Each entry waits on one missing link at a time; when that
// link commits, the store re-checks the entry and either commits it or
// makes it wait on the next missing link.
type staging struct {
	mu      sync.Mutex
	limits  StagingLimits
	total   stageScope
	perDAG  map[DAGID]*stageScope
	perPeer map[string]*stageScope
	entries map[stageKey]*stagedEntry
	waiting map[stageKey]map[*stagedEntry]struct{}
}

func newStaging(l StagingLimits) *staging {
	return &staging{
		limits:  l,
		perDAG:  make(map[DAGID]*stageScope),
		perPeer: make(map[string]*stageScope),
		entries: make(map[stageKey]*stagedEntry),
		waiting: make(map[stageKey]map[*stagedEntry]struct{}),
	}
}

func over(s *stageScope, q Quota) bool {
	return s.blocks > q.Blocks || s.bytes > q.Bytes
}

func fits(size int64, q Quota) bool { return q.Blocks >= 1 && size <= q.Bytes }

// add stages blk, waiting on waitOn. It reports whether the block was
// staged and how many older blocks were evicted to make room.
func (s *staging) add(dag DAGID, from string, blk Block, size int64, waitOn cid.Cid) (staged bool, evicted int) {
	size += stagingOverhead
	if !fits(size, s.limits.Total) || !fits(size, s.limits.PerDAG) || !fits(size, s.limits.PerPeer) {
		return false, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := stageKey{dag, blk.CID}
	if _, ok := s.entries[k]; ok {
		return true, 0
	}
	e := &stagedEntry{key: k, from: from, blk: blk, size: size, waitOn: waitOn}
	ds := s.perDAG[dag]
	if ds == nil {
		ds = &stageScope{}
		s.perDAG[dag] = ds
	}
	ps := s.perPeer[from]
	if ps == nil {
		ps = &stageScope{}
		s.perPeer[from] = ps
	}
	for i, sc := range [3]*stageScope{&s.total, ds, ps} {
		e.elems[i] = sc.l.PushBack(e)
		sc.blocks++
		sc.bytes += size
	}
	s.entries[k] = e
	w := s.waiting[stageKey{dag, waitOn}]
	if w == nil {
		w = make(map[*stagedEntry]struct{})
		s.waiting[stageKey{dag, waitOn}] = w
	}
	w[e] = struct{}{}

	// Evict oldest first, narrowest scope first: a flooding peer loses its
	// own oldest blocks before it can push out anyone else's.
	for over(ps, s.limits.PerPeer) {
		s.removeLocked(ps.l.Front().Value.(*stagedEntry))
		evicted++
	}
	for over(ds, s.limits.PerDAG) {
		s.removeLocked(ds.l.Front().Value.(*stagedEntry))
		evicted++
	}
	for over(&s.total, s.limits.Total) {
		s.removeLocked(s.total.l.Front().Value.(*stagedEntry))
		evicted++
	}
	_, staged = s.entries[k]
	return staged, evicted
}

func (s *staging) removeLocked(e *stagedEntry) {
	if s.entries[e.key] != e {
		return
	}
	delete(s.entries, e.key)
	scopes := [3]*stageScope{&s.total, s.perDAG[e.key.dag], s.perPeer[e.from]}
	for i, sc := range scopes {
		sc.l.Remove(e.elems[i])
		sc.blocks--
		sc.bytes -= e.size
	}
	if scopes[1].blocks == 0 {
		delete(s.perDAG, e.key.dag)
	}
	if scopes[2].blocks == 0 {
		delete(s.perPeer, e.from)
	}
	wk := stageKey{e.key.dag, e.waitOn}
	if w := s.waiting[wk]; w != nil {
		delete(w, e)
		if len(w) == 0 {
			delete(s.waiting, wk)
		}
	}
}

// takeWaiting removes and returns the entries of dag waiting on c, in
// display order (deterministic, and topological among themselves).
func (s *staging) takeWaiting(dag DAGID, c cid.Cid) []*stagedEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.waiting[stageKey{dag, c}]
	if len(w) == 0 {
		return nil
	}
	out := make([]*stagedEntry, 0, len(w))
	for e := range w {
		out = append(out, e)
	}
	for _, e := range out {
		s.removeLocked(e)
	}
	slices.SortFunc(out, func(a, b *stagedEntry) int { return CompareBlocks(&a.blk, &b.blk) })
	return out
}

// has reports whether a block is staged.
func (s *staging) has(dag DAGID, c cid.Cid) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.entries[stageKey{dag, c}]
	return ok
}

// stats returns the staged block count and bytes for dag (all DAGs when
// dag is empty).
func (s *staging) stats(dag DAGID) (blocks int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dag == "" {
		return s.total.blocks, s.total.bytes
	}
	if sc := s.perDAG[dag]; sc != nil {
		return sc.blocks, sc.bytes
	}
	return 0, 0
}
