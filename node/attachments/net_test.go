package attachments

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// penalties records what Penalize was called with.
type penalties struct {
	mu sync.Mutex
	by map[peer.ID][]float64
}

func (p *penalties) penalize(id peer.ID, amount float64, _ string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.by == nil {
		p.by = map[peer.ID][]float64{}
	}
	p.by[id] = append(p.by[id], amount)
}

func (p *penalties) of(id peer.ID) []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]float64(nil), p.by[id]...)
}

func (p *penalties) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.by)
}

var allowAll = AccessFunc(func(peer.ID, Ref) bool { return true })

// peerNode is a host with a store, a server and a fetcher.
type peerNode struct {
	h       host.Host
	st      *Store
	srv     *Server
	f       *Fetcher
	fetched penalties // what its fetcher reported
	served  penalties // what its server reported
}

func newPeerNode(t testing.TB, st *Store, acc Access, fo FetchOptions) *peerNode {
	t.Helper()
	if st == nil {
		st = memStore(t, 0)
	}
	n := &peerNode{h: testsupport.Host(t), st: st}
	fo.Penalize = n.fetched.penalize
	fo.Logger = testsupport.Logger(t)
	n.f = NewFetcher(n.h, st, fo)
	n.srv = NewServer(n.h, st, acc, ServerOptions{Penalize: n.served.penalize, Logger: testsupport.Logger(t)})
	t.Cleanup(func() { n.srv.Close() })
	return n
}

func fetchCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTransferBetweenHosts(t *testing.T) {
	const cs = protocol.MinChunkSize
	for _, size := range []int{0, 1, cs - 1, cs, cs + 1, 10*cs + 3} {
		a := newPeerNode(t, nil, allowAll, FetchOptions{})
		var served sync.Map // root → bytes, the sender's upload progress
		a.srv.Close()
		a.srv = NewServer(a.h, a.st, allowAll, ServerOptions{OnServed: func(_ peer.ID, root Ref, n int) {
			v, _ := served.LoadOrStore(root, new(atomic.Int64))
			v.(*atomic.Int64).Add(int64(n))
		}})
		b := newPeerNode(t, nil, allowAll, FetchOptions{})
		testsupport.Connect(t, b.h, a.h)
		data := randomBytes(t, size)
		m := importBytes(t, a.st, data, Meta{Size: int64(size), ChunkSize: cs})
		var last Progress
		st, err := b.f.Fetch(fetchCtx(t), m, "msg-1", StaticProviders(a.h.ID()), func(p Progress) { last = p })
		if err != nil {
			t.Fatalf("%d bytes: fetch: %v", size, err)
		}
		if st.Chunks != m.Chunks()+1 || st.Bytes != int64(m.SealedSize()) || st.Held != 0 {
			t.Fatalf("%d bytes: stats %+v for %d chunks, %d sealed bytes", size, st, m.Chunks(), m.SealedSize())
		}
		if !last.Complete() || last.BytesHeld != m.SealedSize() {
			t.Fatalf("%d bytes: last progress %+v", size, last)
		}
		if got := openBytes(t, b.st, m); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: fetched file differs", size)
		}
		if b.fetched.count()+a.served.count() != 0 {
			t.Fatal("an honest transfer penalised someone")
		}
		if v, _ := served.Load(m.Root); v == nil || v.(*atomic.Int64).Load() != int64(m.SealedSize()) {
			t.Fatalf("%d bytes: the sender reported %v bytes served of %d", size, v, m.SealedSize())
		}
		// A second fetch finds everything held and asks nobody.
		st, err = b.f.Fetch(fetchCtx(t), m, "msg-2", StaticProviders(), nil)
		if err != nil || st.Chunks != 0 || st.Held != m.Chunks() {
			t.Fatalf("%d bytes: refetch: %+v, %v", size, st, err)
		}
	}
}

