package catchup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

func TestCatchupUnionOneRoundTrip(t *testing.T) {
	a, b := catchupPair(t, Options{})
	const id = "conv-1"
	// Shared prefix.
	a.st.write(id, "alice", 50, 100)
	a.st.write(id, "bob", 10, 100)
	b.st.mu.Lock()
	b.st.dags[id] = &fakeDAG{envs: slices.Clone(a.st.dags[id].envs), vec: maps(a.st.dags[id].vec)}
	b.st.mu.Unlock()
	// Divergent suffixes, each building on the shared prefix.
	a.st.write(id, "alice", 30, 200)
	a.st.write(id, "carol", 20, 50)
	b.st.write(id, "bob", 40, 120)
	b.st.write(id, "alice", 0, 0)

	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
	if err != nil {
		t.Fatal(err)
	}
	// The responder may still be ingesting the initiator's last frame.
	rst, rerr := b.log.nth(t, 1)
	if st.RoundTrips != 1 {
		t.Errorf("RoundTrips = %d, want 1", st.RoundTrips)
	}
	if st.BlocksSent != 50 || st.BlocksRecv != 40 {
		t.Errorf("sent %d, received %d blocks; want 50 and 40", st.BlocksSent, st.BlocksRecv)
	}
	if st.Partial {
		t.Error("session reported partial")
	}
	want := a.st.set(id)
	for k := range b.st.set(id) {
		want[k] = true
	}
	if len(want) != 150 {
		t.Fatalf("union has %d envelopes, want 150", len(want))
	}
	for name, s := range map[string]*fakeStore{"a": a.st, "b": b.st} {
		if got := s.set(id); len(got) != len(want) {
			t.Errorf("%s holds %d envelopes, want %d", name, len(got), len(want))
		}
	}
	va, _ := a.st.snapshot(id)
	vb, _ := b.st.snapshot(id)
	if fmt.Sprint(va) != fmt.Sprint(vb) {
		t.Errorf("vectors differ: %v vs %v", va, vb)
	}
	if rerr != nil || rst.RoundTrips != 1 || rst.BlocksSent != 40 || rst.BlocksRecv != 50 {
		t.Errorf("responder: %+v, %v", rst, rerr)
	}
	if st.BytesSent != rst.BytesRecv || st.BytesRecv != rst.BytesSent || st.FramesSent != rst.FramesRecv {
		t.Errorf("wire accounting differs: initiator %+v, responder %+v", st, rst)
	}

	// A second session finds nothing to do, still in one round trip.
	st, err = b.c.Sync(syncCtx(t), a.h.ID(), []byte(id))
	if err != nil || st.BlocksSent != 0 || st.BlocksRecv != 0 || st.RoundTrips != 1 || st.FramesSent != 2 {
		t.Errorf("second sync: %+v, %v", st, err)
	}
	if a.pen.count()+b.pen.count() != 0 {
		t.Errorf("penalties: %v %v", a.pen.hits, b.pen.hits)
	}
}

func TestCatchupLargeSessionPacksFrames(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	a, b := catchupPair(t, Options{})
	const id = "big"
	for i := range 4 {
		b.st.write(id, fmt.Sprintf("author-%d", i), n/4, 60)
	}
	// a does not hold the DAG yet: it joins with an empty Hello.
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
	if err != nil {
		t.Fatal(err)
	}
	if st.BlocksRecv != n || st.RoundTrips != 1 {
		t.Fatalf("received %d blocks in %d round trips, want %d in 1", st.BlocksRecv, st.RoundTrips, n)
	}
	if _, count := a.st.snapshot(id); count != n {
		t.Fatalf("a holds %d, want %d", count, n)
	}
	rst, _ := b.log.nth(t, 1)
	if rst.BlocksSent != n || rst.FramesSent*1000 > rst.BlocksSent {
		t.Errorf("responder sent %d blocks in %d frames: frames should hold ~10k small envelopes", rst.BlocksSent, rst.FramesSent)
	}
	t.Logf("%d blocks, %d frames, %d bytes in %s", st.BlocksRecv, st.FramesRecv, st.BytesRecv, st.Duration)
}

