package catchup

// What the engine's tests run against: an in-memory store of made-up
// envelopes (fakeStore), penalty and session logs, and a side of a session
// (a loopback host with an engine over a fake store).

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// fakeStore is an in-memory Source and Sink. A DAG is an
// ordered list of envelopes; an envelope is
//
//	author (32 bytes) | seq (8) | ndeps (1) | ndeps × (author (32) | seq (8)) | payload
//
// and depends on (author, seq-1) and on every listed (author, seq): its
// parents. The per-author highest seq is the Hello's vector, which (the
// store being downward-closed) describes the store exactly, as in dag.
type fakeStore struct {
	mu   sync.Mutex
	dags map[string]*fakeDAG
	// failIngest, if set, is returned by Ingest.
	failIngest error
	ingests    int
	// refused names peers Summary will not sync with.
	refused map[peer.ID]bool
}

type fakeDAG struct {
	envs [][]byte
	vec  map[string]uint64
}

func newFakeStore() *fakeStore { return &fakeStore{dags: map[string]*fakeDAG{}} }

func fakeAuthor(name string) string { return fmt.Sprintf("%-32s", name) }

func (s *fakeStore) dag(id string) *fakeDAG {
	d := s.dags[id]
	if d == nil {
		d = &fakeDAG{vec: map[string]uint64{}}
		s.dags[id] = d
	}
	return d
}

// write appends n envelopes by author of payload size at least size, each
// depending on the author's previous one and on every other author's tip.
func (s *fakeStore) write(id, author string, n, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dag(id)
	a := fakeAuthor(author)
	for range n {
		var deps []string
		for o := range d.vec {
			if o != a {
				deps = append(deps, o)
			}
		}
		slices.Sort(deps)
		seq := d.vec[a] + 1
		env := makeFakeEnv(a, seq, deps, d.vec, size)
		d.envs = append(d.envs, env)
		d.vec[a] = seq
	}
}

func makeFakeEnv(author string, seq uint64, deps []string, vec map[string]uint64, size int) []byte {
	env := make([]byte, 0, 41+40*len(deps)+size)
	env = append(env, author...)
	env = binary.BigEndian.AppendUint64(env, seq)
	env = append(env, byte(len(deps)))
	for _, o := range deps {
		env = append(env, o...)
		env = binary.BigEndian.AppendUint64(env, vec[o])
	}
	for len(env) < cap(env) {
		env = append(env, byte(len(env)))
	}
	return env
}

type fakeEnv struct {
	author string
	seq    uint64
	deps   map[string]uint64
}

func parseFakeEnv(b []byte) (fakeEnv, error) {
	if len(b) < 41 {
		return fakeEnv{}, fmt.Errorf("%w: short envelope", ErrBadPeer)
	}
	e := fakeEnv{author: string(b[:32]), seq: binary.BigEndian.Uint64(b[32:40]), deps: map[string]uint64{}}
	n := int(b[40])
	b = b[41:]
	if len(b) < 40*n {
		return fakeEnv{}, fmt.Errorf("%w: short deps", ErrBadPeer)
	}
	for range n {
		e.deps[string(b[:32])] = binary.BigEndian.Uint64(b[32:40])
		b = b[40:]
	}
	return e, nil
}

func (s *fakeStore) Summary(_ context.Context, p peer.ID, id []byte) (protocol.Hello, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dags[string(id)]
	if !ok || s.refused[p] {
		return protocol.Hello{}, false, nil
	}
	return protocol.Hello{SyncID: id, Vector: maps(d.vec), Count: uint64(len(d.envs))}, true, nil
}

