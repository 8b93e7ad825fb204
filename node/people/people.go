// Package people is how two people become contacts: one-time invite links,
// the contact request that proves one (docs/people.md), and the token
// links and token requests that device-link codes share with invites. The
// conversation service keeps the contacts, pair secrets and conversations
// this service creates; it reaches them only through the Chat interface
// it defines.
package people

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
)

// Protocols of this service.
const (
	// ContactProtocol carries contact requests made from invites.
	ContactProtocol = "/glitr/contact/1.0.0"
	// TokenCardProtocol hands this device's current card (with its signed
	// prekey) to whoever names a pending invite or link code by its token
	// id.
	TokenCardProtocol = "/glitr/token-card/1.0.0"
)

// Errors of invites (card.ErrInviteInvalid and card.ErrInviteExpired are
// the others).
var (
	ErrInviteUsed = errors.New("invite was already used")
	ErrInviteTTL  = errors.New("invite lifetime out of range")
)

// Invite lifetimes.
const (
	DefaultInviteTTL = 7 * 24 * time.Hour
	MaxInviteTTL     = 30 * 24 * time.Hour
)

// Invite is a one-time link this device issued.
type Invite struct {
	Link    string    // "web+glitr:invite/..." (or link/ for a device-link code)
	Token   string    // the one-time token's id (hex), to revoke it
	Expires time.Time // after this, accepting fails with the kind's Expired error
}

// Self is this device as its cards and links name it.
type Self struct {
	Account keyring.AccountID
	Cert    []byte // the device certificate
}

// Chat is what this service needs from the conversation service. It is
// defined here, by its consumer; the node's chat service satisfies it.
type Chat interface {
	Self() Self
	// SignedPrekey is this device's current prekey, signed by the device.
	SignedPrekey() ([]byte, error)
	// OpenBox opens an HPKE box sealed to one of this device's prekeys.
	OpenBox(purpose string, ad, box []byte) ([]byte, error)
	// ProfileName is the account's display name ("" before onboarding).
	ProfileName() string
	// AddContact stores a verified card as a contact, under name when the
	// contact gave one, and records it in the account DAG.
	AddContact(ctx context.Context, vc card.Verified, name string) error
	// PutPairSecret stores the secret shared with a contact (the root of
	// the pair's DHT rendezvous keys).
	PutPairSecret(ctx context.Context, a keyring.AccountID, secret []byte) error
	// CreateConversation starts a conversation with members and returns
	// its id (hex); AwaitConversation waits until one a member started
	// has arrived here.
	CreateConversation(ctx context.Context, title string, members []keyring.AccountID) (string, error)
	AwaitConversation(ctx context.Context, hexID string) error
	// ContactAdded tells the local UI that a contact came in through an
	// invite, with the conversation started for it.
	ContactAdded(conversation string)
}

// Options are the parts of the service a caller may choose.
type Options struct {
	// Router finds a peer whose addresses are unknown (the DHT); nil: no
	// lookups.
	Router routing.PeerRouting
	// Requests is the per-peer budget of unsolicited requests, shared
	// with the node's other request handlers (nil: a budget of its own).
	Requests *request.Limiter
	// StoreKey seals pending tokens at rest (keyring.SealAtRest).
	StoreKey []byte
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the people service of a personal node.
type Service struct {
	host     host.Host
	store    ds.Batching
	chat     Chat
	router   routing.PeerRouting
	requests *request.Limiter
	storeKey []byte
	now      func() time.Time
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	// tokMu makes checking and spending a token one step: one accepted
	// request at a time, so a token is used once.
	tokMu sync.Mutex
}

// New returns the service; Start registers its stream handlers.
func New(h host.Host, store ds.Batching, chat Chat, opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Requests == nil {
		opts.Requests = request.NewLimiter(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		host: h, store: store, chat: chat, router: opts.Router, requests: opts.Requests,
		storeKey: opts.StoreKey, now: opts.Now, log: opts.Logger.With("component", "people"),
		ctx: ctx, cancel: cancel,
	}
}

// Start answers contact requests and token-card requests.
func (s *Service) Start() {
	s.host.SetStreamHandler(ContactProtocol, s.handleContactRequest)
	s.host.SetStreamHandler(TokenCardProtocol, s.handleTokenCard)
}

// Close stops answering; requests being answered see their context end.
func (s *Service) Close() {
	s.host.RemoveStreamHandler(ContactProtocol)
	s.host.RemoveStreamHandler(TokenCardProtocol)
	s.cancel()
}