func TestCatchupUnknownSyncID(t *testing.T) {
	a, b := catchupPair(t, Options{})
	a.st.write("mine", "alice", 5, 10)
	b.st.write("theirs", "bob", 5, 10)
	// a holds "mine" and offers it: b must not learn anything nor receive
	// anything, and must say nothing but "unknown".
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("mine"))
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("err = %v, want ErrUnknown", err)
	}
	if st.BlocksSent != 0 || st.BlocksRecv != 0 || st.FramesRecv != 1 {
		t.Errorf("stats %+v", st)
	}
	if _, n := b.st.snapshot("mine"); n != 0 || b.st.ingests != 0 {
		t.Errorf("b ingested %d", n)
	}
	if _, rerr := b.log.nth(t, 1); !errors.Is(rerr, ErrUnknown) {
		t.Errorf("responder outcome %v", rerr)
	}
	if a.pen.count()+b.pen.count() != 0 {
		t.Error("an unknown conversation is no offence")
	}
}

// A responder that holds the DAG but will not sync it with the initiator
// (a removed member) answers exactly as for a DAG it does not hold: the
// initiator gets nothing, learns nothing, and is not penalised.
func TestCatchupRefusedPeerSeesUnknown(t *testing.T) {
	a, b := catchupPair(t, Options{})
	a.st.write("conv", "alice", 5, 10)
	b.st.write("conv", "bob", 5, 10)
	b.st.mu.Lock()
	b.st.refused = map[peer.ID]bool{a.h.ID(): true}
	b.st.mu.Unlock()
	st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("conv"))
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("err = %v, want ErrUnknown", err)
	}
	if st.BlocksRecv != 0 || st.BlocksSent != 0 {
		t.Errorf("stats %+v: blocks moved for a refused peer", st)
	}
	if _, n := a.st.snapshot("conv"); n != 5 {
		t.Errorf("the refused peer holds %d blocks, want its own 5", n)
	}
	if _, n := b.st.snapshot("conv"); n != 5 || b.st.ingests != 0 {
		t.Errorf("the responder took %d blocks from a refused peer", n)
	}
	if a.pen.count()+b.pen.count() != 0 {
		t.Error("a refusal is no offence")
	}
}

// hostile installs a raw handler on h that reads the initiator's Hello and
// then runs act on the stream.
func hostile(t testing.TB, h host.Host, act func(s network.Stream, hello protocol.Hello)) {
	t.Helper()
	h.SetStreamHandler(protocol.SyncProtocol, func(s network.Stream) {
		defer s.Reset()
		f, _, err := protocol.NewFrameReader(s).Read()
		if err != nil || f.Kind != protocol.FrameHello {
			return
		}
		act(s, *f.Hello)
	})
}

