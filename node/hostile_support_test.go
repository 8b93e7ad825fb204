package node

// The hostile network of hostile_test.go: A, B, the hostile member M and
// the non-member N, and the tools M forges and delivers blocks with.

import (
	"bufio"
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

type hostileNet struct {
	t          *testing.T
	a, b, m    *Node
	conv       string
	dagID      dag.DAGID
	syncID     []byte
	aDev, mDev dag.DeviceID
	honest     int // A's messages sent so far
}

func convOf(t testing.TB, n *Node, id string) *conversation {
	t.Helper()
	conv, err := n.Chat.conversation(id)
	if err != nil {
		t.Fatal(err)
	}
	return conv
}

// setupHostile starts A, B and M, has A create a conversation with both,
// and waits until M's first (honest) block and one of A's messages have
// reached B. M's automatic delivery receipts are switched off, so that the
// only blocks of M's chain are the ones the test makes.
func setupHostile(t *testing.T) *hostileNet {
	t.Helper()
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	m := startTestNode(t, loopbackConfig(t))
	introduce(t, a, b)
	introduce(t, a, m)
	c, err := a.CreateConversation(ctx, "hostile", []string{accountOf(b), accountOf(m)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, c.ID)
	waitForConversation(t, m, c.ID)
	mconv := convOf(t, m, c.ID)
	mconv.mu.Lock()
	// A pending receipt timer that never fires: scheduleDeliveryReceipt
	// does nothing while one is set (Chat.close stops it).
	mconv.receipt = time.AfterFunc(time.Hour, func() {})
	mconv.mu.Unlock()
	testsupport.Connect(t, m.Host, b.Host) // M is not B's contact; it dials B itself

	h := &hostileNet{
		t: t, a: a, b: b, m: m, conv: c.ID, dagID: mconv.dagID, syncID: mconv.syncID,
		aDev: dag.DeviceID(a.Chat.id.DeviceID()), mDev: dag.DeviceID(m.Chat.id.DeviceID()),
	}
	if _, err := m.Send(ctx, c.ID, "M joins", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 20*time.Second, "M's first message at B", func() bool { return h.hasText("M joins") > 0 })
	h.honestFlows(t)
	testsupport.Eventually(t, 10*time.Second, "B on M's topic", func() bool {
		return slices.Contains(h.topic(m).ListPeers(), b.Host.ID())
	})
	// Even then, what M publishes in the first moments after connecting
	// may not reach B's validator; give gossipsub a heartbeat or so.
	time.Sleep(1500 * time.Millisecond)
	return h
}

// honestFlows sends a message from A and waits for it at B.
func (h *hostileNet) honestFlows(t testing.TB) {
	t.Helper()
	h.honest++
	text := "honest " + string(rune('A'+h.honest%26)) + time.Now().Format("150405.000000")
	if _, err := h.a.Send(context.Background(), h.conv, text, ""); err != nil {
		t.Fatal(err)
	}
	// Gossip is best effort (a message published while the mesh forms can
	// be lost); anti-entropy would repair that within a minute, so after a
	// few seconds let B catch up with A the way anti-entropy does.
	start := time.Now()
	testsupport.Eventually(t, 15*time.Second, "A's message "+text+" at B", func() bool {
		if h.hasText(text) == 1 {
			return true
		}
		if time.Since(start) > 3*time.Second {
			h.b.Chat.syncWith(context.Background(), convOf(t, h.b, h.conv), h.a.Host.ID())
		}
		return false
	})
	if d := time.Since(start); d > 3*time.Second {
		t.Logf("A's message reached B by catch-up after %s", d.Round(time.Millisecond))
	}
}

// hasText counts B's messages with the text.
func (h *hostileNet) hasText(text string) int {
	n := 0
	for _, msg := range messages(h.t, h.b, h.conv) {
		if msg.Text == text {
			n++
		}
	}
	return n
}

func (h *hostileNet) chainAtB(d dag.DeviceID) dag.ChainState {
	v, err := h.b.Chat.store.Vector(context.Background(), h.dagID)
	if err != nil {
		h.t.Fatal(err)
	}
	return v[d]
}

func (h *hostileNet) headsAtB() []dag.Ref {
	heads, err := h.b.Chat.store.Heads(context.Background(), h.dagID)
	if err != nil {
		h.t.Fatal(err)
	}
	return heads
}

// topic is n's joined topic of the conversation for today.
func (h *hostileNet) topic(n *Node) *pubsub.Topic {
	conv := convOf(h.t, n, h.conv)
	conv.mu.Lock()
	defer conv.mu.Unlock()
	name, _ := conv.sendTopic(n.Chat.now())
	jt := conv.topics[name]
	if jt == nil {
		h.t.Fatal("not on today's topic")
	}
	return jt.topic
}

func penaltyOf(n *Node, p peer.ID) float64 {
	n.pen.mu.Lock()
	defer n.pen.mu.Unlock()
	return n.pen.valueLocked(p, n.pen.now())
}

func resetPenalty(n *Node, p peer.ID) {
	n.pen.mu.Lock()
	defer n.pen.mu.Unlock()
	delete(n.pen.score, p)
}

// captureSealer records the inner block instead of sealing it.
type captureSealer struct{ inner *[]byte }

func (s captureSealer) Seal(inner []byte) (dag.Sealed, error) {
	*s.inner = slices.Clone(inner)
	return dag.Sealed{Epoch: make([]byte, dag.EpochIDSize), Nonce: make([]byte, dag.NonceSize), Ciphertext: []byte{0}}, nil
}

// cipherSealer seals with a conversation cipher without persisting it.
type cipherSealer struct{ c *keyring.Cipher }

func (s cipherSealer) Seal(inner []byte) (dag.Sealed, error) {
	e, n, ct, err := s.c.SealBlock(inner)
	return dag.Sealed{Epoch: e, Nonce: n, Ciphertext: ct}, err
}

func randomCID() cid.Cid {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return dag.EnvelopeCID(b[:])
}

func body(t testing.TB, text string) []byte {
	t.Helper()
	b, err := crdt.EncodeOps([]crdt.Op{crdt.Message{Text: text}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// validInner is the inner block of M's next valid block at B: it extends
// M's chain as B holds it and builds on B's heads.
func (h *hostileNet) validInner(t testing.TB, text string) dag.Inner {
	t.Helper()
	var captured []byte
	heads := h.headsAtB()
	if len(heads) > dag.MaxParents {
		heads = dag.SelectMergeParents(heads)
	}
	blk, err := dag.Build(dag.BuildParams{
		Signer: blockSigner{h.m.Chat.id.Keyring.Device}, Sealer: captureSealer{&captured},
		Chain: h.chainAtB(h.mDev), Parents: heads, Body: body(t, text), Now: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return blk.Inner
}

// resign signs in with M's device key, whatever its author says.
func (h *hostileNet) resign(t testing.TB, in *dag.Inner) {
	t.Helper()
	msg, err := dag.SigningMessage(*in)
	if err != nil {
		t.Fatal(err)
	}
	if in.Sig, err = (blockSigner{h.m.Chat.id.Keyring.Device}).Sign(msg); err != nil {
		t.Fatal(err)
	}
}

// seal encrypts encoded inner bytes with a conversation cipher into an
// envelope.
func seal(t testing.TB, c *keyring.Cipher, inner []byte) ([]byte, cid.Cid) {
	t.Helper()
	epoch, nonce, ct, err := c.SealBlock(inner)
	if err != nil {
		t.Fatal(err)
	}
	env, err := dag.EncodeEnvelope(dag.Envelope{Version: dag.EnvelopeVersion, Epoch: epoch, Nonce: nonce, Ciphertext: ct})
	if err != nil {
		t.Fatal(err)
	}
	return env, dag.EnvelopeCID(env)
}

// sealInner encodes in and seals it with M's own cipher (sealed sender M).
func (h *hostileNet) sealInner(t testing.TB, in dag.Inner) ([]byte, cid.Cid) {
	t.Helper()
	b, err := dag.EncodeInner(in)
	if err != nil {
		t.Fatal(err)
	}
	return seal(t, convOf(t, h.m, h.conv).cipher, b)
}

// cipherAsA returns a key state that seals as A. Any member holds every
// member's chain keys (they all derive from the epoch secret), so M can
// compute this itself from the blocks of A it has seen; A's own state
// stands in for it here so that M's view of A's chain cannot lag behind B's.
func (h *hostileNet) cipherAsA(t testing.TB) *keyring.Cipher {
	t.Helper()
	st, err := convOf(t, h.a, h.conv).cipher.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	c, err := keyring.UnmarshalCipher(st, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gossip publishes raw bytes on n's topic of the conversation (n's own
// validator accepts its own messages without looking).
func (h *hostileNet) gossip(t testing.TB, n *Node, data ...[]byte) {
	t.Helper()
	tp := h.topic(n)
	for _, d := range data {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := tp.Publish(ctx, d)
		cancel()
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

// pushCatchup opens a catch-up session from n to B's real engine with a
// Hello that claims a long chain for M (so B's block bound lets everything
// through), sends envs in Blocks frames and Done, and returns when B has
// ended the session. B's own frames are read and dropped.
func (h *hostileNet) pushCatchup(t testing.TB, n *Node, syncID []byte, envs [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hello := protocol.Frame{Kind: protocol.FrameHello, Hello: &protocol.Hello{
		SyncID: syncID, Vector: map[string]uint64{string(h.mDev[:]): 1 << 30}, Count: 1 << 30,
	}}
	for {
		s, err := n.Host.NewStream(ctx, h.b.Host.ID(), protocol.SyncProtocol)
		if err != nil {
			t.Fatalf("open sync stream: %v", err)
		}
		if err := testsupport.WriteFrames(s, hello); err != nil {
			t.Fatal(err)
		}
		fr := protocol.NewFrameReader(bufio.NewReader(s))
		f, _, err := fr.Read()
		if err != nil {
			t.Fatalf("read hello: %v", err)
		}
		if f.Kind == protocol.FrameError && f.Error == protocol.SyncReasonBusy {
			s.Reset()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if f.Kind != protocol.FrameHello {
			s.Reset()
			t.Logf("B answered %+v", f)
			return
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				if _, _, err := fr.Read(); err != nil {
					return
				}
			}
		}()
		bw := bufio.NewWriterSize(s, 64<<10)
		fw := protocol.NewFrameWriter(bw)
		write := func(f protocol.Frame) bool {
			if _, err := fw.Write(f); err != nil {
				return false
			}
			return bw.Flush() == nil
		}
		ok := true
		for i := 0; i < len(envs) && ok; {
			j, size := i, 0
			for j < len(envs) && j-i < protocol.MaxFrameEnvelopes && size+len(envs[j])+16 < protocol.MaxSyncFrame-64 {
				size += len(envs[j]) + 16
				j++
			}
			ok = write(protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: envs[i:j]})
			i = j
		}
		if ok && write(protocol.Frame{Kind: protocol.FrameDone, Sent: uint64(len(envs))}) {
			_ = s.CloseWrite()
		}
		select {
		case <-drained:
		case <-ctx.Done():
			t.Error("B did not end the session")
		}
		// Close, not Reset: B may still be ingesting what it read.
		_ = s.Close()
		testsupport.Eventually(t, 20*time.Second, "B to end the session", func() bool {
			return h.b.Chat.catchup.InboundSessions(n.Host.ID()) == 0
		})
		s.Reset()
		return
	}
}

// deliver sends envs from M by gossip or by catch-up.
func (h *hostileNet) deliver(t testing.TB, how string, envs ...[]byte) {
	t.Helper()
	if how == "gossip" {
		h.gossip(t, h.m, envs...)
	} else {
		h.pushCatchup(t, h.m, h.syncID, envs)
	}
}

// refused asserts that B penalised from (by at least min) and neither
// committed nor staged any of the blocks.
func (h *hostileNet) refused(t testing.TB, from peer.ID, min float64, cids ...cid.Cid) {
	t.Helper()
	// Penalties decay continuously: what was added is a little less by
	// the time it is read.
	testsupport.Eventually(t, 10*time.Second, "a penalty", func() bool { return penaltyOf(h.b, from) >= 0.95*min })
	for _, c := range cids {
		has, err := h.b.Chat.store.Has(context.Background(), h.dagID, c)
		if err != nil {
			t.Fatal(err)
		}
		if has || h.b.Chat.store.IsStaged(h.dagID, c) {
			t.Errorf("B took the bad block %s (committed %v)", c, has)
		}
	}
}

// attack runs one hostile delivery: reset M's standing at B, deliver, and
// check the refusal, the penalty and that honest traffic still flows.
func (h *hostileNet) attack(t *testing.T, how string, min float64, text string, envs [][]byte, cids []cid.Cid) {
	t.Helper()
	resetPenalty(h.b, h.m.Host.ID())
	resetPenalty(h.a, h.m.Host.ID()) // A sees M's gossip too; keep them connected
	h.deliver(t, how, envs...)
	h.refused(t, h.m.Host.ID(), min, cids...)
	if text != "" && h.hasText(text) != 0 {
		t.Errorf("B shows the forged message %q", text)
	}
	h.honestFlows(t)
}
