package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
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
	testsupport.Eventually(t, 60*time.Second, "bob to drain all of them", func() bool {
		p, err := b.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: 1})
		return err == nil && p.Total == n+1
	})
	testsupport.Eventually(t, 20*time.Second, "bob's delivery receipt to be deposited", func() bool {
		return b.Chat.offline.Stats().Deposited > 0
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	a = startFrom(t, aDir)
	testsupport.Eventually(t, 60*time.Second, "alice to see them delivered", func() bool {
		p, err := a.MessagePage(ctx, conv.ID, webui.MessageQuery{Limit: 1})
		return err == nil && len(p.Messages) == 1 && p.Messages[0].Status == "delivered"
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
