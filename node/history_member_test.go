package node

import (
	"context"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/history"
	"github.com/glitr-chat/glitr/node/request"
)

// A block written concurrently with the rotation that adds a member is
// sealed under an epoch the newcomer never gets. The newcomer asks the
// member that welcomed it for the history and reads the block; a stranger
// asking for the same history gets nothing.
func TestAddedMemberReadsConcurrentBlock(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	x := startTestNode(t, loopbackConfig(t))
	introduce(t, a, b)
	introduce(t, a, x)
	conv, err := a.CreateConversation(ctx, "team", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, conv.ID)
	if _, err := a.Send(ctx, conv.ID, "before", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "b to read a's message", func() bool { return len(messages(t, b, conv.ID)) == 1 })

	// b writes while a is away, then goes away itself; a comes back and
	// adds x, not knowing b's message: the new epoch is concurrent with it.
	adir, bdir := a.Dir, b.Dir
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Send(ctx, conv.ID, "written while a was away", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	a2, err := Start(ctx, adir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if err := a2.Chat.AddMember(ctx, conv.ID, x.Chat.id.AccountID()); err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, x, conv.ID)
	testsupport.Eventually(t, 15*time.Second, "x to read the history", func() bool { return len(messages(t, x, conv.ID)) == 1 })

	b2, err := Start(ctx, bdir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	testsupport.Connect(t, b2.Host, a2.Host)
	testsupport.Eventually(t, 15*time.Second, "a to get b's message", func() bool { return len(messages(t, a2, conv.ID)) == 2 })
	xc := convOf(t, x, conv.ID)
	// What anti-entropy does within a minute: x syncs with a, gets the
	// block it cannot open, and asks a for the history.
	testsupport.Eventually(t, 30*time.Second, "x to read the message written concurrently with its addition", func() bool {
		x.Chat.syncWith(ctx, xc, a2.Host.ID())
		return hasMessage(t, x, conv.ID, "written while a was away")
	})
	testsupport.Eventually(t, 15*time.Second, "equal state hashes", func() bool {
		return stateHash(t, x, conv.ID) == stateHash(t, a2, conv.ID)
	})

	// A node that is not a member (a contact of a, outside the
	// conversation) is refused.
	stranger := startTestNode(t, loopbackConfig(t))
	introduce(t, a2, stranger)
	testsupport.Connect(t, stranger.Host, a2.Host)
	ac := convOf(t, a2, conv.ID)
	if err := request.Ack(ctx, stranger.Host, a2.Host.ID(), history.RequestProtocol, ac.id, 10*time.Second); err == nil {
		t.Fatal("a non-member was promised the history")
	}
}
