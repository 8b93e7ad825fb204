package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

func readAttachment(t *testing.T, n *Node, conv, msg string, thumb bool) ([]byte, error) {
	t.Helper()
	f, err := n.AttachmentFile(context.Background(), conv, msg, thumb)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = f.WriteTo(context.Background(), &buf)
	return buf.Bytes(), err
}

// A photo sent from one node reaches the other through the node's API:
// the message carries it, the thumbnail arrives by itself, the file when
// asked for, byte for byte; a delete for everyone removes it from both
// stores.
func TestAttachmentBetweenNodes(t *testing.T) {
	a, b, conv := pairConversation(t)
	ctx := context.Background()
	file, thumb := make([]byte, 3<<20+777), make([]byte, 30<<10)
	rand.Read(file)
	rand.Read(thumb)
	m, created, err := a.PostAttachment(ctx, conv.ID, webui.AttachmentUpload{
		Name: "view.jpg", Type: "image/jpeg", Size: int64(len(file)), Width: 4032, Height: 3024, Caption: "from the top",
		Thumb: thumb, ThumbType: "image/jpeg", ThumbWidth: 320, ThumbHeight: 240, File: bytes.NewReader(file),
	})
	if err != nil || !created || m.Attachment == nil || m.Attachment.State != webui.AttachmentComplete || m.Text != "from the top" {
		t.Fatalf("post: %+v %v", m, err)
	}
	var seen webui.Message
	testsupport.Eventually(t, 20*time.Second, "the message and its thumbnail on b", func() bool {
		for _, x := range messages(t, b, conv.ID) {
			if x.ID == m.ID && x.Attachment != nil && x.Attachment.ThumbReady {
				seen = x
				return true
			}
		}
		return false
	})
	if a := seen.Attachment; a.Name != "view.jpg" || a.Size != uint64(len(file)) || a.Width != 4032 {
		t.Fatalf("b's view %+v", a)
	}
	if got, err := readAttachment(t, b, conv.ID, m.ID, true); err != nil || !bytes.Equal(got, thumb) {
		t.Fatalf("thumbnail: %v", err)
	}
	if _, err := b.FetchAttachment(ctx, conv.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "b's download", func() bool {
		st, _ := b.AttachmentStatus(ctx, conv.ID, m.ID)
		return st.State == webui.AttachmentComplete
	})
	if got, err := readAttachment(t, b, conv.ID, m.ID, false); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("b's copy differs: %v", err)
	}
	if err := a.Delete(ctx, conv.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]*Node{"sender": a, "receiver": b} {
		testsupport.Eventually(t, 20*time.Second, name+"'s chunks to go", func() bool { return n.Chat.files.Store().Used() == 0 })
	}
}

// Mailboxes end to end: Alice writes while Bob is down and is gone before
// he returns; Bob drains everything from his mailbox on the relay; when
// Alice returns she drains Bob's delivery receipt and sees her messages
// delivered. The two are never online together after the first meeting.
func TestMailboxDeliveryWhileAway(t *testing.T) {
	relay := startTestNode(t, relayConfig(t, true))
	relayAddr := fmt.Sprintf("%s/p2p/%s", relay.Host.Addrs()[0], relay.Host.ID())
	cfg := func() Config {
		c := loopbackConfig(t)
		c.Mailbox.Relays = []string{relayAddr}
		return c
	}
	a, b := startTestNode(t, cfg()), startTestNode(t, cfg())
	introduce(t, a, b)
	ctx := context.Background()
	conv, err := a.CreateConversation(ctx, "", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, conv.ID)
	if _, err := b.Send(ctx, conv.ID, "hello", ""); err != nil {
		t.Fatal(err)
	}
	// Each knows where the other's mailbox is.
	for _, pair := range [][2]*Node{{a, b}, {b, a}} {
		n, other := pair[0], pair[1]
		testsupport.Eventually(t, 20*time.Second, "the other's mailbox address", func() bool {
			cv, err := n.Chat.conversation(conv.ID)
			if err != nil {
				return false
			}
			cv.mu.Lock()
			defer cv.mu.Unlock()
			for _, d := range cv.state.Devices(crdt.AccountID(other.Chat.id.AccountID())) {
				if len(d.Mailbox) > 0 {
					return true
				}
			}
			return false
		})
	}
	aDir, bDir := a.Dir, b.Dir
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		if _, err := a.Send(ctx, conv.ID, fmt.Sprintf("while you were away %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil { // flushes the deposits
		t.Fatal(err)
	}
	b = startFrom(t, bDir)
	// What a drain kept for later (blocks waiting for an epoch the same
	// batch installs) comes with the next: drain again while waiting.
	testsupport.Eventually(t, 60*time.Second, "bob to drain all of them", func() bool {
		p, err := b.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: 1})
		if err == nil && p.Total == n+1 {
			return true
		}
		_, _ = b.Chat.offline.Drain(ctx)
		return false
	})
	// Bob's receipt covers Alice's last message once his node wrote it.
	testsupport.Eventually(t, 20*time.Second, "bob's delivery receipt for all of them", func() bool {
		cv, err := b.Chat.conversation(conv.ID)
		if err != nil {
			return false
		}
		cv.mu.Lock()
		defer cv.mu.Unlock()
		last := cv.state.At(cv.state.Len() - 1)
		delivered, _ := cv.state.Receipts(crdt.AccountID(b.Chat.id.AccountID()))
		for _, e := range delivered {
			if e.Device == last.Device && e.Seq >= last.Seq {
				return true
			}
		}
		return false
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	a = startFrom(t, aDir)
	testsupport.Eventually(t, 60*time.Second, "alice to see them delivered", func() bool {
		p, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: 1})
		if err == nil && len(p.Messages) == 1 && p.Messages[0].Status == "delivered" {
			return true
		}
		_, _ = a.Chat.offline.Drain(ctx)
		return false
	})
}

