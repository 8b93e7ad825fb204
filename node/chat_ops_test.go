package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

func TestEditDeleteReact(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	m, err := a.Send(ctx, conv.ID, "helo", "")
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "b to receive", func() bool { return len(messages(t, b, conv.ID)) == 1 })

	// Only the author edits or deletes; anyone reacts.
	if _, err := b.Edit(ctx, conv.ID, m.ID, "hacked"); !errors.Is(err, webui.ErrForbidden) {
		t.Fatalf("edit of another's message: %v, want forbidden", err)
	}
	if err := b.Delete(ctx, conv.ID, m.ID); !errors.Is(err, webui.ErrForbidden) {
		t.Fatalf("delete of another's message: %v, want forbidden", err)
	}
	got, err := a.Edit(ctx, conv.ID, m.ID, "hello")
	if err != nil || got.Text != "hello" || !got.Edited {
		t.Fatalf("edit: %+v, %v", got, err)
	}
	testsupport.Eventually(t, 10*time.Second, "b to see the edit", func() bool {
		ms := messages(t, b, conv.ID)
		return ms[0].Text == "hello" && ms[0].Edited
	})
	if err := b.React(ctx, conv.ID, m.ID, "👍", true); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "a to see the reaction", func() bool {
		rs := messages(t, a, conv.ID)[0].Reactions
		return len(rs) == 1 && rs[0].Emoji == "👍" && len(rs[0].Accounts) == 1 && rs[0].Accounts[0] == accountOf(b)
	})
	if err := b.React(ctx, conv.ID, m.ID, "👍", false); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "a to see the reaction removed", func() bool {
		return len(messages(t, a, conv.ID)[0].Reactions) == 0
	})
	if err := a.Delete(ctx, conv.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "b to see the tombstone", func() bool {
		ms := messages(t, b, conv.ID)
		return ms[0].Deleted && ms[0].Text == ""
	})

	bad := []struct {
		name string
		err  error
		want error
	}{
		{"edit a deleted message", func() error { _, err := a.Edit(ctx, conv.ID, m.ID, "again"); return err }(), webui.ErrBadRequest},
		{"react to a deleted message", a.React(ctx, conv.ID, m.ID, "👍", true), webui.ErrBadRequest},
		{"empty edit", func() error { _, err := a.Edit(ctx, conv.ID, m.ID, "  "); return err }(), webui.ErrBadRequest},
		{"not an emoji", b.React(ctx, conv.ID, m.ID, "this is a sentence", true), webui.ErrBadRequest},
		{"malformed message id", a.Delete(ctx, conv.ID, "not-a-cid"), webui.ErrBadRequest},
		{"unknown message", a.Delete(ctx, conv.ID, "bafyreihkpbzalwbwvv2i2jlaas34gc2f5734nb3flliqdyf4qqlxzagigm/0"), webui.ErrNotFound},
		{"unknown conversation", a.Delete(ctx, "ffff", m.ID), webui.ErrNotFound},
	}
	for _, c := range bad {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
}

func recvSignal(ch <-chan webui.Signal, kind string, within time.Duration) (webui.Signal, bool) {
	deadline := time.After(within)
	for {
		select {
		case s := <-ch:
			if s.Kind == kind {
				return s, true
			}
		case <-deadline:
			return webui.Signal{}, false
		}
	}
}

func TestTypingSignal(t *testing.T) {
	a, b := chatPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conv, err := a.CreateConversation(ctx, "", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, conv.ID)
	testsupport.Eventually(t, 10*time.Second, "a to be connected to b", func() bool {
		c, _ := a.Chat.conversation(conv.ID)
		return len(a.Chat.memberPeers(c)) == 1
	})
	// b drops typing from accounts it does not (yet) know as members: wait
	// until the genesis block is applied there.
	testsupport.Eventually(t, 10*time.Second, "b to know a as a member", func() bool {
		cs, _ := b.Conversations(ctx)
		for _, c := range cs {
			if c.ID == conv.ID {
				return len(c.Members) == 2
			}
		}
		return false
	})
	sigs := b.SubscribeSignals(ctx)
	if err := a.Typing(ctx, conv.ID); err != nil {
		t.Fatal(err)
	}
	s, ok := recvSignal(sigs, "typing", 5*time.Second)
	if !ok || s.Conversation != conv.ID || s.Account != accountOf(a) {
		t.Fatalf("typing signal %+v (received %v)", s, ok)
	}
	// Throttled: a second keystroke right after sends nothing.
	if err := a.Typing(ctx, conv.ID); err != nil {
		t.Fatal(err)
	}
	if s, ok := recvSignal(sigs, "typing", 700*time.Millisecond); ok {
		t.Fatalf("second typing signal at once: %+v", s)
	}
	if err := a.Typing(ctx, "ffff"); !errors.Is(err, webui.ErrNotFound) {
		t.Fatalf("typing in an unknown conversation: %v", err)
	}
}

// With "show online status" off a node sends no presence at all; switched
// on, its contacts see it online at once (not at the next heartbeat, 30 s).
func TestPresenceFollowsPreference(t *testing.T) {
	a, b := chatPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []*Node{a, b} {
		if _, err := n.CreateAccount(ctx, "someone", ""); err != nil {
			t.Fatal(err)
		}
	}
	prefs, err := a.Preferences(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prefs.ShowPresence = false
	if err := a.SetPreferences(ctx, prefs); err != nil {
		t.Fatal(err)
	}
	sigs := b.SubscribeSignals(ctx)
	testsupport.Connect(t, a.Host, b.Host) // a greets connecting contacts only when ShowPresence is on
	if s, ok := recvSignal(sigs, "presence", 1500*time.Millisecond); ok {
		t.Fatalf("presence sent while ShowPresence is off: %+v", s)
	}
	if p, _ := b.Presence(ctx); len(p) != 0 {
		t.Fatalf("b knows a's presence: %+v", p)
	}
	prefs.ShowPresence = true
	if err := a.SetPreferences(ctx, prefs); err != nil {
		t.Fatal(err)
	}
	s, ok := recvSignal(sigs, "presence", 5*time.Second)
	if !ok || s.Account != accountOf(a) || !s.Online {
		t.Fatalf("presence signal %+v (received %v)", s, ok)
	}
	p, _ := b.Presence(ctx)
	if !p[accountOf(a)].Online {
		t.Fatalf("b's presence view: %+v", p)
	}
}
