package catchup

// Tests of the reconciliation fallback (version 1.1.0, docs/sync.md §9),
// over a store that can hold any set of envelopes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// setStore is a Source, Reconciler and Sink over an
// arbitrary set of envelopes of one DAG, which need not be downward-closed
// (blocks out of sequence order, both sides of an equivocation): env =
// height (8 bytes) | payload, id = SHA-256(env). Its Hello is whatever the
// test sets (heads and vector may lie), and Missing sends what the test's
// missing picks: the vector path sees only what the test lets it see.
type setStore struct {
	mu      sync.Mutex
	envs    map[string][]byte // id -> env
	hello   protocol.Hello
	missing func(theirs protocol.Hello) [][]byte
	// unordered counts batches not in key (topological) order.
	unordered int
	ingested  int
}

func newSetStore() *setStore { return &setStore{envs: map[string][]byte{}} }

func setEnv(height uint64, payload string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, height), payload...)
}

func setID(env []byte) []byte { h := sha256.Sum256(env); return h[:] }

func (s *setStore) add(envs ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range envs {
		s.envs[string(setID(e))] = e
	}
}

func (s *setStore) ids() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]bool, len(s.envs))
	for id := range s.envs {
		m[id] = true
	}
	return m
}

func (s *setStore) Summary(_ context.Context, _ peer.ID, id []byte) (protocol.Hello, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hello
	h.SyncID = id
	h.Count = uint64(len(s.envs))
	return h, true, nil
}

// set changes what the store claims (its Hello) and sends (missing) under
// its lock: the race detector sees no order in what crosses a socket, so a
// test's plain write before a session races with the engine's read.
func (s *setStore) set(hello *protocol.Hello, missing func(theirs protocol.Hello) [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hello != nil {
		s.hello = *hello
	}
	if missing != nil {
		s.missing = missing
	}
}

func (s *setStore) Missing(_ context.Context, _ peer.ID, _ []byte, theirs protocol.Hello, fn func([]byte) error) error {
	s.mu.Lock()
	missing := s.missing
	s.mu.Unlock()
	if missing == nil {
		return nil
	}
	for _, env := range missing(theirs) {
		if err := fn(env); err != nil {
			return err
		}
	}
	return nil
}

func (s *setStore) Ingest(_ context.Context, _ peer.ID, _ []byte, envs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last []byte
	for _, e := range envs {
		if len(e) < 8 {
			return fmt.Errorf("%w: short envelope", ErrBadPeer)
		}
		if last != nil && bytes.Compare(last[:8], e[:8]) > 0 {
			s.unordered++
		}
		last = e
		s.envs[string(setID(e))] = e
		s.ingested++
	}
	return nil
}

func (s *setStore) ReconSet(context.Context, peer.ID, []byte) (*dag.ReconSet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]dag.ReconItem, 0, len(s.envs))
	for id, e := range s.envs {
		items = append(items, dag.ReconItem{Height: binary.BigEndian.Uint64(e), ID: []byte(id)})
	}
	return dag.NewReconSet(items), nil
}

func (s *setStore) Lacking(_ context.Context, _ []byte, cids [][]byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range cids {
		if _, ok := s.envs[string(c)]; !ok {
			n++
		}
	}
	return n, nil
}

func (s *setStore) Envelopes(_ context.Context, _ peer.ID, _ []byte, items []dag.ReconItem, fn func([]byte) error) error {
	for _, it := range items {
		s.mu.Lock()
		env, ok := s.envs[string(it.ID)]
		s.mu.Unlock()
		if ok {
			if err := fn(env); err != nil {
				return err
			}
		}
	}
	return nil
}

type reconSide struct {
	h   host.Host
	c   *Engine
	st  *setStore
	pen *penaltyLog
	log *sessionLog
}

func newReconSide(t testing.TB, opts Options) *reconSide {
	t.Helper()
	s := &reconSide{h: testsupport.Host(t), st: newSetStore(), pen: &penaltyLog{}, log: &sessionLog{}}
	opts.Penalize, opts.OnSession = s.pen.penalize, s.log.on
	s.c = New(s.h, s.st, s.st, opts)
	t.Cleanup(func() { s.c.Close() })
	return s
}

