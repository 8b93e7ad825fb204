package history

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"iter"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// clearSealer "seals" by copying: these tests are about the transfer, not
// the encryption (history pairs carry the inner block in the clear to the
// device that needs it).
type clearSealer struct{}

func (clearSealer) Seal(inner []byte) (dag.Sealed, error) {
	return dag.Sealed{Epoch: bytes.Repeat([]byte{1}, 16), Nonce: bytes.Repeat([]byte{2}, 24), Ciphertext: bytes.Clone(inner)}, nil
}

// chain builds n signed blocks by one certified device.
func chain(t *testing.T, n int) []dag.Block {
	t.Helper()
	id := testsupport.NewIdentity(t, "laptop")
	dev, cert := id.Device, id.Cert
	signer := dag.Ed25519Signer{Key: ed25519.NewKeyFromSeed(dev.Seed())}
	var out []dag.Block
	var cs dag.ChainState
	for i := range n {
		p := dag.BuildParams{Signer: signer, Sealer: clearSealer{}, Chain: cs, Body: []byte{byte(i)}, Now: time.Now()}
		if i == 0 {
			p.Cert = cert
		} else {
			p.Parents = []dag.Ref{cs.Last}
		}
		b, err := dag.Build(p)
		if err != nil {
			t.Fatal(err)
		}
		cs = dag.ChainState{Seq: b.Inner.Seq, Last: dag.Ref{CID: b.CID, Height: b.Inner.Height, Lamport: b.Inner.Lamport}}
		out = append(out, b)
	}
	return out
}

// fakeStore holds one conversation's blocks and says who its members and
// own devices are.
type fakeStore struct {
	conv    []byte
	mu      sync.Mutex
	blocks  []dag.Block
	got     []dag.Block
	members map[peer.ID]bool
	own     map[peer.ID]bool
}

func (f *fakeStore) Holds(conv []byte) bool { return bytes.Equal(conv, f.conv) }
func (f *fakeStore) Blocks(_ context.Context, conv []byte) iter.Seq2[dag.Block, error] {
	return func(yield func(dag.Block, error) bool) {
		for _, b := range f.blocks {
			if !yield(b, nil) {
				return
			}
		}
	}
}
func (f *fakeStore) Ingest(_ context.Context, _ []byte, _ peer.ID, blocks []dag.Block) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, blocks...)
	return nil
}
func (f *fakeStore) OwnDevice(p peer.ID) bool { return f.own[p] }
func (f *fakeStore) Member(_ []byte, p peer.ID) bool {
	return f.members[p]
}
func (f *fakeStore) Peers([]byte) []peer.ID {
	var out []peer.ID
	for p := range f.members {
		out = append(out, p)
	}
	return out
}
func (f *fakeStore) OwnDevices() []peer.ID {
	var out []peer.ID
	for p := range f.own {
		out = append(out, p)
	}
	return out
}
func (f *fakeStore) received() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

type node struct {
	h     host.Host
	store *fakeStore
	svc   *Service
	pen   atomic.Int32
}

func newNode(t *testing.T, conv []byte, blocks []dag.Block) *node {
	t.Helper()
	n := &node{h: testsupport.Host(t), store: &fakeStore{conv: conv, blocks: blocks, members: map[peer.ID]bool{}, own: map[peer.ID]bool{}}}
	pen := func(peer.ID, float64, string) { n.pen.Add(1) }
	n.svc = New(n.h, n.store, Options{Requests: request.NewLimiter(pen), Penalize: pen, Logger: testsupport.Logger(t)})
	n.svc.Start()
	t.Cleanup(n.svc.Close)
	return n
}

