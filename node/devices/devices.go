// Package devices carries the protocols that make several devices one
// account (docs/devices.md): linking a new device with a one-time code
// (LinkProtocol), the encrypted backup a lost account is restored from,
// and a restored device's request to be sealed back into each conversation
// (RejoinProtocol). The device registry, the account DAG and the epochs a
// new device is sealed into belong to the conversation service, which this
// package reaches through the Chat interface it defines.
package devices

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// Protocols of this service.
const (
	// LinkProtocol carries device-link requests.
	LinkProtocol = "/glitr/link/1.0.0"
	// RejoinProtocol carries a certified device's request to be sealed
	// into a conversation of its account.
	RejoinProtocol = "/glitr/rejoin/1.0.0"
)

// LinkTTL is how long a link code is valid.
const LinkTTL = 10 * time.Minute

// Errors of linking and restoring (card.ErrLinkInvalid and
// card.ErrLinkExpired are the others).
var (
	ErrLinkUsed      = errors.New("link code was already used")
	ErrNotFresh      = errors.New("this node already has an account in use: link a fresh node (glitr init on a new data directory)")
	ErrNoRecoveryKey = errors.New("no recovery key on this device: finish setting up the account first")
	ErrNoAccountKey  = errors.New("this device does not hold the account root key")
	// ErrBadBackup: wrong recovery words or a damaged backup file.
	ErrBadBackup = errors.New("backup does not open")
)

// Record is a device of this account as the other devices know it: what
// the account's devices keep of each other and hand a new one.
type Record struct {
	Device []byte `cbor:"1,keyasint"`
	Peer   []byte `cbor:"2,keyasint"`
	Prekey []byte `cbor:"3,keyasint"` // signed by the device
	Cert   []byte `cbor:"4,keyasint"`
}

// Bundle is what a newly linked (or restored) device adopts: the account
// root (every device holds it, so any device can link the next one), its
// certificate, the recovery key, the account DAG's id, the contacts' cards
// and pair secrets and the account's devices.
type Bundle struct {
	AccountSeed []byte      `cbor:"1,keyasint"`
	Cert        []byte      `cbor:"2,keyasint"`
	Recovery    []byte      `cbor:"3,keyasint,omitempty"`
	AccountConv []byte      `cbor:"4,keyasint"`
	Contacts    []card.Card `cbor:"5,keyasint"`
	Pairs       [][]byte    `cbor:"6,keyasint"` // account (32) ‖ pair secret (32)
	Devices     []Record    `cbor:"7,keyasint"`
}

// Self is this device as linking and restoring need it.
type Self struct {
	Account keyring.AccountID
	Device  keyring.DeviceID
	Cert    []byte
	// HoldsAccountKey: this device can certify others (every linked
	// device does; a device whose keyring lost the root cannot).
	HoldsAccountKey bool
}

// Chat is what this service needs from the conversation service. It is
// defined here, by its consumer; the node's chat service satisfies it.
type Chat interface {
	Self() Self
	// SignedPrekey is this device's current prekey, signed by the device;
	// OpenBox opens a box sealed to one of its prekeys.
	SignedPrekey() ([]byte, error)
	OpenBox(purpose string, ad, box []byte) ([]byte, error)
	// Fresh reports whether this node's account is unused (no name, no
	// contacts, no conversations): only such a node may adopt another.
	Fresh() bool
	// CertifyDevice certifies a device with the account root key
	// (ErrNoAccountKey on a device without it).
	CertifyDevice(d keyring.DeviceID, name string) ([]byte, error)
	// Bundle gathers what a new device with certificate cert needs.
	Bundle(cert []byte) (Bundle, error)
	// DeviceLinked records a device that got its bundle as one of the
	// account's and seals it into the account DAG and every conversation.
	DeviceLinked(ctx context.Context, vc card.Verified) error
	// BackupState is the account's shared state for a backup, with the
	// keys the backup is sealed under and carries.
	BackupState() (State, keyring.RecoveryKey, *keyring.AccountKey, error)
	// PendingRejoins lists the conversations this device was restored
	// into and holds no key for yet (ids of 16 bytes).
	PendingRejoins(ctx context.Context) [][]byte
	// ConnectedContacts lists the contacts' peers connected now.
	ConnectedContacts() []peer.ID
	// Readmit seals a device of a member account back into conversation
	// conv (a new epoch, the root and the history), in the background. It
	// reports false, and does nothing, when conv is unknown here, the
	// account is no member or the device was revoked.
	Readmit(ctx context.Context, conv []byte, vc card.Verified) bool
}

// Options are the parts of the service a caller may choose.
type Options struct {
	// Requests is the per-peer budget of unsolicited requests (nil: a
	// budget of its own).
	Requests *request.Limiter
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the devices service of a personal node.
type Service struct {
	host     host.Host
	chat     Chat
	people   *people.Service
	requests *request.Limiter
	now      func() time.Time
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns the service; Start registers its stream handlers. Link codes
// are token links: people issues, keeps and checks them.
func New(h host.Host, chat Chat, ppl *people.Service, opts Options) *Service {
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
		host: h, chat: chat, people: ppl, requests: opts.Requests, now: opts.Now,
		log: opts.Logger.With("component", "devices"), ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
}

// Start answers link and rejoin requests and, on a restored device, asks
// connected contacts to let it back into each conversation until every
// one has arrived.
func (s *Service) Start() {
	s.host.SetStreamHandler(LinkProtocol, s.handleLinkRequest)
	s.host.SetStreamHandler(RejoinProtocol, s.handleRejoin)
	go func() {
		defer close(s.done)
		s.rejoinLoop()
	}()
}

// Close stops answering and asking, and waits for the loop.
func (s *Service) Close() {
	s.host.RemoveStreamHandler(LinkProtocol)
	s.host.RemoveStreamHandler(RejoinProtocol)
	s.cancel()
	<-s.done
}

var enc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// Dec decodes bundles, device records and backup states: larger than a
// card (a bundle lists every contact and device), still strict.
var Dec = protocol.MustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	IndefLength:       cbor.IndefLengthForbidden,
	MaxNestedLevels:   6,
	MaxArrayElements:  65536,
	MaxMapPairs:       16,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})
