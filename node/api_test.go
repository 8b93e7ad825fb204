package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/signals"
	"github.com/glitr-chat/glitr/webui"
)

// restartTestNode closes n and starts a node on its data directory again.
func restartTestNode(t testing.TB, n *Node) *Node {
	t.Helper()
	dir := n.Dir
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Start(context.Background(), dir, Options{Version: "test", Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func countText(ms []webui.Message, text string) int {
	n := 0
	for _, m := range ms {
		if m.Text == text {
			n++
		}
	}
	return n
}

// TestSendOnce: a send repeated with its client id, before and after a
// restart of the node, returns the first message and posts nothing; the
// contact holds the message once.
func TestSendOnce(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	const id = "3f2a7c1e-8d4b-4e0f-9a6c-1b2d3e4f5a6b"
	first, created, err := a.PostMessage(ctx, conv.ID, webui.SendRequest{Text: "exactly once", ClientID: id})
	if err != nil || !created || first.ClientID != id {
		t.Fatalf("first send: created %v, client id %q, %v", created, first.ClientID, err)
	}
	again, created, err := a.PostMessage(ctx, conv.ID, webui.SendRequest{Text: "exactly once", ClientID: id})
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("retry: created %v, id %s (first %s), %v", created, again.ID, first.ID, err)
	}
	if ms := messages(t, a, conv.ID); countText(ms, "exactly once") != 1 || ms[len(ms)-1].ClientID != id {
		t.Fatalf("sender holds %d copies; last message's client id %q", countText(ms, "exactly once"), ms[len(ms)-1].ClientID)
	}
	testsupport.Eventually(t, 10*time.Second, "b to receive the message", func() bool {
		return countText(messages(t, b, conv.ID), "exactly once") == 1
	})

	a = restartTestNode(t, a)
	again, created, err = a.PostMessage(ctx, conv.ID, webui.SendRequest{Text: "exactly once", ClientID: id})
	if err != nil || created || again.ID != first.ID || again.ClientID != id {
		t.Fatalf("retry after a restart: created %v, id %s (first %s), client id %q, %v", created, again.ID, first.ID, again.ClientID, err)
	}
	other, created, err := a.PostMessage(ctx, conv.ID, webui.SendRequest{Text: "exactly once", ClientID: id + "-2"})
	if err != nil || !created || other.ID == first.ID {
		t.Fatalf("another client id: created %v, %v", created, err)
	}
	if n := countText(messages(t, a, conv.ID), "exactly once"); n != 2 {
		t.Fatalf("sender holds %d messages, want 2 (one per client id)", n)
	}
}

// TestMessagePaging reads a history of 1,200 messages whole through the
// cursors, forwards from after=-1 and backwards from the newest, by
// position and by id, and refuses a limit out of range.
func TestMessagePaging(t *testing.T) {
	a, b := chatPair(t)
	ctx := context.Background()
	conv, err := a.CreateConversation(ctx, "long", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	const total = 1200
	for i := range total {
		if _, err := a.Send(ctx, conv.ID, fmt.Sprintf("m%04d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	check := func(how string, got []webui.Message) {
		t.Helper()
		if len(got) != total {
			t.Fatalf("%s: %d messages, want %d", how, len(got), total)
		}
		for i, m := range got {
			if m.Text != fmt.Sprintf("m%04d", i) || m.Position != i {
				t.Fatalf("%s: message %d is %q at %d", how, i, m.Text, m.Position)
			}
		}
	}
	for _, byID := range []bool{false, true} {
		var fwd []webui.Message
		cursor := "-1"
		for {
			p, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{After: cursor, Limit: webui.MaxPageLimit})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Messages) == 0 {
				break
			}
			if p.Total != total || p.Before != p.Messages[0].Position || p.After != p.Messages[len(p.Messages)-1].Position {
				t.Fatalf("page cursors: before %d after %d total %d", p.Before, p.After, p.Total)
			}
			fwd = append(fwd, p.Messages...)
			cursor = fmt.Sprint(p.After)
			if byID {
				cursor = p.Messages[len(p.Messages)-1].ID
			}
		}
		check(fmt.Sprintf("forwards (by id %v)", byID), fwd)

		var back []webui.Message
		q := webui.MessageQuery{Limit: 333}
		for {
			p, err := a.MessagePage(ctx, conv.ID, q)
			if err != nil {
				t.Fatal(err)
			}
			back = append(p.Messages, back...)
			if p.Before == 0 {
				break
			}
			q.Before = fmt.Sprint(p.Before)
			if byID {
				q.Before = p.Messages[0].ID
			}
		}
		check(fmt.Sprintf("backwards (by id %v)", byID), back)
	}
	for _, limit := range []int{-1, webui.MaxPageLimit + 1} {
		_, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: limit})
		if !errors.Is(err, webui.ErrBadRequest) || webui.ErrorCode(err) != webui.CodeBadLimit {
			t.Fatalf("limit %d: %v (code %q)", limit, err, webui.ErrorCode(err))
		}
	}
	if _, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{Before: "bafyreigdmqpykrgxyaxtlafqpqhzrb7qy2rh75nldvfd4tucqmqqme5yje/0", Limit: 5}); !errors.Is(err, webui.ErrNotFound) {
		t.Fatalf("an unknown cursor: %v", err)
	}
	if _, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{After: "-2", Limit: 5}); !errors.Is(err, webui.ErrBadRequest) {
		t.Fatalf("cursor -2: %v", err)
	}
}