// The welcomer's history arrives whole and in order, in several frames;
// the same stream from a peer that did not welcome this device is refused.
func TestHistoryFromTheWelcomerOnly(t *testing.T) {
	ctx := context.Background()
	conv := bytes.Repeat([]byte{9}, 16)
	blocks := chain(t, batch+40) // two frames
	admin, newcomer, other := newNode(t, conv, blocks), newNode(t, conv, nil), newNode(t, conv, blocks)
	testsupport.Connect(t, admin.h, newcomer.h)
	testsupport.Connect(t, other.h, newcomer.h)

	if err := other.svc.Send(ctx, conv, newcomer.h.ID()); err == nil {
		t.Fatal("history from a peer that did not welcome the device was taken")
	}
	newcomer.svc.Welcomed(conv, admin.h.ID())
	if err := admin.svc.Send(ctx, conv, newcomer.h.ID()); err != nil {
		t.Fatal(err)
	}
	if got := newcomer.store.received(); got != len(blocks) {
		t.Fatalf("%d blocks received, want %d", got, len(blocks))
	}
	for i, b := range newcomer.store.got {
		if b.CID != blocks[i].CID {
			t.Fatalf("block %d out of order", i)
		}
	}
	// The welcomer's history is taken once; a second stream is refused.
	if err := admin.svc.Send(ctx, conv, newcomer.h.ID()); err == nil {
		t.Fatal("a second unasked history was taken")
	}
}

// A history whose block does not match its author's signature is refused
// and its sender penalised; nothing of it is ingested.
func TestForgedHistoryIsRefused(t *testing.T) {
	conv := bytes.Repeat([]byte{9}, 16)
	blocks := chain(t, 3)
	pairs := make([][2][]byte, 0, len(blocks))
	for _, b := range blocks {
		env, _ := b.EnvelopeBytes()
		inner, _ := b.InnerBytes()
		pairs = append(pairs, [2][]byte{env, inner})
	}
	if _, err := Verify(pairs); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(pairs[1][1])
	forged[len(forged)-1] ^= 1
	bad := [][2][]byte{pairs[0], {pairs[1][0], forged}}
	if _, err := Verify(bad); !errors.Is(err, protocol.ErrBadPeer) {
		t.Fatalf("a tampered inner block: %v, want ErrBadPeer", err)
	}
	if _, err := Verify([][2][]byte{{pairs[0][0], []byte("not a block")}}); !errors.Is(err, protocol.ErrBadPeer) {
		t.Fatalf("an inner that does not decode: %v, want ErrBadPeer", err)
	}
	// Over the wire: the newcomer resets and penalises the sender.
	admin, newcomer := newNode(t, conv, nil), newNode(t, conv, nil)
	testsupport.Connect(t, admin.h, newcomer.h)
	newcomer.svc.Welcomed(conv, admin.h.ID())
	st, err := admin.h.NewStream(context.Background(), newcomer.h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFrame(st, frame{Conversation: conv, Blocks: bad}); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	testsupport.Eventually(t, 5*time.Second, "the penalty", func() bool { return newcomer.pen.Load() > 0 })
	if newcomer.store.received() != 0 {
		t.Fatal("a forged history was ingested")
	}
}

// A device asks for the history it cannot read; a member answers it, and
// the stream it sends is taken because it was asked. A non-member's
// request is refused.
func TestRequestedHistory(t *testing.T) {
	conv := bytes.Repeat([]byte{9}, 16)
	blocks := chain(t, 10)
	member, asker, stranger := newNode(t, conv, blocks), newNode(t, conv, nil), newNode(t, conv, nil)
	testsupport.Connect(t, asker.h, member.h)
	testsupport.Connect(t, stranger.h, member.h)
	member.store.members[asker.h.ID()] = true
	asker.store.members[member.h.ID()] = true

	asker.svc.Request(conv)
	testsupport.Eventually(t, 10*time.Second, "the requested history", func() bool { return asker.store.received() == len(blocks) })

	if err := request.Ack(context.Background(), stranger.h, member.h.ID(), RequestProtocol, conv, 5*time.Second); err == nil {
		t.Fatal("a non-member was promised the history")
	}
	// A request is not repeated while the last one is recent.
	before := asker.store.received()
	asker.svc.Request(conv)
	time.Sleep(100 * time.Millisecond)
	if asker.store.received() != before {
		t.Fatal("a second request within requestEvery was made")
	}
}