func startFrom(t *testing.T, dir DataDir) *Node {
	t.Helper()
	n, err := Start(context.Background(), dir, Options{Version: "test", Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// A group of five whose members are never online together (after they
// met): each in turn comes up alone, drains its mailbox, writes, and goes
// down; after two rounds every member has every message.
func TestMailboxGroupNeverOnlineTogether(t *testing.T) {
	if os.Getenv("GLITR_MAILBOX_GROUP") == "" {
		// It fails in about one run of five: a member sometimes gets
		// blocks whose links nobody deposited for it, and cannot take
		// them while alone (a known gap, in issue 13's note). Run it with
		// make test-mailbox-group.
		t.Skip("a known gap of mailbox delivery (issue 13): make test-mailbox-group runs it")
	}
	relay := startTestNode(t, relayConfig(t, true))
	relayAddr := fmt.Sprintf("%s/p2p/%s", relay.Host.Addrs()[0], relay.Host.ID())
	const size, per = 5, 10
	nodes := make([]*Node, size)
	for i := range nodes {
		c := loopbackConfig(t)
		c.Mailbox.Relays = []string{relayAddr}
		nodes[i] = startTestNode(t, c)
	}
	ctx := context.Background()
	var members []string
	for _, n := range nodes[1:] {
		introduce(t, nodes[0], n)
		members = append(members, accountOf(n))
	}
	conv, err := nodes[0].CreateConversation(ctx, "never together", members)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		waitForConversation(t, n, conv.ID)
		if _, err := n.Send(ctx, conv.ID, fmt.Sprintf("hello from %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	// They part once they agree on everything written while together
	// (the same heads: receipts included) and know every member's
	// mailbox. A block another member wrote that a recipient lacks is not
	// in any mailbox, so blocks linking to it would wait (see the note on
	// issue 13).
	heads := func(n *Node) string {
		cv, err := n.Chat.conversation(conv.ID)
		if err != nil {
			return ""
		}
		cv.mu.Lock()
		defer cv.mu.Unlock()
		return fmt.Sprint(cv.state.Heads())
	}
	testsupport.Eventually(t, 30*time.Second, "every member on the same heads", func() bool {
		h := heads(nodes[0])
		for _, n := range nodes[1:] {
			if heads(n) != h {
				return false
			}
		}
		return h != ""
	})
	for _, n := range nodes {
		testsupport.Eventually(t, 30*time.Second, "every member's mailbox address", func() bool {
			cv, err := n.Chat.conversation(conv.ID)
			if err != nil {
				return false
			}
			cv.mu.Lock()
			defer cv.mu.Unlock()
			count := 0
			for _, m := range cv.state.Members() {
				for _, d := range cv.state.Devices(m.Account) {
					if len(d.Mailbox) > 0 {
						count++
					}
				}
			}
			return count == size
		})
	}
	dirs := make([]DataDir, size)
	for i, n := range nodes {
		dirs[i] = n.Dir
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	want := size + size*per
	total := func(n *Node) int {
		p, err := n.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: 1})
		if err != nil {
			return -1
		}
		return p.Total
	}
	for round := range 2 {
		for i := range nodes {
			n := startFrom(t, dirs[i])
			// A second drain takes what the first kept for later.
			for range 3 {
				if _, err := n.Chat.offline.Drain(ctx); err != nil {
					t.Fatalf("round %d, member %d drains: %v", round, i, err)
				}
			}
			if round == 0 {
				for k := range per {
					if _, err := n.Send(ctx, conv.ID, fmt.Sprintf("member %d, message %d", i, k), ""); err != nil {
						t.Fatal(err)
					}
				}
			} else if got := total(n); got != want {
				t.Fatalf("member %d has %d of %d messages", i, got, want)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
