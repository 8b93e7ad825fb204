package node

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
)

// dhtTrio starts a bootstrap node and two personal nodes that know only the
// bootstrap node: whatever else they learn comes from the private DHT.
func dhtTrio(t *testing.T) (a, b *Node) {
	t.Helper()
	boot := startTestNode(t, loopbackConfig(t))
	bootAddr := boot.Host.Addrs()[0].String() + "/p2p/" + boot.Host.ID().String()
	var ns []*Node
	for _, name := range []string{"Ada", "Bo"} {
		cfg := loopbackConfig(t)
		cfg.Network.BootstrapPeers = []string{bootAddr}
		n := startTestNode(t, cfg)
		if _, err := n.CreateAccount(context.Background(), name, ""); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, n)
	}
	for _, n := range ns {
		testsupport.Eventually(t, 15*time.Second, "the routing table to fill", func() bool { return n.DHT.RoutingTable().Size() >= 2 })
	}
	return ns[0], ns[1]
}

func TestInviteAcceptChatThroughDHT(t *testing.T) {
	ctx := context.Background()
	a, b := dhtTrio(t)
	inv, err := a.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(inv.Link, card.Invite.Prefix) {
		t.Fatalf("link %q lacks the prefix", inv.Link)
	}
	pi, err := card.Invite.Parse(inv.Link, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pi.Card.Peer.Addrs) != 0 || pi.Name != "Ada" {
		t.Fatalf("invite carries addresses %v / name %q; want none / Ada", pi.Card.Peer.Addrs, pi.Name)
	}

	start := time.Now()
	acct, convID, err := b.AcceptInvite(ctx, inv.Link)
	if err != nil {
		t.Fatal(err)
	}
	if acct != accountOf(a) {
		t.Fatalf("accepted account %s, want %s", acct, accountOf(a))
	}
	if _, err := b.Send(ctx, convID, "hello Ada", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "the first message on both sides", func() bool {
		ms, err := a.Messages(ctx, convID, 0, 10)
		return err == nil && len(ms.Messages) == 1 && ms.Messages[0].Text == "hello Ada"
	})
	t.Logf("invite accepted to first message shown on both sides: %s", time.Since(start).Round(time.Millisecond))
	if got := a.Chat.contactName(b.Chat.id.AccountID()); got != "Bo" {
		t.Fatalf("A names the contact %q, want Bo", got)
	}

	// The token works once.
	if _, _, err := b.AcceptInvite(ctx, inv.Link); !errors.Is(err, ErrInviteUsed) {
		t.Fatalf("reused invite = %v, want ErrInviteUsed", err)
	}
	// Expired, altered and forged links.
	if _, err := card.Invite.Parse(inv.Link, time.Now().Add(2*time.Hour)); !errors.Is(err, ErrInviteExpired) {
		t.Fatalf("expired invite = %v, want ErrInviteExpired", err)
	}
	raw := strings.TrimPrefix(inv.Link, card.Invite.Prefix)
	mid := len(raw) / 2
	flip := "A"
	if raw[mid] == 'A' {
		flip = "B"
	}
	if _, _, err := b.AcceptInvite(ctx, card.Invite.Prefix+raw[:mid]+flip+raw[mid+1:]); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("altered invite = %v, want ErrInviteInvalid", err)
	}
	if _, _, err := b.AcceptInvite(ctx, "web+glitr:invite/!!!"); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("garbage invite = %v, want ErrInviteInvalid", err)
	}
	forged := forgeInvite(t, inv.Link)
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, _, err := b.AcceptInvite(fctx, forged); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("invite with a token A never issued = %v, want ErrInviteInvalid (no answer)", err)
	}
	// A is unharmed and keeps chatting.
	if _, err := a.Send(ctx, convID, "still here", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "A's reply", func() bool { return len(messages(t, b, convID)) == 2 })
}

// forgeInvite keeps the inviter's card but swaps in a token it never
// issued, with a MAC that matches the new token.
func forgeInvite(t *testing.T, link string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(link, card.Invite.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	var p card.Payload
	if err := card.Dec.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	p.Token = make([]byte, card.TokenLen)
	p.Token[0] = 1
	forged, err := card.Invite.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return forged
}

// Requests that prove no token are dropped after a lookup (no public-key
// work), and a flood is cut off by the per-peer rate limit.
func TestContactRequestFloodIsDroppedCheaply(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	m := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, m.Host, a.Host)
	junk, err := canonicalEnc.Marshal(people.Request{TokenID: make([]byte, 16), Box: make([]byte, 2000)})
	if err != nil {
		t.Fatal(err)
	}
	answered, reset := 0, 0
	for range 30 {
		r, err := request.Exchange(ctx, m.Host, a.Host.ID(), people.ContactProtocol, junk, 4<<10, 10*time.Second)
		switch {
		case err == nil:
			answered++
			t.Logf("answer: %+v", r)
		default:
			reset++
		}
	}
	if answered != 0 {
		t.Fatalf("%d junk requests got an answer", answered)
	}
	if a.Chat.requests.Allow(m.Host.ID()) {
		t.Fatal("the rate limiter did not engage")
	}
	if a.pen.get(m.Host.ID()) >= 0 {
		t.Fatal("the flooding peer was not penalised")
	}

}