func TestCatchupHostileResponder(t *testing.T) {
	const id = "conv"
	const cap = 5000
	bob := fakeAuthor("bob")
	validBlocks := func(from, n int) [][]byte {
		envs := make([][]byte, n)
		for i := range envs {
			envs[i] = makeFakeEnv(bob, uint64(from+i+1), nil, nil, 200)
		}
		return envs
	}
	bigHello := protocol.Frame{Kind: protocol.FrameHello, Hello: &protocol.Hello{
		SyncID: []byte(id), Vector: map[string]uint64{bob: 1 << 40}, Count: 1 << 40,
	}}
	smallHello := protocol.Frame{Kind: protocol.FrameHello, Hello: &protocol.Hello{
		SyncID: []byte(id), Vector: map[string]uint64{bob: 3}, Count: 3,
	}}
	cases := []struct {
		name    string
		act     func(s network.Stream, h protocol.Hello)
		want    error
		penalty bool
	}{
		{"oversized frame", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello)
			// A length prefix of 64 MiB, then a trickle: refused from the
			// prefix, without waiting for (or allocating) the body.
			_, _ = s.Write(binary.AppendUvarint(nil, 64<<20))
			_, _ = s.Write(make([]byte, 1000))
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"garbage frame", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello)
			w := msgio.NewVarintWriter(s)
			_ = w.WriteMsg([]byte("\xa2\x01\x02\x03\x9fnot cbor at all"))
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"hello twice", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello, smallHello)
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"hello for another conversation", func(s network.Stream, _ protocol.Hello) {
			h := *smallHello.Hello
			h.SyncID = []byte("other")
			_ = testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameHello, Hello: &h})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"more than its hello allows", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(0, Slack+10)})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"endless response", func(s network.Stream, _ protocol.Hello) {
			if testsupport.WriteFrames(s, bigHello) != nil {
				return
			}
			for i := 0; ; i += 1000 {
				if testsupport.WriteFrames(s, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(i, 1000)}) != nil {
					return
				}
			}
		}, ErrBadPeer, true},
		{"done with the wrong count", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello,
				protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(0, 3)},
				protocol.Frame{Kind: protocol.FrameDone, Sent: 7})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"end of stream before done", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(0, 3)})
			_ = s.CloseWrite()
			time.Sleep(2 * time.Second)
		}, ErrTruncated, false}, // what a relay ending a used-up circuit looks like
		{"blocks out of order", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(1, 2)})
			time.Sleep(2 * time.Second)
		}, ErrBadPeer, true},
		{"silent", func(s network.Stream, _ protocol.Hello) {
			time.Sleep(3 * time.Second)
		}, ErrTimeout, false},
		{"silent after hello", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello)
			time.Sleep(3 * time.Second)
		}, ErrTimeout, false},
		{"never sends done", func(s network.Stream, _ protocol.Hello) {
			_ = testsupport.WriteFrames(s, smallHello, protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: validBlocks(0, 3)})
			time.Sleep(3 * time.Second)
		}, ErrTimeout, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := newCatchupSide(t, Options{IdleTimeout: 500 * time.Millisecond, MaxBlocksPerSession: cap})
			a.st.write(id, "alice", 3, 10)
			b := testsupport.Host(t)
			hostile(t, b, c.act)
			testsupport.Connect(t, a.h, b)
			start := time.Now()
			st, err := a.c.Sync(syncCtx(t), b.ID(), []byte(id))
			took := time.Since(start)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if took > 2*time.Second {
				t.Errorf("took %s to give up", took)
			}
			if got := a.pen.count(); (got > 0) != c.penalty || got > 1 {
				t.Errorf("%d penalties (%v), want penalty=%v", got, a.pen.hits, c.penalty)
			}
			if c.penalty && a.pen.ids[0] != b.ID() {
				t.Errorf("penalised %s, want %s", a.pen.ids[0], b.ID())
			}
			_, n := a.st.snapshot(id)
			if n > 3+cap {
				t.Errorf("ingested %d blocks, more than the cap %d", n-3, cap)
			}
			t.Logf("%v after %s; %d frames, %d blocks, %d bytes received", err, took.Round(time.Millisecond), st.FramesRecv, st.BlocksRecv, st.BytesRecv)
		})
	}
}

func TestCatchupIngestBadPeerPenalises(t *testing.T) {
	a, b := catchupPair(t, Options{})
	const id = "conv"
	a.st.write(id, "alice", 5, 10)
	b.st.write(id, "bob", 5, 10)
	a.st.failIngest = fmt.Errorf("%w: forged signature", ErrBadPeer)
	_, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
	if !errors.Is(err, ErrBadPeer) {
		t.Fatalf("err = %v, want ErrBadPeer", err)
	}
	if a.pen.count() != 1 || a.pen.ids[0] != b.h.ID() {
		t.Errorf("penalties %v %v", a.pen.ids, a.pen.hits)
	}

	// A local failure aborts without a penalty.
	a.st.failIngest = errors.New("disk full")
	_, err = a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
	if err == nil || errors.Is(err, ErrBadPeer) {
		t.Fatalf("err = %v, want a local error", err)
	}
	if a.pen.count() != 1 {
		t.Errorf("penalties %v", a.pen.hits)
	}
	if b.pen.count() != 0 {
		t.Errorf("b penalised a: %v", b.pen.hits)
	}
}