// Three hosts: C fetches from A, then D fetches from A and C at once,
// with several chunks in flight on each.
func TestTransferFromSeveralProviders(t *testing.T) {
	const cs = protocol.MinChunkSize
	fo := FetchOptions{Window: 4, Batch: 2}
	a := newPeerNode(t, nil, allowAll, fo)
	c := newPeerNode(t, nil, allowAll, fo)
	d := newPeerNode(t, nil, allowAll, fo)
	testsupport.Connect(t, c.h, a.h)
	testsupport.Connect(t, d.h, a.h)
	testsupport.Connect(t, d.h, c.h)
	data := randomBytes(t, 40*cs)
	m := importBytes(t, a.st, data, Meta{Size: int64(len(data)), ChunkSize: cs, Name: "video.mp4", Type: "video/mp4"})
	if _, err := c.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); err != nil {
		t.Fatal(err)
	}
	st, err := d.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID(), c.h.ID()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ByPeer[a.h.ID()] == 0 || st.ByPeer[c.h.ID()] == 0 {
		t.Fatalf("chunks by peer %v: both providers should have served", st.ByPeer)
	}
	if !bytes.Equal(openBytes(t, d.st, m), data) {
		t.Fatal("fetched file differs")
	}
}

// hostile serves the chunk protocol badly: with a store holding the file,
// it can send the real chunks with one bit flipped (garbage of the right
// size), answer nothing (withhold), or say Missing for everything.
type hostile struct {
	h    host.Host
	st   *Store
	mode string
}

func newHostile(t testing.TB, st *Store, mode string) *hostile {
	x := &hostile{h: testsupport.Host(t), st: st, mode: mode}
	x.h.SetStreamHandler(protocol.ChunkProtocol, x.handle)
	return x
}

func (x *hostile) handle(s network.Stream) {
	defer s.Reset()
	fr := protocol.NewChunkFrameReader(s)
	bw := bufio.NewWriter(s)
	fw := protocol.NewChunkFrameWriter(bw)
	for {
		f, _, err := fr.Read()
		if err != nil {
			return
		}
		for _, cb := range f.CIDs {
			c, _ := ParseRef(cb)
			switch x.mode {
			case "withhold":
				// Read on, answer nothing.
			case "missing":
				fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkMissing, CID: cb})
			case "garbage":
				stored, err := x.st.Chunk(context.Background(), c)
				if err != nil {
					return
				}
				data := bytes.Clone(stored) // the in-memory store's own slice
				data[len(data)/2] ^= 0x40
				fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkData, CID: cb, Data: data})
			case "wrong order":
				fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkMissing, CID: RefOf(cb).Bytes()})
			}
		}
		bw.Flush()
	}
}

// Providers that send garbage or withhold are penalised and dropped, and
// the file comes from the honest one, whether the hostile ones are asked
// for the index or for data chunks.
func TestHostileProviders(t *testing.T) {
	const cs = protocol.MinChunkSize
	src := memStore(t, 0)
	data := randomBytes(t, 20*cs)
	m := importBytes(t, src, data, Meta{Size: int64(len(data)), ChunkSize: cs})
	honest := newPeerNode(t, src, allowAll, FetchOptions{})
	for _, order := range []string{"hostile first", "honest first"} {
		t.Run(order, func(t *testing.T) {
			garbage := newHostile(t, src, "garbage")
			withhold := newHostile(t, src, "withhold")
			missing := newHostile(t, src, "missing")
			wrong := newHostile(t, src, "wrong order")
			b := newPeerNode(t, nil, allowAll, FetchOptions{IdleTimeout: time.Second, Window: 4, Batch: 2, MaxPeers: 5})
			hostiles := []peer.ID{garbage.h.ID(), withhold.h.ID(), missing.h.ID(), wrong.h.ID()}
			for _, h := range []host.Host{garbage.h, withhold.h, missing.h, wrong.h, honest.h} {
				testsupport.Connect(t, b.h, h)
			}
			provs := append([]peer.ID{honest.h.ID()}, hostiles...)
			if order == "hostile first" {
				provs = append(hostiles, honest.h.ID())
			}
			st, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(provs...), nil)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if !bytes.Equal(openBytes(t, b.st, m), data) {
				t.Fatal("fetched file differs")
			}
			want := map[peer.ID]float64{garbage.h.ID(): 20, withhold.h.ID(): 5, missing.h.ID(): 5, wrong.h.ID(): 20}
			for p, amount := range want {
				got := b.fetched.of(p)
				if order == "honest first" && len(got) == 0 && st.ByPeer[p] == 0 {
					// The honest provider may have served everything
					// before this one was asked for anything.
					continue
				}
				if len(got) != 1 || got[0] != amount {
					t.Errorf("%s: penalties %v, want one of %v", p, got, amount)
				}
			}
			if got := b.fetched.of(honest.h.ID()); len(got) != 0 {
				t.Errorf("honest provider penalised: %v", got)
			}
			if order == "hostile first" && st.Refused == 0 {
				t.Error("no chunk counted as refused")
			}
			for _, p := range hostiles {
				if st.ByPeer[p] != 0 {
					t.Errorf("%s supplied %d chunks", p, st.ByPeer[p])
				}
			}
		})
	}
}