func maps(m map[string]uint64) map[string]uint64 {
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Missing passes envelopes through one reused buffer, as dag's scan does,
// so an engine that keeps the slice instead of copying it breaks.
func (s *fakeStore) Missing(ctx context.Context, _ peer.ID, id []byte, theirs protocol.Hello, fn func([]byte) error) error {
	s.mu.Lock()
	d, ok := s.dags[string(id)]
	var envs [][]byte
	if ok {
		envs = d.envs[:len(d.envs):len(d.envs)] // fixed at the start, as in dag
	}
	s.mu.Unlock()
	var buf []byte
	for _, env := range envs {
		if binary.BigEndian.Uint64(env[32:40]) <= theirs.Vector[string(env[:32])] {
			continue
		}
		buf = append(buf[:0], env...)
		if err := fn(buf); err != nil {
			return fmt.Errorf("fake scan: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Ingest commits a batch in order, refusing (as a bad peer) any envelope
// whose parents are missing and skipping those it already holds.
func (s *fakeStore) Ingest(_ context.Context, _ peer.ID, id []byte, envs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ingests++
	if s.failIngest != nil {
		return s.failIngest
	}
	d := s.dag(string(id))
	for _, b := range envs {
		e, err := parseFakeEnv(b)
		if err != nil {
			return err
		}
		if e.seq <= d.vec[e.author] {
			continue // duplicate
		}
		if e.seq != d.vec[e.author]+1 {
			return fmt.Errorf("%w: %q seq %d before %d", ErrBadPeer, e.author, e.seq, d.vec[e.author]+1)
		}
		for o, seq := range e.deps {
			if d.vec[o] < seq {
				return fmt.Errorf("%w: parent %q/%d missing", ErrBadPeer, o, seq)
			}
		}
		d.envs = append(d.envs, b)
		d.vec[e.author] = e.seq
	}
	return nil
}

func (s *fakeStore) snapshot(id string) (map[string]uint64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dags[id]
	if !ok {
		return nil, 0
	}
	return maps(d.vec), len(d.envs)
}

// set is the DAG's envelopes as a set, for union checks.
func (s *fakeStore) set(id string) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bool{}
	if d, ok := s.dags[id]; ok {
		for _, e := range d.envs {
			m[string(e)] = true
		}
	}
	return m
}

// penaltyLog records penalty callbacks.
type penaltyLog struct {
	mu   sync.Mutex
	hits []string
	ids  []peer.ID
}

func (l *penaltyLog) penalize(p peer.ID, amount float64, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids = append(l.ids, p)
	l.hits = append(l.hits, reason)
}

func (l *penaltyLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.hits)
}

// sessionLog records OnSession callbacks.
type sessionLog struct {
	mu    sync.Mutex
	stats []Stats
	errs  []error
}

func (l *sessionLog) on(_ peer.ID, _ bool, st Stats, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats = append(l.stats, st)
	l.errs = append(l.errs, err)
}

// nth waits for the nth session (from 1) to end and returns its outcome.
func (l *sessionLog) nth(t testing.TB, n int) (Stats, error) {
	t.Helper()
	var st Stats
	var err error
	testsupport.Eventually(t, 5*time.Second, "responder session to end", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.stats) < n {
			return false
		}
		st, err = l.stats[n-1], l.errs[n-1]
		return true
	})
	return st, err
}

// find waits for at least n responder sessions and returns the first that
// matches (the zero stats when none does within the wait).
func (l *sessionLog) find(t testing.TB, n int, match func(Stats) bool) Stats {
	t.Helper()
	var st Stats
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		if len(l.stats) >= n {
			for _, r := range l.stats {
				if match(r) {
					st = r
					l.mu.Unlock()
					return st
				}
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return st
}

type catchupSide struct {
	h   host.Host
	c   *Engine
	st  *fakeStore
	pen *penaltyLog
	log *sessionLog
}

func newCatchupSide(t testing.TB, opts Options) *catchupSide {
	t.Helper()
	s := &catchupSide{h: testsupport.Host(t), st: newFakeStore(), pen: &penaltyLog{}, log: &sessionLog{}}
	if opts.Penalize == nil {
		opts.Penalize = s.pen.penalize
	}
	if opts.OnSession == nil {
		opts.OnSession = s.log.on
	}
	s.c = New(s.h, s.st, s.st, opts)
	t.Cleanup(func() { s.c.Close() })
	return s
}

func catchupPair(t testing.TB, opts Options) (a, b *catchupSide) {
	t.Helper()
	a, b = newCatchupSide(t, opts), newCatchupSide(t, opts)
	testsupport.Connect(t, a.h, b.h)
	return a, b
}

func syncCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