// divergedSets fills a and b with common blocks plus blocks of their own,
// at random heights, and returns the union's ids. Each side's Hello names
// one of its own blocks as head and has no vector: the vector path sees
// nothing to do, the heads show the gap.
func divergedSets(a, b *setStore, common, onlyA, onlyB int) map[string]bool {
	r := mrand.New(mrand.NewPCG(1, 2))
	height := func() uint64 { return 1 + r.Uint64N(uint64(common/4+1)) }
	for i := range common {
		e := setEnv(height(), fmt.Sprintf("common-%d", i))
		a.add(e)
		b.add(e)
	}
	for i := range onlyA {
		e := setEnv(height(), fmt.Sprintf("a-%d", i))
		a.add(e)
		a.hello.Heads = [][]byte{setID(e)}
	}
	for i := range onlyB {
		e := setEnv(height(), fmt.Sprintf("b-%d", i))
		b.add(e)
		b.hello.Heads = [][]byte{setID(e)}
	}
	union := a.ids()
	for id := range b.ids() {
		union[id] = true
	}
	return union
}

func TestCatchupReconcileDivergedStores(t *testing.T) {
	a, b := newReconSide(t, Options{}), newReconSide(t, Options{})
	testsupport.Connect(t, a.h, b.h)
	const common, onlyA, onlyB = 20_000, 300, 200
	union := divergedSets(a.st, b.st, common, onlyA, onlyB)

	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if err != nil {
		t.Fatal(err)
	}
	rst, rerr := b.log.nth(t, 1)
	if rerr != nil {
		t.Fatalf("responder: %v", rerr)
	}
	for name, s := range map[string]*setStore{"initiator": a.st, "responder": b.st} {
		if got := s.ids(); len(got) != len(union) {
			t.Errorf("%s holds %d blocks, want the union's %d", name, len(got), len(union))
		}
		if s.unordered != 0 {
			t.Errorf("%s got %d batches out of topological order", name, s.unordered)
		}
	}
	if !st.Reconciled || !rst.Reconciled || st.BlocksSent != onlyA || st.BlocksRecv != onlyB || st.Partial {
		t.Errorf("initiator: %+v", st)
	}
	if st.RoundTrips > 1+5 {
		t.Errorf("%d round trips for %d blocks", st.RoundTrips, common+onlyA)
	}
	t.Logf("%d common, %d+%d own blocks: %d round trips (%d reconciliation messages), %d bytes sent, %d received, %s",
		common, onlyA, onlyB, st.RoundTrips, st.ReconMessages, st.BytesSent, st.BytesRecv, st.Duration.Round(time.Millisecond))

	// Converged: the next session is one round trip again.
	for _, side := range []*setStore{a.st, b.st} {
		side.mu.Lock() // a responder of the last session may still read it
		side.hello.Heads = nil
		side.mu.Unlock()
	}
	st, err = a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if err != nil || st.Reconciled || st.RoundTrips != 1 {
		t.Errorf("second session: %+v, %v", st, err)
	}
	if a.pen.count()+b.pen.count() != 0 {
		t.Errorf("penalties: %v %v", a.pen.hits, b.pen.hits)
	}
}

// A responder whose vector claims more than it sends (a partial store, or
// blocks held out of sequence order): the vector path brings part, the
// shortfall starts reconciliation, which brings the rest.
func TestCatchupReconcileVectorShortfall(t *testing.T) {
	a, b := newReconSide(t, Options{}), newReconSide(t, Options{})
	var envs [][]byte
	for i := range 100 {
		envs = append(envs, setEnv(uint64(1+i), fmt.Sprintf("bob-%d", i)))
	}
	b.st.add(envs...)
	b.st.mu.Lock()
	b.st.hello.Vector = map[string]uint64{fakeAuthor("bob"): 100}
	b.st.missing = func(protocol.Hello) [][]byte { return envs[:60] }
	b.st.mu.Unlock()
	testsupport.Connect(t, a.h, b.h)
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(a.st.ids()); got != 100 || !st.Reconciled || st.BlocksRecv != 100 {
		t.Fatalf("holds %d blocks, want 100: %+v", got, st)
	}
	t.Logf("%d round trips, %d blocks received (60 by vector, 40 by reconciliation)", st.RoundTrips, st.BlocksRecv)
}