// With only hostile providers the fetch fails with ErrUnavailable and
// stores nothing bad; the honest provider later completes it.
func TestOnlyHostileProviders(t *testing.T) {
	const cs = protocol.MinChunkSize
	src := memStore(t, 0)
	data := randomBytes(t, 8*cs)
	m := importBytes(t, src, data, Meta{Size: int64(len(data)), ChunkSize: cs})
	garbage := newHostile(t, src, "garbage")
	missing := newHostile(t, src, "missing")
	b := newPeerNode(t, nil, allowAll, FetchOptions{IdleTimeout: time.Second})
	testsupport.Connect(t, b.h, garbage.h)
	testsupport.Connect(t, b.h, missing.h)
	_, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(garbage.h.ID(), missing.h.ID()), nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fetch from hostile providers: %v", err)
	}
	if b.st.Used() != 0 {
		t.Fatalf("%d bytes stored from hostile providers", b.st.Used())
	}
	// Half the file from an honest provider that then goes away, the
	// rest asked of hostile ones: what was stored stays.
	honest := newPeerNode(t, src, allowAll, FetchOptions{})
	testsupport.Connect(t, b.h, honest.h)
	ctx, cancel := context.WithCancel(fetchCtx(t))
	b.f.Fetch(ctx, m, "msg", StaticProviders(honest.h.ID()), func(p Progress) {
		if p.ChunksHeld >= 4 {
			cancel()
		}
	})
	half, _ := b.st.Status(context.Background(), m)
	if half.ChunksHeld < 4 {
		t.Fatalf("%d chunks held after the partial fetch", half.ChunksHeld)
	}
	_, err = b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(garbage.h.ID(), missing.h.ID()), nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fetch of the rest from hostile providers: %v", err)
	}
	if after, _ := b.st.Status(context.Background(), m); after.ChunksHeld != half.ChunksHeld {
		t.Fatalf("hostile providers changed what was held: %d chunks, then %d", half.ChunksHeld, after.ChunksHeld)
	}
	if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(honest.h.ID()), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(openBytes(t, b.st, m), data) {
		t.Fatal("fetched file differs")
	}
}

// A server serves only what Access allows, and only chunks of the file
// named: it answers "unknown" otherwise, whether it holds the file or not.
func TestServerAccess(t *testing.T) {
	const cs = protocol.MinChunkSize
	var allowed sync.Map
	acc := AccessFunc(func(p peer.ID, root Ref) bool { _, ok := allowed.Load(root); return ok })
	a := newPeerNode(t, nil, acc, FetchOptions{})
	b := newPeerNode(t, nil, allowAll, FetchOptions{})
	testsupport.Connect(t, b.h, a.h)
	m := importBytes(t, a.st, randomBytes(t, 4*cs), Meta{Size: 4 * cs, ChunkSize: cs})
	other := importBytes(t, a.st, randomBytes(t, 4*cs), Meta{Size: 4 * cs, ChunkSize: cs, Owner: "other"})
	if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fetch of a refused file: %v", err)
	}
	if b.st.Used() != 0 {
		t.Fatal("a refused file was stored")
	}
	// Allowed for m, a peer cannot get other's chunks by naming m.
	allowed.Store(m.Root, true)
	otherRefs, _ := a.st.FileChunks(context.Background(), other.Root)
	s, err := b.h.NewStream(fetchCtx(t), a.h.ID(), protocol.ChunkProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	bw := bufio.NewWriter(s)
	protocol.NewChunkFrameWriter(bw).Write(protocol.ChunkFrame{Kind: protocol.ChunkWant, Root: m.Root.Bytes(), CIDs: [][]byte{otherRefs[0].Bytes(), other.Root.Bytes()}})
	bw.Flush()
	fr := protocol.NewChunkFrameReader(s)
	for range 2 {
		f, _, err := fr.Read()
		if err != nil || f.Kind != protocol.ChunkMissing {
			t.Fatalf("chunk of another file: kind %d, %v", f.Kind, err)
		}
	}
	if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); err != nil {
		t.Fatalf("fetch once allowed: %v", err)
	}
}

