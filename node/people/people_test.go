package people

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// fakeChat is the conversation service as this package sees it: a real
// identity (account, certified device, prekeys), contacts and pair
// secrets in maps, and conversations that "arrive" when the other side's
// fake creates them.
type fakeChat struct {
	acct *keyring.AccountKey
	dev  *keyring.DeviceKey
	cert []byte
	testsupport.Identity
	name  string
	convs *convBoard // shared by the fakes of one test

	mu       sync.Mutex
	contacts map[keyring.AccountID]string // account -> name
	pairs    map[keyring.AccountID][]byte
	added    []string // ContactAdded calls
}

// convBoard stands in for welcomes: a conversation one side creates is
// there for the other to await.
type convBoard struct {
	mu    sync.Mutex
	convs map[string]bool
}

func newFakeChat(t *testing.T, name string, board *convBoard) *fakeChat {
	t.Helper()
	id := testsupport.NewIdentity(t, name+"'s laptop")
	return &fakeChat{Identity: id, acct: id.Account, dev: id.Device, cert: id.Cert, name: name, convs: board,
		contacts: map[keyring.AccountID]string{}, pairs: map[keyring.AccountID][]byte{}}
}

func (f *fakeChat) Self() Self          { return Self{Account: f.acct.ID(), Cert: f.cert} }
func (f *fakeChat) ProfileName() string { return f.name }
func (f *fakeChat) AddContact(_ context.Context, vc card.Verified, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.contacts[vc.Cert.Account] = name
	return nil
}
func (f *fakeChat) PutPairSecret(_ context.Context, a keyring.AccountID, secret []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pairs[a] = bytes.Clone(secret)
	return nil
}
func (f *fakeChat) CreateConversation(context.Context, string, []keyring.AccountID) (string, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	f.convs.mu.Lock()
	defer f.convs.mu.Unlock()
	f.convs.convs[hex.EncodeToString(id)] = true
	return hex.EncodeToString(id), nil
}
func (f *fakeChat) AwaitConversation(ctx context.Context, hexID string) error {
	for {
		f.convs.mu.Lock()
		ok := f.convs.convs[hexID]
		f.convs.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
func (f *fakeChat) ContactAdded(conv string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.added = append(f.added, conv)
}

func (f *fakeChat) contact(a keyring.AccountID) (string, []byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name, ok := f.contacts[a]
	return name, f.pairs[a], ok
}

type side struct {
	h     host.Host
	chat  *fakeChat
	svc   *Service
	store ds.Batching
	pen   atomic.Int32
}

func newSide(t *testing.T, name string, board *convBoard) *side {
	t.Helper()
	s := &side{h: testsupport.Host(t), chat: newFakeChat(t, name, board), store: dssync.MutexWrap(ds.NewMapDatastore())}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	lim := request.NewLimiter(func(peer.ID, float64, string) { s.pen.Add(1) })
	s.svc = New(s.h, s.store, s.chat, Options{Requests: lim, StoreKey: key, Logger: testsupport.Logger(t)})
	s.svc.Start()
	t.Cleanup(s.svc.Close)
	return s
}

func pair(t *testing.T) (a, b *side) {
	board := &convBoard{convs: map[string]bool{}}
	a, b = newSide(t, "Ada", board), newSide(t, "Bo", board)
	b.h.Peerstore().AddAddrs(a.h.ID(), a.h.Addrs(), time.Hour)
	return a, b
}

// An invite makes two contacts: each stores the other under the name it
// gave, both hold the same pair secret, and the acceptor waits for the
// conversation the inviter started.
func TestInviteMakesContacts(t *testing.T) {
	ctx := context.Background()
	a, b := pair(t)
	inv, err := a.svc.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(inv.Link, card.Invite.Prefix) || len(inv.Link) > 600 {
		t.Fatalf("invite link %q (%d characters)", inv.Link, len(inv.Link))
	}
	acct, conv, err := b.svc.AcceptInvite(ctx, inv.Link)
	if err != nil {
		t.Fatal(err)
	}
	if acct != a.chat.acct.ID() || len(conv) != 32 {
		t.Fatalf("accepted: account %s, conversation %q", acct, conv)
	}
	nameOfA, secretB, ok := b.chat.contact(a.chat.acct.ID())
	if !ok || nameOfA != "Ada" {
		t.Fatalf("b's contact of a: %q %v", nameOfA, ok)
	}
	nameOfB, secretA, ok := a.chat.contact(b.chat.acct.ID())
	if !ok || nameOfB != "Bo" {
		t.Fatalf("a's contact of b: %q %v", nameOfB, ok)
	}
	if len(secretA) != 32 || !bytes.Equal(secretA, secretB) {
		t.Fatal("the two sides do not hold the same pair secret")
	}
	if len(a.chat.added) != 1 || a.chat.added[0] != conv {
		t.Fatalf("the inviter's UI was told %v, want [%s]", a.chat.added, conv)
	}
	// The token is spent: a second use is refused, and so is a third
	// person's (the inviter answers "used" to whoever proves the token).
	if _, _, err := b.svc.AcceptInvite(ctx, inv.Link); !errors.Is(err, ErrInviteUsed) {
		t.Fatalf("second use: %v, want ErrInviteUsed", err)
	}
}

func TestInviteRefusals(t *testing.T) {
	ctx := context.Background()
	a, b := pair(t)
	if _, err := a.svc.CreateInvite(ctx, 31*24*time.Hour); !errors.Is(err, ErrInviteTTL) {
		t.Fatalf("a 31-day invite: %v", err)
	}
	own, err := b.svc.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.svc.AcceptInvite(ctx, own.Link); !errors.Is(err, card.ErrInviteInvalid) {
		t.Fatalf("own invite: %v", err)
	}
	// An invite that expired between issuing and accepting: the inviter
	// answers "expired" (the acceptor's clock still thinks it is valid).
	inv, err := a.svc.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.svc.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, _, err := b.svc.AcceptInvite(ctx, inv.Link); !errors.Is(err, card.ErrInviteExpired) {
		t.Fatalf("expired at the inviter: %v", err)
	}
}

// The token card comes only for a pending token, and only from the very
// device the link certifies.
func TestTokenCard(t *testing.T) {
	ctx := context.Background()
	a, b := pair(t)
	_, pi := issueInvite(t, a)
	tid := card.TokenID(pi.Token)
	full, err := b.svc.FetchTokenCard(ctx, pi.Card, tid, "the inviter", card.ErrInviteInvalid)
	if err != nil {
		t.Fatal(err)
	}
	if full.Prekey.Device != pi.Card.Cert.Device {
		t.Fatal("the fetched prekey is not the linked device's")
	}
	if _, err := b.svc.FetchTokenCard(ctx, pi.Card, make([]byte, 16), "the inviter", card.ErrInviteInvalid); !errors.Is(err, card.ErrInviteInvalid) {
		t.Fatalf("unknown token id: %v", err)
	}
	// A link naming b's device at a's peer: a answers with its own card,
	// which is caught.
	bInv, err := b.svc.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bpi, err := card.Invite.Parse(bInv.Link, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := bpi.Card
	forged.Peer.ID = a.h.ID()
	if _, err := b.svc.FetchTokenCard(ctx, forged, tid, "the inviter", card.ErrInviteInvalid); !errors.Is(err, protocol.ErrBadPeer) {
		t.Fatalf("a card for another device than the link's: %v", err)
	}
}

// Requests that prove no token are dropped after a lookup (no public-key
// work, no answer), a forged proof is dropped too, and a flood is cut off
// by the per-peer budget, which penalises the sender.
func TestContactRequestsThatProveNothing(t *testing.T) {
	ctx := context.Background()
	a, b := pair(t)
	testsupport.Connect(t, b.h, a.h)
	// A real token, a forged proof.
	inv, pi := issueInvite(t, a)
	full, err := b.svc.FetchTokenCard(ctx, pi.Card, card.TokenID(pi.Token), "a", card.ErrInviteInvalid)
	if err != nil {
		t.Fatal(err)
	}
	signed, _ := b.chat.SignedPrekey()
	bCard := card.Of(b.chat.cert, signed, peer.AddrInfo{ID: b.h.ID()})
	forged, err := SealRequest(full.Prekey, purposeContactReq, card.TokenID(pi.Token), contactRequestBody{Card: bCard, Secret: make([]byte, 32), Proof: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.sendContactRequest(ctx, a.h.ID(), forged); !errors.Is(err, card.ErrInviteInvalid) {
		t.Fatalf("a forged proof: %v, want no answer", err)
	}
	if _, _, ok := a.chat.contact(b.chat.acct.ID()); ok {
		t.Fatal("a forged proof made a contact")
	}
	junk, err := cbor.Marshal(Request{TokenID: make([]byte, 16), Box: make([]byte, 2000)})
	if err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if r, err := b.svc.sendContactRequest(ctx, a.h.ID(), junk); err == nil {
			t.Fatalf("a junk request got an answer: %+v", r)
		}
	}
	if a.pen.Load() == 0 {
		t.Fatal("the flooding peer was not penalised")
	}
	// The real invite still works for a well-behaved newcomer.
	c := newSide(t, "Cy", b.chat.convs)
	c.h.Peerstore().AddAddrs(a.h.ID(), a.h.Addrs(), time.Hour)
	if _, _, err := c.svc.AcceptInvite(ctx, inv.Link); err != nil {
		t.Fatalf("the invite after the flood: %v", err)
	}
}

// Pending tokens are sealed at rest under their datastore key: a value
// moved under another token's key does not open.
func TestPendingTokensAreSealed(t *testing.T) {
	ctx := context.Background()
	a, _ := pair(t)
	inv, err := a.svc.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := hex.DecodeString(inv.Token)
	if _, ok := a.svc.GetPending(ctx, card.Invite, tid); !ok {
		t.Fatal("the issued token is not pending")
	}
	if _, ok := a.svc.GetPending(ctx, card.DeviceLink, tid); ok {
		t.Fatal("an invite's token is pending as a link code")
	}
	raw, err := a.store.Get(ctx, invitePrefix.ChildString(inv.Token))
	if err != nil {
		t.Fatal(err)
	}
	pi, err := card.Invite.Parse(inv.Link, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, pi.Token) {
		t.Fatal("the stored token state is not sealed")
	}
	other := make([]byte, 16)
	if err := a.store.Put(ctx, invitePrefix.ChildString(hex.EncodeToString(other)), raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.svc.GetPending(ctx, card.Invite, other); ok {
		t.Fatal("a sealed token moved under another id opened")
	}
}

// issueInvite has s create a one-hour invite and returns it parsed too.
func issueInvite(t *testing.T, s *side) (Invite, card.Parsed) {
	t.Helper()
	inv, err := s.svc.CreateInvite(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pi, err := card.Invite.Parse(inv.Link, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return inv, pi
}