// Both sides of an equivocation (one author, one sequence number, two
// blocks) reach both stores: the vectors are equal and cannot tell.
func TestCatchupReconcileEquivocation(t *testing.T) {
	a, b := newReconSide(t, Options{}), newReconSide(t, Options{})
	testsupport.Connect(t, a.h, b.h)
	x, y := setEnv(5, "mallory seq 5, version x"), setEnv(5, "mallory seq 5, version y")
	a.st.add(x)
	b.st.add(y)
	vec := map[string]uint64{fakeAuthor("mallory"): 5}
	a.st.set(&protocol.Hello{Vector: vec, Heads: [][]byte{setID(x)}}, nil)
	b.st.set(&protocol.Hello{Vector: vec, Heads: [][]byte{setID(y)}}, nil)
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.log.nth(t, 1); err != nil {
		t.Fatalf("responder: %v", err)
	}
	if len(a.st.ids()) != 2 || len(b.st.ids()) != 2 || st.RoundTrips != 2 {
		t.Fatalf("stores hold %d and %d blocks after %d round trips", len(a.st.ids()), len(b.st.ids()), st.RoundTrips)
	}
}

// A peer that speaks only 1.0.0 gets a 1.0.0 session: no reconciliation.
func TestCatchupReconcileOldPeer(t *testing.T) {
	a, b := newReconSide(t, Options{}), newReconSide(t, Options{})
	b.h.RemoveStreamHandler(protocol.SyncProtocolRecon)
	testsupport.Connect(t, a.h, b.h)
	divergedSets(a.st, b.st, 100, 5, 5)
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if err != nil || st.Reconciled || st.RoundTrips != 1 {
		t.Fatalf("%+v, %v", st, err)
	}
	if _, err := b.log.nth(t, 1); err != nil {
		t.Fatalf("responder: %v", err)
	}
}

// reconHostile serves 1.1.0 on h: a Hello naming a head the initiator
// lacks, an empty Done, then act with the initiator's first Reconcile.
func reconHostile(t testing.TB, h host.Host, act func(s network.Stream, r *protocol.FrameReader, first protocol.Frame)) {
	t.Helper()
	h.SetStreamHandler(protocol.SyncProtocolRecon, func(s network.Stream) {
		defer s.Reset()
		r := protocol.NewFrameReader(s)
		f, _, err := r.Read()
		if err != nil || f.Kind != protocol.FrameHello {
			return
		}
		hello := protocol.Hello{SyncID: f.Hello.SyncID, Heads: [][]byte{setID([]byte("unknown head"))}}
		if testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameHello, Hello: &hello}, protocol.Frame{Kind: protocol.FrameDone}) != nil {
			return
		}
		for {
			if f, _, err = r.Read(); err != nil {
				return
			}
			if f.Kind == protocol.FrameReconcile {
				act(s, r, f)
				return
			}
		}
	})
}

// mismatch is a reconciliation message no store matches: a fingerprint of
// zeros over everything, which always needs an answer.
func mismatch() protocol.Frame {
	m := dag.ReconMessage{Ranges: []dag.ReconRange{{Upper: dag.ReconBound{Inf: true}, Mode: dag.ReconFingerprint}}}
	return protocol.Frame{Kind: protocol.FrameReconcile, Recon: dag.EncodeReconMessage(m)}
}

func TestCatchupReconcileHostileResponder(t *testing.T) {
	cases := []struct {
		name    string
		act     func(s network.Stream, r *protocol.FrameReader, first protocol.Frame)
		want    error
		penalty bool
	}{
		{"endless fingerprints", func(s network.Stream, r *protocol.FrameReader, _ protocol.Frame) {
			for {
				if testsupport.WriteFrames(s, mismatch()) != nil {
					return
				}
				if _, _, err := r.Read(); err != nil {
					return
				}
			}
		}, ErrBadPeer, true},
		{"endless fingerprints without reading", func(s network.Stream, _ *protocol.FrameReader, _ protocol.Frame) {
			for testsupport.WriteFrames(s, mismatch()) == nil {
			}
		}, ErrBadPeer, true},
		{"undecodable message", func(s network.Stream, _ *protocol.FrameReader, _ protocol.Frame) {
			_ = testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameReconcile, Recon: []byte{9, 9, 9}})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"blocks instead of an answer", func(s network.Stream, _ *protocol.FrameReader, _ protocol.Frame) {
			_ = testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: [][]byte{setEnv(1, "x")}})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"ships more than it announced", func(s network.Stream, _ *protocol.FrameReader, _ protocol.Frame) {
			end := dag.EncodeReconMessage(dag.ReconMessage{Have: [][]byte{{1}}})
			envs := make([][]byte, Slack+10)
			for i := range envs {
				envs[i] = setEnv(uint64(i), "flood")
			}
			_ = testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameReconcile, Recon: end}, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: envs})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"silent", func(network.Stream, *protocol.FrameReader, protocol.Frame) {
			time.Sleep(3 * time.Second)
		}, ErrTimeout, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := newReconSide(t, Options{IdleTimeout: 500 * time.Millisecond})
			divergedSets(a.st, newSetStore(), 5000, 10, 0)
			b := testsupport.Host(t)
			reconHostile(t, b, c.act)
			testsupport.Connect(t, a.h, b)
			start := time.Now()
			st, err := a.c.Sync(syncCtx(t), b.ID(), []byte("conv"))
			took := time.Since(start)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if took > 5*time.Second {
				t.Errorf("took %s to give up", took)
			}
			if got := a.pen.count(); (got > 0) != c.penalty || got > 1 {
				t.Errorf("%d penalties (%v), want penalty=%v", got, a.pen.hits, c.penalty)
			}
			if st.ReconMessages > dag.ReconMaxMessages+1 {
				t.Errorf("%d reconciliation messages, cap %d", st.ReconMessages, dag.ReconMaxMessages)
			}
			t.Logf("%v after %s; %d reconciliation messages, %d frames and %d bytes received",
				err, took.Round(time.Millisecond), st.ReconMessages, st.FramesRecv, st.BytesRecv)
		})
	}
}

