package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

// pair makes two personal nodes that hold each other's cards.
func chatPair(t testing.TB) (a, b *Node) {
	t.Helper()
	a = startTestNode(t, loopbackConfig(t))
	b = startTestNode(t, loopbackConfig(t))
	introduce(t, a, b)
	return a, b
}

func introduce(t testing.TB, a, b *Node) {
	t.Helper()
	ctx := context.Background()
	ca, err := a.Card(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.Card(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddContact(ctx, cb); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddContact(ctx, ca); err != nil {
		t.Fatal(err)
	}
}

func accountOf(n *Node) string {
	a := n.Chat.id.AccountID()
	return hex.EncodeToString(a[:])
}

func messages(t testing.TB, n *Node, conv string) []webui.Message {
	t.Helper()
	p, err := n.Messages(context.Background(), conv, 0, 500)
	if err != nil {
		t.Fatal(err)
	}
	return p.Messages
}

func waitForConversation(t testing.TB, n *Node, id string) {
	t.Helper()
	testsupport.Eventually(t, 20*time.Second, "the conversation to arrive", func() bool {
		_, err := n.Chat.conversation(id)
		return err == nil
	})
}

func TestTwoNodesChat(t *testing.T) {
	a, b := chatPair(t)
	ctx := context.Background()
	conv, err := a.CreateConversation(ctx, "lunch", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, conv.ID)
	testsupport.Eventually(t, 10*time.Second, "b to see the title", func() bool {
		cs, _ := b.Conversations(ctx)
		return len(cs) == 1 && cs[0].Title == "lunch" && len(cs[0].Members) == 2
	})

	sent, err := a.Send(ctx, conv.ID, "hello bob", "")
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "b to receive the message", func() bool {
		ms := messages(t, b, conv.ID)
		return len(ms) == 1 && ms[0].Text == "hello bob" && !ms[0].Mine
	})
	if _, err := b.Send(ctx, conv.ID, "hi alice", sent.ID); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "a to receive the reply", func() bool {
		ms := messages(t, a, conv.ID)
		return len(ms) == 2 && ms[1].Text == "hi alice" && ms[1].ReplyTo == sent.ID
	})
	// a's message: delivered once b's receipt arrives, read after b reads.
	testsupport.Eventually(t, 10*time.Second, "delivered", func() bool {
		return messages(t, a, conv.ID)[0].Status == "delivered"
	})
	if err := b.MarkRead(ctx, conv.ID); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "read", func() bool {
		return messages(t, a, conv.ID)[0].Status == "read"
	})
	// Both replicas converge to the same state.
	testsupport.Eventually(t, 10*time.Second, "equal state hashes", func() bool {
		return stateHash(t, a, conv.ID) == stateHash(t, b, conv.ID)
	})
}

func stateHash(t testing.TB, n *Node, id string) [32]byte {
	conv := convOf(t, n, id)
	conv.mu.Lock()
	defer conv.mu.Unlock()
	return conv.state.StateHash()
}

// A device that was away while the conversation went through several
// epochs catches up without a failed session: each batch that crosses a
// rotation is taken whole (the rotation installs the epoch the rest of the
// batch is sealed under). It used to fail the session at every rotation
// crossed and wait at least a second, then a growing backoff, for the next.
func TestCatchUpAcrossRotations(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	ac := convOf(t, a, conv.ID)
	bdir := b.Dir
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	const epochs = 8
	for i := range epochs {
		if _, err := a.Chat.rotate(ctx, ac, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if _, err := a.Send(ctx, conv.ID, fmt.Sprintf("epoch %d message %d", i, j), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	b2, err := Start(ctx, bdir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	testsupport.Eventually(t, 30*time.Second, "b to catch up across the rotations", func() bool {
		return len(messages(t, b2, conv.ID)) == epochs*3
	})
	if n := catchupSessions(t, b2, "error"); n != 0 {
		t.Fatalf("%v catch-up sessions failed (%v ended well)", n, catchupSessions(t, b2, "ok"))
	}
	if sendingEpoch(t, b2, conv.ID) != sendingEpoch(t, a, conv.ID) {
		t.Fatal("b does not send under a's current epoch")
	}
}

// catchupSessions reads n's count of catch-up sessions (both roles) with
// the given outcome from its metrics.
func catchupSessions(t testing.TB, n *Node, outcome string) float64 {
	t.Helper()
	mfs, err := n.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "glitr_catchup_sessions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// B is offline while A writes; when B comes back (on new ports, with the
// same data directory) it catches up, and A's offline messages reach it.
func TestCatchUpAfterOffline(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	bdir := b.Dir
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if _, err := a.Send(ctx, conv.ID, "offline message "+string(rune('a'+i%26)), ""); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody has them yet: they are "sending".
	if ms := messages(t, a, conv.ID); ms[n-1].Status != "sending" {
		t.Fatalf("status with no peer = %q, want sending", ms[n-1].Status)
	}
	b2, err := Start(ctx, bdir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	// b2 listens on new ports; it dials a from a's card.
	testsupport.Eventually(t, 30*time.Second, "b to catch up", func() bool {
		return len(messages(t, b2, conv.ID)) == n
	})
	testsupport.Eventually(t, 10*time.Second, "a to see its messages leave the outbox", func() bool {
		s := messages(t, a, conv.ID)[n-1].Status
		return s == "sent" || s == "delivered" || s == "read"
	})
	testsupport.Eventually(t, 10*time.Second, "equal state hashes", func() bool {
		return stateHash(t, a, conv.ID) == stateHash(t, b2, conv.ID)
	})
}