// A requester that breaks the protocol is penalised by the server.
func TestServerPenalizesBadRequests(t *testing.T) {
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	cases := map[string][]byte{
		"data frame":      mustFrame(t, protocol.ChunkFrame{Kind: protocol.ChunkData, CID: RefOf(nil).Bytes(), Data: make([]byte, 16)}),
		"undecodable":     {0x03, 0xff, 0xff, 0xff},
		"oversized frame": {0x80, 0x80, 0x80, 0x08},
	}
	for name, wire := range cases {
		b := newPeerNode(t, nil, allowAll, FetchOptions{})
		testsupport.Connect(t, b.h, a.h)
		s, err := b.h.NewStream(fetchCtx(t), a.h.ID(), protocol.ChunkProtocol)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(wire)
		io.Copy(io.Discard, s) // the server resets
		s.Reset()
		testsupport.Eventually(t, 5*time.Second, name+" penalised", func() bool { return len(a.served.of(b.h.ID())) == 1 })
	}
}

func mustFrame(t testing.TB, f protocol.ChunkFrame) []byte {
	var buf bytes.Buffer
	if _, err := protocol.NewChunkFrameWriter(&buf).Write(f); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A fetch that dies with its host (a kill, a lost connection) resumes on
// a new host over the same pebble store, reopened, and asks only for the
// chunks that had not arrived.
func TestFetchResumesAfterKill(t *testing.T) {
	const cs = protocol.MinChunkSize
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	data := randomBytes(t, 64*cs)
	m := importBytes(t, a.st, data, Meta{Size: int64(len(data)), ChunkSize: cs})

	ctx := context.Background()
	dir := t.TempDir()
	d := openPebble(t, dir)
	st, err := OpenStore(ctx, d, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := newPeerNode(t, st, allowAll, FetchOptions{Window: 2, Batch: 1})
	testsupport.Connect(t, b.h, a.h)
	var once sync.Once
	_, err = b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), func(p Progress) {
		if p.ChunksHeld >= 10 {
			once.Do(func() { go b.h.Close() })
		}
	})
	if err == nil {
		t.Fatal("fetch over a closed host succeeded")
	}
	b.srv.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openPebble(t, dir)
	defer d.Close()
	if st, err = OpenStore(ctx, d, StoreOptions{}); err != nil {
		t.Fatal(err)
	}
	before, err := st.Status(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if before.ChunksHeld < 10 || before.Complete() {
		t.Fatalf("after the kill %d of %d chunks are held", before.ChunksHeld, before.Chunks)
	}
	b2 := newPeerNode(t, st, allowAll, FetchOptions{})
	testsupport.Connect(t, b2.h, a.h)
	stats, err := b2.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil)
	if err != nil {
		t.Fatalf("resumed fetch: %v", err)
	}
	if stats.Held != before.ChunksHeld || stats.Chunks != m.Chunks()-before.ChunksHeld {
		t.Fatalf("resumed fetch: held %d, brought %d; %d were held of %d", stats.Held, stats.Chunks, before.ChunksHeld, m.Chunks())
	}
	if !bytes.Equal(openBytes(t, st, m), data) {
		t.Fatal("resumed file differs")
	}
}

// Cancelling a fetch stops it; what arrived stays, and the fetch resumes.
func TestFetchCancelAndResume(t *testing.T) {
	const cs = protocol.MinChunkSize
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	b := newPeerNode(t, nil, allowAll, FetchOptions{Window: 2, Batch: 1})
	testsupport.Connect(t, b.h, a.h)
	data := randomBytes(t, 32*cs)
	m := importBytes(t, a.st, data, Meta{Size: int64(len(data)), ChunkSize: cs})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := b.f.Fetch(ctx, m, "msg", StaticProviders(a.h.ID()), func(p Progress) {
		if p.ChunksHeld >= 5 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v", err)
	}
	st, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil)
	if err != nil || st.Held < 5 || st.Held+st.Chunks != m.Chunks() {
		t.Fatalf("resumed: %+v, %v", st, err)
	}
	if !bytes.Equal(openBytes(t, b.st, m), data) {
		t.Fatal("resumed file differs")
	}
}

