package node

// Tests of what starts a catch-up and how sessions are spaced
// (chat_sync.go) that need no network lab.

import (
	"context"
	"crypto/rand"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// TestGossipGapStartsCatchUp isolates the other trigger of a heal on
// loopback: a gossiped block whose previous block never arrived (B's
// validator drops it, as a lost gossip message or a partition would) makes
// B catch up with the forwarder at once. Without that trigger the gap
// would wait for A's delivery check (confirmAfter, 3 s after A's publish)
// or anti-entropy (30–60 s).
func TestGossipGapStartsCatchUp(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	if _, err := a.Send(ctx, conv.ID, "before", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "the first message at B", func() bool { return hasMessage(t, b, conv.ID, "before") })
	bconv := convOf(t, b, conv.ID)
	name := sendTopicOf(bconv, b.Chat.now())
	testsupport.Eventually(t, 10*time.Second, "A and B on each other's topic", func() bool {
		bconv.mu.Lock()
		jt := bconv.topics[name]
		bconv.mu.Unlock()
		aconv := convOf(t, a, conv.ID)
		aconv.mu.Lock()
		ajt := aconv.topics[name]
		aconv.mu.Unlock()
		return jt != nil && ajt != nil && slices.Contains(jt.topic.ListPeers(), a.Host.ID()) && slices.Contains(ajt.topic.ListPeers(), b.Host.ID())
	})
	// B's validator for today's topic, with a switch that drops what A
	// gossips (ignored, so gossipsub does not ask for it again).
	var drop atomic.Bool
	validate := b.Chat.validator(bconv)
	if err := b.PubSub.UnregisterTopicValidator(name); err != nil {
		t.Fatal(err)
	}
	if err := b.PubSub.RegisterTopicValidator(name, func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if drop.Load() {
			return pubsub.ValidationIgnore
		}
		return validate(ctx, from, m)
	}); err != nil {
		t.Fatal(err)
	}
	// Past the spacing of sessions with one peer (the welcome's catch-up
	// was just now), so that the time measured is the trigger's own.
	time.Sleep(syncInterval)
	drop.Store(true)
	sent := time.Now()
	if _, err := a.Send(ctx, conv.ID, "lost", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if hasMessage(t, b, conv.ID, "lost") {
		t.Fatal(`B took "lost" although its validator dropped it`)
	}
	drop.Store(false)
	if _, err := a.Send(ctx, conv.ID, "after", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "both messages at B", func() bool {
		return hasMessage(t, b, conv.ID, "lost") && hasMessage(t, b, conv.ID, "after")
	})
	took := time.Since(sent)
	t.Logf("the gap was filled %v after the lost message was sent", took.Round(time.Millisecond))
	if took >= confirmAfter {
		t.Errorf("the gap was filled %v after the lost message was sent: by A's delivery check (%v), not by the gossiped block that revealed it", took.Round(time.Millisecond), confirmAfter)
	}
}

// TestGossipJunkSessionsBounded has a member gossip envelopes under
// made-up epochs, which a receiver cannot tell from blocks under an epoch
// still on its way: each asks for a catch-up with the forwarder. The
// sessions B runs with M for it are spaced further each time one brings
// nothing (1 s, 2 s, 4 s…), instead of one a second for as long as the
// junk flows.
func TestGossipJunkSessionsBounded(t *testing.T) {
	h := setupHostile(t)
	var toM atomic.Int32
	for _, proto := range []libp2pprotocol.ID{protocol.SyncProtocol, protocol.SyncProtocolRecon} {
		h.m.Host.SetStreamHandler(proto, func(s network.Stream) {
			if s.Conn().RemotePeer() == h.b.Host.ID() {
				toM.Add(1)
			}
			h.m.Chat.catchup.Handle(s)
		})
	}
	junk := func() []byte {
		env, err := dag.EncodeEnvelope(dag.Envelope{
			Version: dag.EnvelopeVersion,
			Epoch:   randomBytes(dag.EpochIDSize),
			Nonce:   randomBytes(dag.NonceSize),
			// Long enough to be a block: only the epoch is made up.
			Ciphertext: randomBytes(512),
		})
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	const flow = 6 * time.Second
	start := time.Now()
	for time.Since(start) < flow {
		h.gossip(t, h.m, junk())
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	n := toM.Load()
	t.Logf("%v of junk gossip from M: B ran %d catch-up sessions with M", flow, n)
	if n == 0 {
		t.Fatal("no session at all: the junk did not reach B's validator, or an epoch it lacks no longer starts a catch-up")
	}
	// 0, 1, 3 s (7 s is past the flow), plus one for a session another
	// trigger started; one a second would be about 6.
	if n > 4 {
		t.Errorf("B ran %d sessions with M during %v of junk; want at most 4", n, flow)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
