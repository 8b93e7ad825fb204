package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
)

func hasText(t testing.TB, n *Node, conv, text string) bool {
	for _, m := range messages(t, n, conv) {
		if m.Text == text {
			return true
		}
	}
	return false
}

// A group of four: three start it, the admin adds the fourth (who gets the
// history), everyone reads everyone; after the admin removes D, the epoch
// rotates, the others keep chatting and D can open nothing new.
func TestGroupAddAndRemoveMember(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	others := []*Node{startTestNode(t, loopbackConfig(t)), startTestNode(t, loopbackConfig(t)), startTestNode(t, loopbackConfig(t))}
	b, c, d := others[0], others[1], others[2]
	for _, o := range others {
		introduce(t, a, o)
		testsupport.Connect(t, o.Host, a.Host)
	}
	conv, err := a.Chat.CreateConversation(ctx, "four", []keyring.AccountID{b.Chat.id.AccountID(), c.Chat.id.AccountID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Node{b, c} {
		waitForConversation(t, o, conv)
		oc, _ := o.Chat.conversation(conv)
		if err := o.Chat.synced(ctx, oc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Send(ctx, conv, "before D", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "B's message at A", func() bool { return hasText(t, a, conv, "before D") })

	// Only admins change the membership.
	if err := b.Chat.AddMember(ctx, conv, d.Chat.id.AccountID()); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("non-admin add = %v, want ErrNotAdmin", err)
	}
	if err := a.Chat.AddMember(ctx, conv, c.Chat.id.AccountID()); err != nil {
		t.Fatalf("adding an existing member: %v", err)
	}
	if err := b.Chat.RemoveMember(ctx, conv, c.Chat.id.AccountID()); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("non-admin removal = %v, want ErrNotAdmin", err)
	}
	if err := a.Chat.AddMember(ctx, conv, d.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, d, conv)
	testsupport.Eventually(t, 15*time.Second, "D to receive the history", func() bool { return hasText(t, d, conv, "before D") })
	testsupport.Eventually(t, 15*time.Second, "D to write", func() bool {
		_, err := d.Send(ctx, conv, "hi from D", "")
		return err == nil
	})
	for i, n := range []*Node{a, b, c} {
		testsupport.Eventually(t, 15*time.Second, fmt.Sprintf("D's message at node %d (A, B, C)", i), func() bool { return hasText(t, n, conv, "hi from D") })
	}

	if err := a.Chat.RemoveMember(ctx, conv, d.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, conv, "after D left", ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{b, c} {
		testsupport.Eventually(t, 15*time.Second, "the post-removal message at B and C", func() bool { return hasText(t, n, conv, "after D left") })
	}
	testsupport.Eventually(t, 15*time.Second, "B to switch to the new epoch", func() bool {
		_, err := b.Send(ctx, conv, "B under the new epoch", "")
		return err == nil
	})
	testsupport.Eventually(t, 15*time.Second, "B's message at A and C", func() bool {
		return hasText(t, a, conv, "B under the new epoch") && hasText(t, c, conv, "B under the new epoch")
	})
	// D saw its removal (sealed under the old epoch) but none of the rest.
	time.Sleep(time.Second)
	if hasText(t, d, conv, "after D left") || hasText(t, d, conv, "B under the new epoch") {
		t.Fatal("the removed member read a message sent after its removal")
	}
	dc, _ := d.Chat.conversation(conv)
	dc.mu.Lock()
	member, _ := dc.state.IsMember(crdtAccount(d))
	dc.mu.Unlock()
	if member {
		t.Fatal("D does not know it was removed")
	}
}

func crdtAccount(n *Node) crdt.AccountID { return crdt.AccountID(n.Chat.id.AccountID()) }

func memberSet(n *Node, conv string) map[crdt.AccountID]bool {
	c, err := n.Chat.conversation(conv)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[crdt.AccountID]bool{}
	for _, m := range c.state.Members() {
		out[m.Account] = true
	}
	return out
}

// Two admins act concurrently: A removes B while B, not yet knowing it,
// adds D. The CRDT's strong-remove rule voids B's concurrent add, every
// replica agrees, and the next epoch reaches only the remaining members.
func TestGroupConcurrentAddAndRemove(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	c := startTestNode(t, loopbackConfig(t))
	d := startTestNode(t, loopbackConfig(t))
	introduce(t, a, b)
	introduce(t, a, c)
	introduce(t, b, c)
	introduce(t, b, d)
	testsupport.Connect(t, b.Host, a.Host)
	testsupport.Connect(t, c.Host, a.Host)
	testsupport.Connect(t, c.Host, b.Host)
	testsupport.Connect(t, d.Host, b.Host)
	conv, err := a.Chat.CreateConversation(ctx, "admins", []keyring.AccountID{b.Chat.id.AccountID(), c.Chat.id.AccountID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{b, c} {
		waitForConversation(t, n, conv)
	}
	if err := a.Chat.SetAdmin(ctx, conv, b.Chat.id.AccountID(), true); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "B to become admin", func() bool {
		bc, err := b.Chat.conversation(conv)
		if err != nil {
			return false
		}
		bc.mu.Lock()
		defer bc.mu.Unlock()
		_, admin := bc.state.IsMember(crdtAccount(b))
		return admin
	})

	// B is cut off from A and C; both admins act before they hear of
	// each other.
	for _, p := range []*Node{a, c} {
		_ = b.Host.Network().ClosePeer(p.Host.ID())
		_ = p.Host.Network().ClosePeer(b.Host.ID())
	}
	if err := b.Chat.AddMember(ctx, conv, d.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	if err := a.Chat.RemoveMember(ctx, conv, b.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	testsupport.Connect(t, b.Host, a.Host)
	testsupport.Connect(t, b.Host, c.Host)

	want := map[crdt.AccountID]bool{crdtAccount(a): true, crdtAccount(c): true}
	for _, n := range []*Node{a, b, c} {
		testsupport.Eventually(t, 20*time.Second, "every replica to agree on the members", func() bool {
			got := memberSet(n, conv)
			if len(got) != len(want) {
				return false
			}
			for k := range want {
				if !got[k] {
					return false
				}
			}
			return true
		})
	}
	if _, err := a.Send(ctx, conv, "only A and C", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "C to read A", func() bool { return hasText(t, c, conv, "only A and C") })
	time.Sleep(time.Second)
	for _, n := range []*Node{b, d} {
		if _, err := n.Chat.conversation(conv); err == nil && hasText(t, n, conv, "only A and C") {
			t.Fatal("a member voided by the strong-remove rule read a later message")
		}
	}
}