func summaryOf(t testing.TB, n *Node, id string) webui.Conversation {
	t.Helper()
	cs, err := n.Conversations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.ID == id {
			return c
		}
	}
	return webui.Conversation{}
}

func memberOf(c webui.Conversation, account string) (webui.Member, bool) {
	for _, m := range c.Members {
		if m.Account == account {
			return m, true
		}
	}
	return webui.Member{}, false
}

// TestMemberNamesAndKinds: members who are not contacts show the name
// they published in the group (not verified); a new name reaches them;
// a two-account chat without title is direct, a group is a group.
func TestMemberNamesAndKinds(t *testing.T) {
	ctx := context.Background()
	a, b := chatPair(t)
	c := startTestNode(t, loopbackConfig(t))
	introduce(t, a, c) // b and c do not know each other
	for n, name := range map[*Node]string{a: "Ada", b: "Bob", c: "Cy"} {
		if _, err := n.CreateAccount(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	direct, err := a.CreateConversation(ctx, "", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	group, err := a.CreateConversation(ctx, "trio", []string{accountOf(b), accountOf(c)})
	if err != nil {
		t.Fatal(err)
	}
	if direct.Kind != webui.KindDirect || group.Kind != webui.KindGroup {
		t.Fatalf("kinds: %q and %q", direct.Kind, group.Kind)
	}
	waitForConversation(t, b, group.ID)
	waitForConversation(t, c, group.ID)
	testsupport.Connect(t, b.Host, c.Host)
	if _, err := c.Send(ctx, group.ID, "hello from Cy", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "b to see c's published name", func() bool {
		m, ok := memberOf(summaryOf(t, b, group.ID), accountOf(c))
		return ok && m.Name == "Cy" && !m.Contact && !m.Verified
	})
	if m, _ := memberOf(summaryOf(t, b, group.ID), accountOf(a)); m.Name != "Ada" || !m.Contact {
		t.Fatalf("b's view of its contact a: %+v", m)
	}
	if m, _ := memberOf(summaryOf(t, b, group.ID), accountOf(b)); m.Name != "Bob" || !m.Self {
		t.Fatalf("b's view of itself: %+v", m)
	}
	if err := c.SetProfile(ctx, "Cyrus", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "b to see c's new name", func() bool {
		m, _ := memberOf(summaryOf(t, b, group.ID), accountOf(c))
		return m.Name == "Cyrus"
	})
	testsupport.Eventually(t, 15*time.Second, "b to see the direct chat", func() bool {
		return summaryOf(t, b, direct.ID).Kind == webui.KindDirect
	})
}

// TestMuteAndBlock: mute is this account's setting of a conversation; a
// blocked contact's direct chat is marked, counts no unread messages, gets
// no receipts, refuses own sends, and the contact cannot start a new
// conversation; unblocking restores writing.
func TestMuteAndBlock(t *testing.T) {
	ctx := context.Background()
	a, b := chatPair(t)
	for _, n := range []*Node{a, b} {
		if _, err := n.CreateAccount(ctx, "someone", ""); err != nil {
			t.Fatal(err)
		}
	}
	conv, err := b.CreateConversation(ctx, "", []string{accountOf(a)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, a, conv.ID)
	testsupport.Eventually(t, 10*time.Second, "a to apply the genesis", func() bool {
		return summaryOf(t, a, conv.ID).Kind == webui.KindDirect
	})
	yes := true
	if err := a.SetConversationSettings(ctx, conv.ID, webui.ConversationSettings{Muted: &yes}); err != nil {
		t.Fatal(err)
	}
	if !summaryOf(t, a, conv.ID).Muted {
		t.Fatal("muted conversation not marked")
	}
	if err := a.SetConversationSettings(ctx, "ffff", webui.ConversationSettings{Muted: &yes}); !errors.Is(err, webui.ErrNotFound) {
		t.Fatalf("settings of an unknown conversation: %v", err)
	}

	if err := a.People().BlockContact(ctx, accountOf(b), true); err != nil {
		t.Fatal(err)
	}
	s := summaryOf(t, a, conv.ID)
	if !s.Blocked {
		t.Fatalf("direct chat with a blocked contact not marked: %+v", s)
	}
	cs, _ := a.Contacts(ctx)
	if len(cs) != 1 || !cs[0].Blocked {
		t.Fatalf("contacts: %+v", cs)
	}
	if _, err := b.Send(ctx, conv.ID, "are you there?", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "a to store b's message", func() bool {
		return countText(messages(t, a, conv.ID), "are you there?") == 1
	})
	if s := summaryOf(t, a, conv.ID); s.Unread != 0 {
		t.Fatalf("a blocked chat counts %d unread", s.Unread)
	}
	if err := a.MarkRead(ctx, conv.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, conv.ID, "hi", ""); !errors.Is(err, webui.ErrConflict) || webui.ErrorCode(err) != webui.CodeContactBlocked {
		t.Fatalf("send to a blocked contact: %v", err)
	}
	// No delivery or read receipt reaches b (a delivery receipt is
	// scheduled a second after arrival).
	time.Sleep(1500 * time.Millisecond)
	if st := lastStatus(t, b, conv.ID); st != "sent" && st != "sending" {
		t.Fatalf("b's message to a blocked contact is %q", st)
	}
	// b cannot start another conversation with a.
	other, err := b.CreateConversation(ctx, "second try", []string{accountOf(a)})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := a.Chat.conversation(other.ID); err == nil {
		t.Fatal("a blocked contact started a conversation")
	}

	if err := a.People().BlockContact(ctx, accountOf(b), false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, conv.ID, "sorry, back", ""); err != nil {
		t.Fatalf("send after unblocking: %v", err)
	}
	if err := a.People().BlockContact(ctx, accountOf(a), true); !errors.Is(err, webui.ErrBadRequest) {
		t.Fatalf("blocking oneself: %v", err)
	}
}

func lastStatus(t testing.TB, n *Node, conv string) string {
	t.Helper()
	ms := messages(t, n, conv)
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].Status
}

// TestPresenceGoesOffline: a contact whose node stops is reported offline
// when its connection closes, not signals.PresenceTTL later.
func TestPresenceGoesOffline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := chatPair(t)
	for _, n := range []*Node{a, b} {
		if _, err := n.CreateAccount(ctx, "someone", ""); err != nil {
			t.Fatal(err)
		}
	}
	sigs := a.SubscribeSignals(ctx)
	testsupport.Connect(t, a.Host, b.Host)
	if s, ok := recvSignal(sigs, "presence", 10*time.Second); !ok || !s.Online || s.Account != accountOf(b) {
		t.Fatalf("online signal on connect: %+v (%v)", s, ok)
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// B greets A once per connection it sees, so a greeting sent before
	// the close may still arrive after it (a loaded machine): skip those.
	s, ok := recvSignal(sigs, "presence", 10*time.Second)
	for ok && s.Online && s.Account == accountOf(b) {
		s, ok = recvSignal(sigs, "presence", 10*time.Second)
	}
	if !ok || s.Online || s.Account != accountOf(b) || s.LastSeen == nil {
		t.Fatalf("offline signal: %+v (%v)", s, ok)
	}
	if d := time.Since(start); d >= signals.PresenceTTL/2 {
		t.Fatalf("offline reported after %v", d)
	}
	if p, _ := a.Presence(ctx); p[accountOf(b)].Online {
		t.Fatalf("presence still online: %+v", p)
	}
}