// Delete for everyone during a fetch stops it: a chunk of a file no
// longer recorded is not stored.
func TestFetchStopsWhenFileDeleted(t *testing.T) {
	const cs = protocol.MinChunkSize
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	b := newPeerNode(t, nil, allowAll, FetchOptions{Window: 2, Batch: 1})
	testsupport.Connect(t, b.h, a.h)
	m := importBytes(t, a.st, randomBytes(t, 32*cs), Meta{Size: 32 * cs, ChunkSize: cs})
	var once sync.Once
	_, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), func(p Progress) {
		if p.ChunksHeld >= 3 {
			once.Do(func() {
				if err := b.st.Delete(context.Background(), m.Root); err != nil {
					t.Error(err)
				}
			})
		}
	})
	if !errors.Is(err, ErrNotHeld) {
		t.Fatalf("fetch of a deleted file: %v", err)
	}
	if b.st.Used() != 0 {
		t.Fatalf("%d bytes stored for a deleted file", b.st.Used())
	}
}

// The receiver's quota ends a fetch with ErrQuota, nobody penalised.
func TestFetchQuota(t *testing.T) {
	const cs = protocol.MinChunkSize
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	b := newPeerNode(t, memStore(t, 8*cs), allowAll, FetchOptions{})
	testsupport.Connect(t, b.h, a.h)
	m := importBytes(t, a.st, randomBytes(t, 16*cs), Meta{Size: 16 * cs, ChunkSize: cs})
	if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); !errors.Is(err, ErrQuota) {
		t.Fatalf("fetch over quota: %v", err)
	}
	if b.fetched.count() != 0 {
		t.Fatal("a provider was penalised for our quota")
	}
}

// A server over its stream limit answers busy, which costs the fetcher
// the provider for this fetch but nobody a penalty; its token bucket
// holds a peer to its rate.
func TestServerLimits(t *testing.T) {
	const cs = protocol.MinChunkSize
	t.Run("busy", func(t *testing.T) {
		a := &peerNode{h: testsupport.Host(t), st: memStore(t, 0)}
		a.srv = NewServer(a.h, a.st, allowAll, ServerOptions{MaxStreamsPerPeer: 1, Penalize: a.served.penalize})
		t.Cleanup(func() { a.srv.Close() })
		b := newPeerNode(t, nil, allowAll, FetchOptions{})
		testsupport.Connect(t, b.h, a.h)
		m := importBytes(t, a.st, randomBytes(t, 2*cs), Meta{Size: 2 * cs, ChunkSize: cs})
		held, err := b.h.NewStream(fetchCtx(t), a.h.ID(), protocol.ChunkProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Reset()
		// The held stream counts once the server has taken it.
		held.Write(mustFrame(t, protocol.ChunkFrame{Kind: protocol.ChunkWant, Root: m.Root.Bytes(), CIDs: [][]byte{m.Root.Bytes()}}))
		if f, _, err := protocol.NewChunkFrameReader(held).Read(); err != nil || f.Kind != protocol.ChunkData {
			t.Fatalf("held stream: kind %d, %v", f.Kind, err)
		}
		if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("fetch from a busy server: %v", err)
		}
		if b.fetched.count() != 0 || a.served.count() != 0 {
			t.Fatal("busy cost a penalty")
		}
	})
	t.Run("rate", func(t *testing.T) {
		const rate = 1 << 20
		a := &peerNode{h: testsupport.Host(t), st: memStore(t, 0)}
		a.srv = NewServer(a.h, a.st, allowAll, ServerOptions{Rate: rate, Burst: protocol.MaxChunkFrame})
		t.Cleanup(func() { a.srv.Close() })
		b := newPeerNode(t, nil, allowAll, FetchOptions{})
		testsupport.Connect(t, b.h, a.h)
		m := importBytes(t, a.st, randomBytes(t, 40*cs), Meta{Size: 40 * cs, ChunkSize: cs}) // 2.5 MiB
		start := time.Now()
		if _, err := b.f.Fetch(fetchCtx(t), m, "msg", StaticProviders(a.h.ID()), nil); err != nil {
			t.Fatal(err)
		}
		// The first MiB is the burst, the rest comes at the rate.
		if d, want := time.Since(start), time.Duration(float64(m.SealedSize()-protocol.MaxChunkFrame)/rate*float64(time.Second)); d < want*9/10 {
			t.Fatalf("%d bytes in %s at %d B/s, want at least %s", m.SealedSize(), d, rate, want)
		}
	})
}