func TestCatchupHostileInitiator(t *testing.T) {
	b := newCatchupSide(t, Options{IdleTimeout: 2 * time.Second, MaxSessionsPerPeer: 2})
	const id = "conv"
	b.st.write(id, "bob", 3, 10)
	a := testsupport.Host(t)
	testsupport.Connect(t, a, b.h)
	ctx := syncCtx(t)
	open := func() network.Stream {
		s, err := a.NewStream(ctx, b.h.ID(), protocol.SyncProtocol)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hello := protocol.Frame{Kind: protocol.FrameHello, Hello: &protocol.Hello{SyncID: []byte(id)}}

	// Two sessions that say hello and then stall hold the peer's quota; a
	// third is told "busy" at once.
	var held []network.Stream
	for range 2 {
		s := open()
		if err := testsupport.WriteFrames(s, hello); err != nil {
			t.Fatal(err)
		}
		f, _, err := protocol.NewFrameReader(s).Read()
		if err != nil || f.Kind != protocol.FrameHello {
			t.Fatalf("first sessions: %v %+v", err, f)
		}
		held = append(held, s)
	}
	s := open()
	_ = testsupport.WriteFrames(s, hello)
	f, _, err := protocol.NewFrameReader(s).Read()
	if err != nil || f.Kind != protocol.FrameError || f.Error != "busy" {
		t.Fatalf("third session: %v %+v", err, f)
	}
	s.Reset()
	for _, s := range held {
		s.Reset()
	}

	// Garbage instead of a hello is penalised.
	testsupport.Eventually(t, 5*time.Second, "sessions to end", func() bool { b.c.in.mu.Lock(); defer b.c.in.mu.Unlock(); return b.c.in.total == 0 })
	s = open()
	_ = msgio.NewVarintWriter(s).WriteMsg([]byte{0xff, 0x00})
	testsupport.Eventually(t, 5*time.Second, "penalty", func() bool { return b.pen.count() == 1 })
	if b.pen.ids[0] != a.ID() {
		t.Errorf("penalised %s", b.pen.ids[0])
	}
	s.Reset()
	if b.st.ingests != 0 {
		t.Errorf("ingests %d", b.st.ingests)
	}
}

// On a limited (relayed) connection the engine stops sending at the
// connection's byte budget, ending the session with Done; a session on a
// fresh connection picks up where the last one stopped.
func TestCatchupLimitedBudgetResumes(t *testing.T) {
	const budget = 16 << 10
	a, b := catchupPair(t, Options{LimitedBudget: budget, forceLimited: true})
	const id = "conv"
	a.st.write(id, "alice", 1, 10)
	b.st.write(id, "bob", 100, 300)
	b.st.write(id, "carol", 100, 300)
	sessions, n := 0, 0
	for ; sessions < 20; sessions++ {
		st, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
		if err != nil {
			t.Fatal(err)
		}
		n++
		// Responder sessions can end out of order (one on a closed
		// connection may finish late): find this session's by its bytes.
		rst := b.log.find(t, n, func(r Stats) bool { return r.BytesSent == st.BytesRecv })
		if !st.Limited || rst.BytesSent > budget || st.BytesRecv != rst.BytesSent {
			t.Fatalf("session %d: %+v / responder %+v", sessions, st, rst)
		}
		if !st.Partial {
			break
		}
		if st.BlocksRecv == 0 {
			t.Fatalf("session %d made no progress", sessions)
		}
		// The budget is per connection: another session on this one
		// moves nothing more.
		st, err = a.c.Sync(syncCtx(t), b.h.ID(), []byte(id))
		n++
		if err != nil || st.BlocksRecv != 0 || !st.Partial {
			t.Fatalf("session on a spent connection: %+v, %v", st, err)
		}
		a.h.Network().ClosePeer(b.h.ID())
		testsupport.Connect(t, a.h, b.h)
	}
	if _, n := a.st.snapshot(id); n != 201 {
		t.Fatalf("a holds %d after %d sessions, want 201", n, sessions+1)
	}
	if sessions < 3 {
		t.Errorf("%d sessions: the budget was not applied", sessions+1)
	}
	t.Logf("converged in %d sessions", sessions+1)
}

// The same over a real relay with relay v2's default limit (128 KiB per
// direction per circuit): sessions stop at the budget and the catch-up
// completes over several sessions, redialling when a circuit is used up.
func TestCatchupOverRelay(t *testing.T) {
	r := testsupport.Host(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ForceReachabilityPublic(),
		libp2p.EnableRelayService(relay.WithLimit(&relay.RelayLimit{Duration: 2 * time.Minute, Data: 128 << 10})))
	relayAddr := r.Addrs()[0].String() + "/p2p/" + r.ID().String()

	// A: reachable only through the relay, with a reservation on it.
	a := &catchupSide{h: testsupport.Host(t, libp2p.NoListenAddrs, libp2p.ForceReachabilityPrivate(), libp2p.EnableRelay(),
		libp2p.EnableAutoRelayWithStaticRelays([]peer.AddrInfo{testsupport.AddrInfo(r)},
			autorelay.WithBootDelay(0), autorelay.WithMinCandidates(1))),
		st: newFakeStore(), pen: &penaltyLog{}, log: &sessionLog{}}
	a.c = New(a.h, a.st, a.st, Options{Penalize: a.pen.penalize, OnSession: a.log.on})
	t.Cleanup(func() { a.c.Close() })
	b := newCatchupSide(t, Options{})

	const id = "conv"
	a.st.write(id, "alice", 300, 300)
	a.st.write(id, "carol", 300, 300) // ~190 KB: more than one circuit carries
	b.st.write(id, "bob", 3, 10)

	circuit, err := ma.NewMultiaddr(relayAddr + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b.h.Network().ClosePeer(a.h.ID())
		return b.h.Connect(ctx, peer.AddrInfo{ID: a.h.ID(), Addrs: []ma.Multiaddr{circuit}})
	}
	testsupport.Eventually(t, 20*time.Second, "a connection through the relay", func() bool { return dial() == nil })

	sessions, failures := 0, 0
	for ; sessions+failures < 30; sessions++ {
		st, err := b.c.Sync(syncCtx(t), a.h.ID(), []byte(id))
		if err != nil {
			if errors.Is(err, ErrBadPeer) {
				t.Fatalf("session %d: %v (%+v)", sessions+failures+1, err, st)
			}
			// The relay closed a used-up circuit: dial a fresh one.
			t.Logf("session %d: %v", sessions+failures+1, err)
			failures++
			sessions--
			testsupport.Eventually(t, 10*time.Second, "a fresh circuit", func() bool { return dial() == nil })
			continue
		}
		if !st.Limited {
			t.Fatalf("session over %v was not limited", b.h.Network().ConnsToPeer(a.h.ID()))
		}
		if st.BytesRecv > 64<<10 {
			t.Fatalf("received %d bytes, over the budget", st.BytesRecv)
		}
		if !st.Partial {
			break
		}
		if st.BlocksRecv == 0 {
			// This circuit's budget is spent: take a fresh one (in real
			// life, wait for hole punching to give a direct connection).
			testsupport.Eventually(t, 10*time.Second, "a fresh circuit", func() bool { return dial() == nil })
		}
	}
	if _, n := b.st.snapshot(id); n != 603 {
		t.Fatalf("b holds %d after %d sessions and %d failures", n, sessions+1, failures)
	}
	if _, n := a.st.snapshot(id); n != 603 {
		t.Fatalf("a holds %d", n)
	}
	if a.pen.count()+b.pen.count() != 0 {
		t.Errorf("penalties %v %v", a.pen.hits, b.pen.hits)
	}
	t.Logf("converged in %d sessions, %d failed on used-up circuits", sessions+1, failures)
}

func TestCatchupClose(t *testing.T) {
	a, b := catchupPair(t, Options{})
	b.st.write("c", "bob", 1, 1)
	if err := b.c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Sync(syncCtx(t), b.h.ID(), []byte("c")); err == nil {
		t.Error("sync with a closed engine succeeded")
	}
	if _, err := b.c.Sync(syncCtx(t), a.h.ID(), []byte("c")); !errors.Is(err, ErrClosed) {
		t.Errorf("err = %v", err)
	}
}

func TestCatchupFramePacking(t *testing.T) {
	// The sender's size estimate must keep every frame under the limit.
	for _, size := range []int{1, 23, 24, 255, 256, 300, 4000, 65535, 65536} {
		env := bytes.Repeat([]byte{1}, size)
		n := (protocol.MaxSyncFrame - blocksFrameOverhead) / (cborHeadLen(uint64(size)) + size)
		n = min(n, protocol.MaxFrameEnvelopes)
		envs := make([][]byte, n)
		for i := range envs {
			envs[i] = env
		}
		if _, err := protocol.EncodeFrame(protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: envs}); err != nil {
			t.Errorf("%d × %d bytes: %v", n, size, err)
		}
	}
}

func BenchmarkCatchup(b *testing.B) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	x, y := catchupPair(b, Options{})
	const id = "bench"
	for i := range 4 {
		y.st.write(id, fmt.Sprintf("author-%d", i), n/4, 300-41-40*3)
	}
	var bytesMoved int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		x.st.mu.Lock()
		x.st.dags = map[string]*fakeDAG{}
		x.st.mu.Unlock()
		b.StartTimer()
		st, err := x.c.Sync(context.Background(), y.h.ID(), []byte(id))
		if err != nil {
			b.Fatal(err)
		}
		if st.BlocksRecv != n {
			b.Fatalf("received %d", st.BlocksRecv)
		}
		bytesMoved += st.BytesRecv
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(n*b.N)/sec, "blocks/s")
	b.ReportMetric(float64(bytesMoved)/1e6/sec, "MB/s")
}