// After an invite, a node that restarts on new ports is found again by its
// contact through the DHT rendezvous alone, and the chat carries on.
func TestContactFoundAgainAfterRestartOnNewPorts(t *testing.T) {
	ctx := context.Background()
	boot := startTestNode(t, loopbackConfig(t))
	bootAddr := boot.Host.Addrs()[0].String() + "/p2p/" + boot.Host.ID().String()
	cfg := loopbackConfig(t)
	cfg.Network.BootstrapPeers = []string{bootAddr}
	dirA, err := Init(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Start(ctx, dirA, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestNode(t, cfg)
	for _, n := range []*Node{a, b} {
		testsupport.Eventually(t, 15*time.Second, "the routing table to fill", func() bool { return n.DHT.RoutingTable().Size() >= 2 })
	}
	inv, err := a.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, conv, err := b.AcceptInvite(ctx, inv.Link)
	if err != nil {
		t.Fatal(err)
	}
	oldAddrs := a.Host.Addrs()
	a.Close()

	a, err = Start(ctx, dirA, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, old := range oldAddrs {
		for _, cur := range a.Host.Addrs() {
			if old.Equal(cur) {
				t.Fatalf("restarted node reuses address %s", cur)
			}
		}
	}
	start := time.Now()
	// The DHT alone tells B where A is now (A also dials B at the address
	// it kept, so the connection by itself would prove nothing).
	var contactA discovery.Contact
	for _, dc := range b.Chat.discoveryContacts() {
		if dc.Account == a.Chat.id.AccountID() {
			contactA = dc
		}
	}
	if contactA.PairSecret == ([discovery.PairSecretSize]byte{}) {
		t.Fatal("B holds no pair secret for A")
	}
	testsupport.Eventually(t, 30*time.Second, "A's new addresses in the DHT", func() bool {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		infos, err := b.Chat.discovery.Find(fctx, contactA)
		if err != nil {
			return false
		}
		for _, ai := range infos {
			for _, found := range ai.Addrs {
				for _, cur := range a.Host.Addrs() {
					if found.Equal(cur) {
						return true
					}
				}
			}
		}
		return false
	})
	t.Logf("A's new addresses found through the DHT %s after the restart", time.Since(start).Round(time.Millisecond))
	testsupport.Eventually(t, 30*time.Second, "B to reach A again", func() bool {
		return b.Host.Network().Connectedness(a.Host.ID()) == network.Connected
	})
	if _, err := a.Send(ctx, conv, "back on new ports", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the message after the restart", func() bool { return hasText(t, b, conv, "back on new ports") })
}

// A new contact that takes the name of an existing one with another
// account key (a reinstall without backup, or an impostor) is marked
// "key changed" until the users verify it again.
func TestContactWithKnownNameAndNewKeyIsFlagged(t *testing.T) {
	ctx := context.Background()
	a := startTestNode(t, loopbackConfig(t))
	bob := startTestNode(t, loopbackConfig(t))
	impostor := startTestNode(t, loopbackConfig(t))
	for n, name := range map[*Node]string{a: "Ada", bob: "Bob", impostor: "bob"} {
		if _, err := n.CreateAccount(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*Node{bob, impostor} {
		testsupport.Connect(t, n.Host, a.Host)
		inv, err := a.CreateInvite(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := n.AcceptInvite(ctx, inv.Link); err != nil {
			t.Fatal(err)
		}
	}
	v := a.Chat.accountSnapshot()
	if got := v.contacts[bob.Chat.id.AccountID()].Verification; got != crdt.Unverified {
		t.Fatalf("first Bob: verification %d, want unverified", got)
	}
	if got := v.contacts[impostor.Chat.id.AccountID()].Verification; got != crdt.KeyChanged {
		t.Fatalf("second \"bob\" with another key: verification %d, want KeyChanged", got)
	}
	if err := a.VerifyContact(ctx, impostor.Chat.id.AccountID().String(), true); err != nil {
		t.Fatal(err)
	}
	if got := a.Chat.accountSnapshot().contacts[impostor.Chat.id.AccountID()].Verification; got != crdt.Verified {
		t.Fatalf("after verifying: %d, want Verified", got)
	}
}

// setUpAccounts finishes onboarding of each node under its name.
func setUpAccounts(t testing.TB, names map[*Node]string) {
	t.Helper()
	for n, name := range names {
		if _, err := n.CreateAccount(context.Background(), name, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// befriend connects accepter to inviter, makes them contacts through an
// invite and returns their 1:1 conversation.
func befriend(t testing.TB, inviter, accepter *Node) string {
	t.Helper()
	ctx := context.Background()
	testsupport.Connect(t, accepter.Host, inviter.Host)
	inv, err := inviter.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, conv, err := accepter.AcceptInvite(ctx, inv.Link)
	if err != nil {
		t.Fatal(err)
	}
	return conv
}