// The thumbnail is fetched on its own, before the file, and shows while
// the file is not there yet.
func TestThumbnailBeforeFile(t *testing.T) {
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	b := newPeerNode(t, nil, allowAll, FetchOptions{})
	testsupport.Connect(t, b.h, a.h)
	thumbData := randomBytes(t, 25_000)
	tm := importBytes(t, a.st, thumbData, Meta{Size: 25_000, ChunkSize: protocol.MinChunkSize, Type: "image/webp", Width: 200, Height: 150})
	thumb, err := ThumbOf(tm)
	if err != nil {
		t.Fatal(err)
	}
	photoData := randomBytes(t, 3_000_000)
	photo := importBytes(t, a.st, photoData, Meta{Size: 3_000_000, Type: "image/jpeg", Width: 4000, Height: 3000, Thumb: thumb})
	enc, _ := EncodeManifest(photo)
	got, err := DecodeManifest(enc) // what b finds in the message
	if err != nil {
		t.Fatal(err)
	}
	plan := AutoDownload{MaxBytes: 1 << 20}.Plan(got)
	if !plan.Thumb || plan.File {
		t.Fatalf("plan %+v for a 3 MB photo under a 1 MiB cap", plan)
	}
	if _, err := b.f.Fetch(fetchCtx(t), got.Thumb.Manifest(), "msg", StaticProviders(a.h.ID()), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(openBytes(t, b.st, got.Thumb.Manifest()), thumbData) {
		t.Fatal("thumbnail differs")
	}
	if st, _ := b.st.Status(context.Background(), got); st.ChunksHeld != 0 {
		t.Fatalf("the photo's chunks came with the thumbnail: %+v", st)
	}
	if _, err := b.f.Fetch(fetchCtx(t), got, "msg", StaticProviders(a.h.ID()), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(openBytes(t, b.st, got), photoData) {
		t.Fatal("photo differs")
	}
}

// Two fetches of one file at once (the auto-download and a click) ask
// for each chunk once: the second waits for the first and finds the file
// in the store.
func TestConcurrentFetchesOfOneFile(t *testing.T) {
	const cs = protocol.MinChunkSize
	a := newPeerNode(t, nil, allowAll, FetchOptions{})
	b := newPeerNode(t, nil, allowAll, FetchOptions{})
	testsupport.Connect(t, b.h, a.h)
	data := randomBytes(t, 24*cs)
	m := importBytes(t, a.st, data, Meta{Size: int64(len(data)), ChunkSize: cs})
	var wg sync.WaitGroup
	stats := make([]FetchStats, 2)
	for i, owner := range []string{"auto", "click"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := b.f.Fetch(fetchCtx(t), m, owner, StaticProviders(a.h.ID()), nil)
			if err != nil {
				t.Error(err)
			}
			stats[i] = st
		}()
	}
	wg.Wait()
	if got := stats[0].Chunks + stats[1].Chunks; got != m.Chunks()+1 {
		t.Fatalf("%d chunks fetched in all for %d", got, m.Chunks()+1)
	}
	if !bytes.Equal(openBytes(t, b.st, m), data) {
		t.Fatal("fetched file differs")
	}
	// Both owners hold it.
	if deleted, err := b.st.Release(context.Background(), m.Root, "auto"); err != nil || deleted {
		t.Fatalf("release of one owner: %v, %v", deleted, err)
	}
	if _, err := b.st.Release(context.Background(), m.Root, "nobody-yet"); err != nil {
		t.Fatal(err)
	}
	if deleted, err := b.st.Release(context.Background(), m.Root, "click"); err != nil || !deleted {
		t.Fatalf("release of the last owner: %v, %v", deleted, err)
	}
	if _, err := b.st.Release(context.Background(), m.Root, "click"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release of a deleted file: %v", err)
	}
}
