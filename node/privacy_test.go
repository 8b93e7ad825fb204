package node

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
)

// A member removed from a group watches nothing of what follows (issue 14,
// item 1): the members publish on topics of the new epoch, which the
// removed node has not joined and cannot name; a catch-up it starts is
// served only the blocks under epochs sealed to it (so it learns of its
// removal, and nothing after); a stranger with the sync id is answered as
// for a conversation the member does not hold. A member that was offline
// across the removal converges when it comes back.
func TestRemovedMemberSeesNoNewTraffic(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	b, c := startTestNode(t, loopbackConfig(t)), startTestNode(t, loopbackConfig(t))
	bDir := b.Dir
	for _, o := range []*Node{b, c} {
		introduce(t, a, o)
		testsupport.Connect(t, o.Host, a.Host)
	}
	introduce(t, b, c)
	testsupport.Connect(t, b.Host, c.Host)
	conv, err := a.Chat.CreateConversation(ctx, "three", []keyring.AccountID{b.Chat.id.AccountID(), c.Chat.id.AccountID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Node{b, c} {
		waitForConversation(t, o, conv)
	}
	if _, err := c.Send(ctx, conv, "hello from C", ""); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Node{a, b} {
		testsupport.Eventually(t, 15*time.Second, "C's message", func() bool { return hasText(t, o, conv, "hello from C") })
	}
	before := sendTopicOf(convOf(t, a, conv), a.Chat.now())

	// B goes away; A removes C and writes.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Chat.RemoveMember(ctx, conv, c.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, conv, "after C left", ""); err != nil {
		t.Fatal(err)
	}
	after := sendTopicOf(convOf(t, a, conv), a.Chat.now())
	if after == before || after == "" {
		t.Fatalf("the topic did not change with the epoch that removed C (%q)", after)
	}
	cc := convOf(t, c, conv)
	// C learns it was removed (the rotation is sealed under the epoch it
	// holds), so its state converges to "not a member"; then nothing more.
	testsupport.Eventually(t, 15*time.Second, "C to see its removal", func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		member, _ := cc.state.IsMember(crdtAccount(c))
		return !member
	})
	cc.mu.Lock()
	_, joined := cc.topics[after]
	cc.mu.Unlock()
	if joined {
		t.Fatal("the removed member joined the members' new topic")
	}
	// A catch-up C starts is served only what C can read, which it
	// already holds: not one block of the new epoch crosses.
	if st, err := c.Chat.catchup.Sync(ctx, a.Host.ID(), cc.syncID); err != nil || st.BlocksRecv != 0 {
		t.Fatalf("the removed member's catch-up: %d blocks received (%v), want none", st.BlocksRecv, err)
	}
	// A stranger who learnt the sync id is answered as if A did not hold
	// the conversation.
	stranger := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, stranger.Host, a.Host)
	if _, err := stranger.Chat.catchup.Sync(ctx, a.Host.ID(), cc.syncID); !errors.Is(err, catchup.ErrUnknown) {
		t.Fatalf("a stranger's catch-up: %v, want ErrUnknown", err)
	}
	if hasText(t, c, conv, "after C left") {
		t.Fatal("the removed member read a message sent after its removal")
	}

	// B comes back (same data directory) and converges: the removal, the
	// new epoch and A's message.
	b2, err := Start(ctx, bDir, Options{Version: "test", Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	testsupport.Connect(t, b2.Host, a.Host)
	testsupport.Eventually(t, 20*time.Second, "B to read A's message after coming back", func() bool { return hasText(t, b2, conv, "after C left") })
	if _, err := b2.Send(ctx, conv, "B is back", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "B's message at A", func() bool { return hasText(t, a, conv, "B is back") })
	if got := sendTopicOf(convOf(t, b2, conv), b2.Chat.now()); got != after {
		t.Fatalf("B publishes on %q, A on %q", got, after)
	}
	testsupport.Eventually(t, 15*time.Second, "equal state hashes at A and B", func() bool {
		return stateHash(t, a, conv) == stateHash(t, b2, conv)
	})
	time.Sleep(500 * time.Millisecond) // anything in flight to C would have arrived by now
	if hasText(t, c, conv, "B is back") {
		t.Fatal("the removed member read a message sent after its removal")
	}
}

// Rotations gossiped in a burst may arrive out of order; rotation k+1,
// sealed under epoch k, is held until rotation k has installed that epoch
// and then applied at once, with no catch-up (issue 14, item 3).
func TestRotationsOutOfOrderApplyOnArrival(t *testing.T) {
	ctx := context.Background()
	a, b, conv := pairConversation(t)
	ac, bc := convOf(t, a, conv.ID), convOf(t, b, conv.ID)
	testsupport.Eventually(t, 15*time.Second, "B to hold A's blocks", func() bool { return stateHash(t, a, conv.ID) == stateHash(t, b, conv.ID) })
	// B stops taking anything from A but what this test hands it: A is
	// graylisted at B (no gossip, no catch-up, no connection).
	b.pen.add(a.Host.ID(), 10*-scoreThresholds.GraylistThreshold)
	_ = b.Host.Network().ClosePeer(a.Host.ID())
	testsupport.Eventually(t, 5*time.Second, "A and B apart", func() bool {
		return len(b.Host.Network().ConnsToPeer(a.Host.ID())) == 0
	})
	var rots [][]byte
	var rotCIDs []cid.Cid
	for range 2 {
		if _, err := a.Chat.rotate(ctx, ac, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		heads, err := a.Chat.store.Heads(ctx, ac.dagID)
		if err != nil || len(heads) != 1 {
			t.Fatalf("A's heads after a rotation: %v %v", heads, err)
		}
		blk, err := a.Chat.store.Get(ctx, ac.dagID, heads[0].CID)
		if err != nil {
			t.Fatal(err)
		}
		env, err := blk.EnvelopeBytes()
		if err != nil {
			t.Fatal(err)
		}
		rots = append(rots, env)
		rotCIDs = append(rotCIDs, blk.CID)
	}
	validate := b.Chat.validator(bc)
	gossip := func(env []byte) {
		validate(ctx, a.Host.ID(), &pubsub.Message{Message: &pb.Message{Data: env}, ReceivedFrom: a.Host.ID()})
	}
	gossip(rots[1]) // sealed under the epoch rots[0] brings
	gossip(rots[0])
	for i, c := range rotCIDs {
		if has, err := b.Chat.store.Has(ctx, bc.dagID, c); err != nil || !has {
			t.Fatalf("B did not take rotation %d on arrival (%v)", i, err)
		}
	}
	ac.mu.Lock()
	aEpoch, _, _ := ac.cipher.Sent()
	ac.mu.Unlock()
	bc.mu.Lock()
	has := bc.cipher.HasEpoch(aEpoch)
	bc.mu.Unlock()
	if !has {
		t.Fatal("B does not hold the epoch of the second rotation")
	}
}

// Gossip topic names cannot be linked (issue 14, metadata budget): two
// conversations of the same members, the same conversation on two days,
// and one conversation before and after a rotation all have names that
// share nothing but the "glitr/" prefix.
func TestTopicNamesUnlinkable(t *testing.T) {
	ctx := context.Background()
	a, b, first := pairConversation(t)
	second, err := a.Chat.CreateConversation(ctx, "", []keyring.AccountID{b.Chat.id.AccountID()})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := convOf(t, a, first.ID), convOf(t, a, second)
	now := a.Chat.now()
	names := map[string]string{
		"first today":     sendTopicOf(c1, now),
		"first tomorrow":  sendTopicOf(c1, now.Add(24*time.Hour)),
		"second today":    sendTopicOf(c2, now),
		"second tomorrow": sendTopicOf(c2, now.Add(24*time.Hour)),
	}
	if _, err := a.Chat.rotate(ctx, c1, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	names["first today, next epoch"] = sendTopicOf(c1, now)
	seen := map[string]string{}
	for what, name := range names {
		hexPart, ok := strings.CutPrefix(name, "glitr/")
		if !ok || len(hexPart) != 32 {
			t.Fatalf("%s: topic %q", what, name)
		}
		if other, dup := seen[name]; dup {
			t.Fatalf("%s and %s share the topic %q", what, other, name)
		}
		seen[name] = what
		for otherName, other := range seen {
			if otherName != name && strings.HasPrefix(otherName, "glitr/"+hexPart[:8]) {
				t.Fatalf("%s and %s share a prefix: %q, %q", what, other, name, otherName)
			}
		}
	}
}

// A stolen laptop whose keyring is locked by a passphrase yields no
// content and no names (issue 14, metadata budget): the data directory,
// read byte for byte, holds neither a message's text nor the contact's or
// the account's display name — messages and the account's state are
// sealed blocks, key state is sealed at rest, and the keyring's key is
// derived from the passphrase.
func TestStolenLockedLaptopHoldsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	dir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Start(ctx, dir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestNode(t, loopbackConfig(t))
	if _, err := a.CreateAccount(ctx, "Adaline Quartermain", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateAccount(ctx, "Bartholomew Zanzibar", ""); err != nil {
		t.Fatal(err)
	}
	conv := befriend(t, a, b)
	secret := "the treasure is under the third oak"
	if _, err := b.Send(ctx, conv, secret, ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the secret at A", func() bool { return hasText(t, a, conv, secret) })
	if _, err := a.Send(ctx, conv, "noted: "+secret, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	needles := []string{secret, "treasure", "Adaline", "Quartermain", "Bartholomew", "Zanzibar"}
	var files int
	err = filepath.WalkDir(dir.Path, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				t.Errorf("%s holds %q in the clear", filepath.Base(path), n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("only %d files in the data directory: nothing was read", files)
	}
}