func TestCatchupReconcileHostileInitiator(t *testing.T) {
	b := newReconSide(t, Options{IdleTimeout: 2 * time.Second})
	divergedSets(newSetStore(), b.st, 5000, 0, 10)
	a := testsupport.Host(t)
	testsupport.Connect(t, a, b.h)
	s, err := a.NewStream(syncCtx(t), b.h.ID(), protocol.SyncProtocolRecon)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	r := protocol.NewFrameReader(s)
	if err := testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameHello, Hello: &protocol.Hello{SyncID: []byte("conv")}}, protocol.Frame{Kind: protocol.FrameDone}); err != nil {
		t.Fatal(err)
	}
	for {
		f, _, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == protocol.FrameDone {
			break
		}
	}
	// Endless reconciliation: every answer gets another mismatch.
	sent := 0
	for ; sent < 10*dag.ReconMaxMessages; sent++ {
		if testsupport.WriteFrames(s, mismatch()) != nil {
			break
		}
		if _, _, err := r.Read(); err != nil {
			break
		}
	}
	if sent > dag.ReconMaxMessages/2+1 {
		t.Errorf("answered %d endless messages", sent)
	}
	_, rerr := b.log.nth(t, 1)
	if !errors.Is(rerr, ErrBadPeer) || b.pen.count() != 1 || b.pen.ids[0] != a.ID() {
		t.Fatalf("responder: %v, penalties %v", rerr, b.pen.hits)
	}
	t.Logf("cut off after %d messages: %v", sent, rerr)
}

// BenchmarkCatchupReconcile: two loopback hosts holding n common blocks
// (100k; 10k with -short) plus 0.5% of their own each, with Hellos that
// show the gap only through heads: one session, reconciliation included.
func BenchmarkCatchupReconcile(b *testing.B) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	a, r := newReconSide(b, Options{}), newReconSide(b, Options{})
	testsupport.Connect(b, a.h, r.h)
	ctx := context.Background()
	var st Stats
	sessions := 0
	for b.Loop() {
		b.StopTimer()
		for _, st := range []*setStore{a.st, r.st} {
			st.mu.Lock()
			st.envs = map[string][]byte{}
			st.mu.Unlock()
		}
		divergedSets(a.st, r.st, n, n/200, n/200)
		b.StartTimer()
		var err error
		if st, err = a.c.Sync(ctx, r.h.ID(), []byte("conv")); err != nil || !st.Reconciled {
			b.Fatalf("%+v, %v", st, err)
		}
		b.StopTimer()
		// The responder may still be ingesting the last blocks.
		sessions++
		if _, err := r.log.nth(b, sessions); err != nil {
			b.Fatalf("responder: %v", err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(st.RoundTrips), "round-trips")
	b.ReportMetric(float64(st.ReconMessages), "recon-messages")
	b.ReportMetric(float64(st.BytesSent+st.BytesRecv), "wire-bytes")
	b.ReportMetric(float64(st.BlocksSent+st.BlocksRecv), "blocks")
}
