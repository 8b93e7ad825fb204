package node

import (
	"bufio"
	"bytes"

	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/discovery"
)

// Invites. An invite link carries the inviter's certified device and peer
// id (no prekey, no addresses: about 500 characters, a QR code a phone
// reads at arm's length), the display name, an expiry and a one-time
// 32-byte token, all bound by a MAC keyed from the token, so a link altered
// in transit is refused by the acceptor. Accepting finds the inviter
// through the private DHT (peer routing), fetches its signed prekey with
// the token's public id (TokenCardProtocol: the prekey must be signed by
// the device the link certifies), and sends a contact request on
// ContactProtocol: the token's public id and an HPKE box
// sealed to the inviter's prekey holding the acceptor's card, name, a fresh
// pair secret (for rendezvous) and a proof of the token. The inviter looks
// the id up before any public-key work (an unknown id costs a map lookup
// and is dropped without a reply: there is no open inbox), opens the box,
// checks the proof, marks the token used (durably, before answering), and
// answers with the id of the 1:1 conversation it starts.

// ContactProtocol carries contact requests made from invites.
const ContactProtocol = "/glitr/contact/1.0.0"

// TokenCardProtocol hands this device's current card (with its signed
// prekey) to whoever names a pending invite or link code by its token id.
const TokenCardProtocol = "/glitr/token-card/1.0.0"

const (
	maxContactRequest  = 48 << 10
	contactRequestRate = 1.0 / 6 // per peer per second: 10 per minute
	contactBurst       = 5
	defaultInviteTTL   = 7 * 24 * time.Hour
	maxInviteTTL       = 30 * 24 * time.Hour
	purposeContactReq  = "contact-request"
)

var (
	invitePrefix = ds.NewKey("/invite")
	pairPrefix   = ds.NewKey("/pair")
)

// pendingInvite is what the inviter keeps per token (sealed at rest).
type pendingInvite struct {
	Expires int64 `cbor:"1,keyasint"`
	Used    bool  `cbor:"2,keyasint"`
	Token   []byte
}

type contactRequest struct {
	TokenID []byte `cbor:"1,keyasint"`
	Box     []byte `cbor:"2,keyasint"`
}

type contactRequestBody struct {
	Card   card.Card `cbor:"1,keyasint"`
	Name   string    `cbor:"2,keyasint"`
	Secret []byte    `cbor:"3,keyasint"`
	Proof  []byte    `cbor:"4,keyasint"`
}

type contactReply struct {
	Err          string `cbor:"1,keyasint,omitempty"` // "expired" or "used"
	Conversation []byte `cbor:"2,keyasint,omitempty"`
	Name         string `cbor:"3,keyasint,omitempty"`
}

// invites is the inviter's side: pending tokens and request rate limits.
type invites struct {
	mu     sync.Mutex // guards limits
	limits map[peer.ID]*rate.Limiter
	tokMu  sync.Mutex // one accepted request at a time, so a token is used once
}

// CreateInvite makes a one-time invite valid for ttl.
func (c *Chat) CreateInvite(ctx context.Context, ttl time.Duration) (Invite, error) {
	if ttl <= 0 {
		ttl = defaultInviteTTL
	}
	if ttl > maxInviteTTL {
		return Invite{}, fmt.Errorf("%w: an invite lasts at most %s", ErrBadInput, maxInviteTTL)
	}
	return c.newTokenLink(ctx, ttl, card.Invite, invitePrefix)
}

// newTokenLink makes a one-time link carrying this device's card, the
// display name, the expiry and a fresh token, and stores the token under
// store (synced) for the request that will prove it.
func (c *Chat) newTokenLink(ctx context.Context, ttl time.Duration, kind card.Kind, store ds.Key) (Invite, error) {
	token := make([]byte, card.TokenLen)
	if _, err := rand.Read(token); err != nil {
		return Invite{}, err
	}
	expires := c.now().Add(ttl).Truncate(time.Second)
	link, err := kind.Encode(card.Payload{
		Card:    card.Card{Cert: c.id.Cert, Peer: []byte(c.n.Host.ID())},
		Name:    c.accountSnapshot().name,
		Expires: expires.Unix(),
		Token:   token,
	})
	if err != nil {
		return Invite{}, err
	}
	tid := card.TokenID(token)
	if err := c.putPending(ctx, store, tid, pendingInvite{Expires: expires.Unix(), Token: token}); err != nil {
		return Invite{}, err
	}
	return Invite{Link: link, Token: hex.EncodeToString(tid), Expires: expires}, nil
}

func (c *Chat) ownPrekeySigned() ([]byte, error) {
	signed, _, err := c.currentPrekey()
	return signed, err
}

func (c *Chat) putInvite(ctx context.Context, tid []byte, inv pendingInvite) error {
	return c.putPending(ctx, invitePrefix, tid, inv)
}

// putPending stores a one-time token's state under prefix, synced.
func (c *Chat) putPending(ctx context.Context, prefix ds.Key, tid []byte, inv pendingInvite) error {
	b, err := canonicalEnc.Marshal(inv)
	if err != nil {
		return err
	}
	k := prefix.ChildString(hex.EncodeToString(tid))
	sealed, err := sealAtRest(c.storeKey(), k.String(), b)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, k, sealed); err != nil {
		return fmt.Errorf("store invite: %w", err)
	}
	return c.ds.Sync(ctx, k)
}

func (c *Chat) getInvite(ctx context.Context, tid []byte) (pendingInvite, bool) {
	return c.getPending(ctx, invitePrefix, tid)
}

func (c *Chat) getPending(ctx context.Context, prefix ds.Key, tid []byte) (pendingInvite, bool) {
	var inv pendingInvite
	k := prefix.ChildString(hex.EncodeToString(tid))
	sealed, err := c.ds.Get(ctx, k)
	if err != nil {
		return inv, false
	}
	b, err := openAtRest(c.storeKey(), k.String(), sealed)
	if err != nil || cbor.Unmarshal(b, &inv) != nil {
		return inv, false
	}
	return inv, true
}

// putPairSecret stores the secret shared with a contact: the root of the
// pair's rendezvous keys (discovery.go).
func (c *Chat) putPairSecret(ctx context.Context, a keyring.AccountID, secret []byte) error {
	if len(secret) != discovery.PairSecretSize {
		return fmt.Errorf("pair secret of %d bytes", len(secret))
	}
	k := pairPrefix.ChildString(a.String())
	sealed, err := sealAtRest(c.storeKey(), k.String(), secret)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, k, sealed); err != nil {
		return err
	}
	c.mu.Lock()
	c.pairs[a] = [discovery.PairSecretSize]byte(secret)
	c.mu.Unlock()
	if d := c.discovery; d != nil {
		d.ContactsChanged()
	}
	return nil
}

// loadPairSecrets reads the stored pair secrets.
func (c *Chat) loadPairSecrets(ctx context.Context) error {
	return c.each(ctx, pairPrefix, func(k string, v []byte) error {
		a, err := parseAccountKey(ds.RawKey(k).BaseNamespace())
		if err != nil {
			return nil
		}
		b, err := openAtRest(c.storeKey(), k, v)
		if err != nil || len(b) != discovery.PairSecretSize {
			c.log.Warn("stored pair secret does not open; ignoring it", "key", k, "err", err)
			return nil
		}
		c.pairs[a] = [discovery.PairSecretSize]byte(b)
		return nil
	})
}

// discoveryContacts lists the contacts that share a pair secret with us,
// for the DHT rendezvous.
func (c *Chat) discoveryContacts() []discovery.Contact {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]discovery.Contact, 0, len(c.pairs)+1)
	for a, secret := range c.pairs {
		dc := discovery.Contact{Account: a, PairSecret: secret}
		if vc, ok := c.contacts[a]; ok {
			dc.Devices = []discovery.Device{{ID: vc.Cert.Device, Peer: vc.Peer.ID}}
		}
		out = append(out, dc)
	}
	// The account's own devices find each other the same way, under a
	// secret derived from the account DAG's root.
	if c.account != nil && len(c.ownDevs) > 0 {
		dc := discovery.Contact{Account: c.id.AccountID(), PairSecret: [discovery.PairSecretSize]byte(deriveSecret(c.account.root, "own-devices-rendezvous", discovery.PairSecretSize))}
		for _, d := range c.ownDevs {
			p, _ := peer.IDFromBytes(d.Peer)
			dc.Devices = append(dc.Devices, discovery.Device{ID: keyring.DeviceID(d.Device), Peer: p})
		}
		out = append(out, dc)
	}
	return out
}

// addVerifiedContact stores a contact and records it in the account DAG.
func (c *Chat) addVerifiedContact(ctx context.Context, vc card.Verified, name string) error {
	if err := c.putContactCard(ctx, vc); err != nil {
		return err
	}
	c.mu.Lock()
	c.contacts[vc.Cert.Account] = vc
	c.mu.Unlock()
	if len(vc.Peer.Addrs) > 0 {
		c.n.Host.Peerstore().AddAddrs(vc.Peer.ID, vc.Peer.Addrs, time.Hour)
	}
	added := crdt.ContactAdded
	upd := crdt.ContactUpdate{Account: crdt.AccountID(vc.Cert.Account), Status: &added}
	if name != "" {
		upd.Name = &name
		if c.takesNameOfAnother(vc.Cert.Account, name) {
			// Someone we know by this name now has another account key:
			// a reinstall without backup, or an impostor. The contact
			// is marked so the UI warns loudly until the users compare
			// safety numbers again.
			changed := crdt.KeyChanged
			upd.Verification = &changed
			c.log.Warn("a new contact uses the name of an existing contact with another account key", "account", vc.Cert.Account.String()[:16])
			c.events.publish(Event{Kind: "contact-key-changed"})
		}
	}
	return c.commitAccount(ctx, upd)
}

// takesNameOfAnother reports whether another current contact already goes
// by name (case-insensitively).
func (c *Chat) takesNameOfAnother(a keyring.AccountID, name string) bool {
	for other, ct := range c.accountSnapshot().contacts {
		if other != a && ct.Status != crdt.ContactRemoved && ct.Name != "" && strings.EqualFold(ct.Name, name) {
			return true
		}
	}
	return false
}

// AcceptInvite sends a contact request for link and returns the inviter's
// account and the 1:1 conversation once it has arrived.
func (c *Chat) AcceptInvite(ctx context.Context, link string) (keyring.AccountID, string, error) {
	pi, err := card.Invite.Parse(link, c.now())
	if err != nil {
		return keyring.AccountID{}, "", err
	}
	inviter := pi.Card.Cert.Account
	if inviter == c.id.AccountID() {
		return inviter, "", fmt.Errorf("%w: that is your own invite", ErrInviteInvalid)
	}
	tid := card.TokenID(pi.Token)
	if pi.Card, err = c.fetchTokenCard(ctx, pi.Card, tid, "the inviter", ErrInviteInvalid); err != nil {
		return inviter, "", err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return inviter, "", err
	}
	myCard, err := c.myCardRaw()
	if err != nil {
		return inviter, "", err
	}
	proof, err := card.ContactProof(pi.Token, tid, myCard, secret)
	if err != nil {
		return inviter, "", err
	}
	body, err := canonicalEnc.Marshal(contactRequestBody{Card: myCard, Name: c.accountSnapshot().name, Secret: secret, Proof: proof})
	if err != nil {
		return inviter, "", err
	}
	box, err := keyring.SealBox(pi.Card.Prekey, purposeContactReq, tid, body)
	if err != nil {
		return inviter, "", err
	}
	req, err := canonicalEnc.Marshal(contactRequest{TokenID: tid, Box: box})
	if err != nil {
		return inviter, "", err
	}
	// The inviter becomes a contact first: its welcome must be accepted.
	if err := c.addVerifiedContact(ctx, pi.Card, pi.Name); err != nil {
		return inviter, "", err
	}
	if err := c.putPairSecret(ctx, inviter, secret); err != nil {
		return inviter, "", err
	}
	reply, err := c.sendContactRequest(ctx, pi.Card.Peer.ID, req)
	if err != nil {
		return inviter, "", err
	}
	switch reply.Err {
	case "":
	case "expired":
		return inviter, "", ErrInviteExpired
	case "used":
		return inviter, "", ErrInviteUsed
	default:
		return inviter, "", fmt.Errorf("%w: %s", ErrInviteInvalid, reply.Err)
	}
	if len(reply.Conversation) != 16 {
		return inviter, "", fmt.Errorf("%w: the inviter answered without a conversation", ErrBadPeer)
	}
	hexID := hex.EncodeToString(reply.Conversation)
	// The welcome is on its way (the inviter sent it before answering,
	// or is retrying): wait for it.
	for {
		if conv, err := c.conversation(hexID); err == nil {
			return inviter, hexID, c.synced(ctx, conv)
		}
		select {
		case <-ctx.Done():
			return inviter, hexID, fmt.Errorf("waiting for the conversation: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Chat) myCardRaw() (card.Card, error) {
	signed, err := c.ownPrekeySigned()
	if err != nil {
		return card.Card{}, err
	}
	return card.Of(c.id.Cert, signed, peer.AddrInfo{ID: c.n.Host.ID(), Addrs: c.n.Host.Addrs()}), nil
}

// sendContactRequest reaches the inviter (through the DHT when no address
// is known) and exchanges the request for the reply.
func (c *Chat) sendContactRequest(ctx context.Context, p peer.ID, req []byte) (contactReply, error) {
	var reply contactReply
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.reach(ctx, p, "the inviter"); err != nil {
		return reply, err
	}
	s, err := c.n.Host.NewStream(network.WithAllowLimitedConn(ctx, "glitr-contact"), p, ContactProtocol)
	if err != nil {
		return reply, fmt.Errorf("contact request: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return reply, err
	}
	if err := s.CloseWrite(); err != nil {
		return reply, err
	}
	b, err := io.ReadAll(io.LimitReader(s, 4<<10))
	if err != nil || len(b) == 0 {
		return reply, fmt.Errorf("%w: the inviter did not answer (the invite is unknown to it, or was revoked)", ErrInviteInvalid)
	}
	if err := card.Dec.Unmarshal(b, &reply); err != nil {
		return reply, fmt.Errorf("%w: malformed answer: %w", ErrBadPeer, err)
	}
	return reply, nil
}

// reach connects to p, asking the DHT for its addresses when none is known.
func (c *Chat) reach(ctx context.Context, p peer.ID, who string) error {
	if c.n.Host.Network().Connectedness(p) == network.Connected {
		return nil
	}
	if c.n.DHT != nil && len(c.n.Host.Peerstore().Addrs(p)) == 0 {
		ai, err := c.n.DHT.FindPeer(ctx, p)
		if err != nil {
			return fmt.Errorf("cannot find %s on the network: %w", who, err)
		}
		c.n.Host.Peerstore().AddAddrs(p, ai.Addrs, time.Hour)
	}
	if err := c.n.Host.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		return fmt.Errorf("cannot reach %s: %w", who, err)
	}
	return nil
}

// readRequest reads the one request of an unsolicited stream (contact,
// link or rejoin request): per-peer rate limit (a peer over it is
// penalised), a deadline and a size cap. On false the stream was reset.
func (c *Chat) readRequest(s network.Stream, what string, timeout time.Duration) ([]byte, bool) {
	from := s.Conn().RemotePeer()
	if !c.allowContactRequest(from) {
		s.Reset()
		c.n.Penalize(from, 5, what+" requests over the rate limit")
		return nil, false
	}
	_ = s.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(s), maxContactRequest+1))
	if err != nil || len(b) > maxContactRequest {
		s.Reset()
		return nil, false
	}
	return b, true
}

func (c *Chat) allowContactRequest(p peer.ID) bool {
	c.inv.mu.Lock()
	defer c.inv.mu.Unlock()
	if c.inv.limits == nil {
		c.inv.limits = map[peer.ID]*rate.Limiter{}
	}
	l, ok := c.inv.limits[p]
	if !ok {
		if len(c.inv.limits) > 4096 {
			clear(c.inv.limits)
		}
		l = rate.NewLimiter(rate.Limit(contactRequestRate), contactBurst)
		c.inv.limits[p] = l
	}
	return l.Allow()
}

// handleContactRequest is the inviter's side. Anything that does not prove
// a token we issued gets the stream reset and nothing else.
func (c *Chat) handleContactRequest(s network.Stream) {
	from := s.Conn().RemotePeer()
	b, ok := c.readRequest(s, "contact", 15*time.Second)
	if !ok {
		return
	}
	reply, err := c.acceptContactRequest(c.ctx, from, b)
	if err != nil {
		c.log.Debug("contact request dropped", "peer", from.String(), "err", err)
		s.Reset()
		return
	}
	answerRequest(s, reply)
}

var errDropRequest = errors.New("contact request does not prove a valid token")

// openTokenRequest opens a request that proves a one-time token (an
// invite's, a link code's): the token id in the clear, and a body sealed to
// this device's prekey under purpose, decoded into a B. lookup finds what
// this device issued under the id, before any public-key work, so unknown
// ids cost nothing. Anything that does not decode, is not ours or does not
// open is errDropRequest. The caller holds c.inv.tokMu, so that checking
// and spending the token is one step.
func openTokenRequest[B any](c *Chat, b []byte, purpose string, lookup func(tokenID []byte) (pendingInvite, bool)) (tokenID []byte, issued pendingInvite, body B, err error) {
	var req contactRequest
	if err := card.Dec.Unmarshal(b, &req); err != nil || len(req.TokenID) != 16 {
		return nil, issued, body, errDropRequest
	}
	issued, ok := lookup(req.TokenID)
	if !ok {
		return nil, issued, body, errDropRequest
	}
	c.idMu.Lock()
	plain, err := c.id.Keyring.Prekeys.OpenBox(c.id.DeviceID(), purpose, req.TokenID, req.Box)
	c.idMu.Unlock()
	if err != nil {
		return nil, issued, body, fmt.Errorf("%w: %w", errDropRequest, err)
	}
	if err := card.Dec.Unmarshal(plain, &body); err != nil {
		return nil, issued, body, fmt.Errorf("%w: %w", errDropRequest, err)
	}
	return req.TokenID, issued, body, nil
}

// answerRequest writes the one reply of a request stream and closes it;
// it reports whether the reply went out (else the stream was reset).
func answerRequest(s network.Stream, reply any) bool {
	out, err := canonicalEnc.Marshal(reply)
	if err == nil {
		_, err = s.Write(out)
	}
	if err == nil {
		err = s.Close()
	}
	if err != nil {
		s.Reset()
		return false
	}
	return true
}

func (c *Chat) acceptContactRequest(ctx context.Context, from peer.ID, b []byte) (contactReply, error) {
	c.inv.tokMu.Lock()
	defer c.inv.tokMu.Unlock()
	tokenID, inv, body, err := openTokenRequest[contactRequestBody](c, b, purposeContactReq,
		func(id []byte) (pendingInvite, bool) { return c.getInvite(ctx, id) })
	if err != nil {
		return contactReply{}, err
	}
	want, err := card.ContactProof(inv.Token, tokenID, body.Card, body.Secret)
	if err != nil || !hmac.Equal(want, body.Proof) || len(body.Secret) != 32 {
		return contactReply{}, errDropRequest
	}
	// The requester holds the token: from here it gets an answer.
	if inv.Used {
		return contactReply{Err: "used"}, nil
	}
	if !c.now().Before(time.Unix(inv.Expires, 0)) {
		return contactReply{Err: "expired"}, nil
	}
	vc, err := card.Verify(body.Card, c.now())
	if err != nil || vc.Peer.ID != from || vc.Cert.Account == c.id.AccountID() {
		return contactReply{}, fmt.Errorf("%w: card does not verify or is not the requester's", errDropRequest)
	}
	if checkName(body.Name) != nil {
		body.Name = ""
	}
	inv.Used = true
	if err := c.putInvite(ctx, tokenID, inv); err != nil {
		return contactReply{}, err
	}
	if err := c.addVerifiedContact(ctx, vc, body.Name); err != nil {
		return contactReply{}, err
	}
	if err := c.putPairSecret(ctx, vc.Cert.Account, body.Secret); err != nil {
		return contactReply{}, err
	}
	hexID, err := c.CreateConversation(ctx, "", []keyring.AccountID{vc.Cert.Account})
	if err != nil {
		return contactReply{}, err
	}
	conv, _ := hex.DecodeString(hexID)
	c.events.publish(Event{Kind: "contact", Conversation: hexID})
	return contactReply{Conversation: conv, Name: c.accountSnapshot().name}, nil
}

// contactName is a contact's display name from the account DAG, falling
// back to the device name in its certificate.
func (c *Chat) contactName(a keyring.AccountID) string {
	if ct, ok := c.accountSnapshot().contacts[a]; ok && ct.Name != "" {
		return ct.Name
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.contacts[a].Cert.Name
}

// fetchTokenCard reaches the device a link names and asks, with the token
// id, for its current card. The answer must speak for the very device the
// link certifies (same certificate, same peer), and its prekey must be
// signed by that device and valid now: the link authenticates the prekey.
func (c *Chat) fetchTokenCard(ctx context.Context, linked card.Verified, tid []byte, who string, invalid error) (card.Verified, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p := linked.Peer.ID
	if err := c.reach(ctx, p, who); err != nil {
		return linked, err
	}
	s, err := c.n.Host.NewStream(network.WithAllowLimitedConn(ctx, "glitr-token-card"), p, TokenCardProtocol)
	if err != nil {
		return linked, fmt.Errorf("ask %s for its key: %w", who, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.Write(tid); err != nil {
		s.Reset()
		return linked, err
	}
	if err := s.CloseWrite(); err != nil {
		return linked, err
	}
	b, err := io.ReadAll(io.LimitReader(s, maxContactRequest+1))
	if err != nil || len(b) == 0 {
		return linked, fmt.Errorf("%w: %s did not answer (the code is unknown to it, or was revoked)", invalid, who)
	}
	var cd card.Card
	if len(b) > maxContactRequest || card.Dec.Unmarshal(b, &cd) != nil {
		return linked, fmt.Errorf("%w: %s sent a malformed card", ErrBadPeer, who)
	}
	vc, err := card.Verify(cd, c.now())
	if err != nil {
		return linked, fmt.Errorf("%w: %s's card: %w", ErrBadPeer, who, err)
	}
	if !bytes.Equal(cd.Cert, linked.Raw.Cert) || vc.Peer.ID != p {
		return linked, fmt.Errorf("%w: %s answered with another device's card", ErrBadPeer, who)
	}
	vc.Raw.Addrs, vc.Peer.Addrs = nil, nil
	return vc, nil
}

// handleTokenCard answers a token id of a pending invite or link code with
// this device's current card. An unknown id gets the stream reset: no
// public-key work and nothing learnt.
func (c *Chat) handleTokenCard(s network.Stream) {
	b, ok := c.readRequest(s, "token card", 10*time.Second)
	if !ok {
		return
	}
	if len(b) != 16 {
		s.Reset()
		return
	}
	_, invite := c.getPending(c.ctx, invitePrefix, b)
	_, link := c.getPending(c.ctx, linkPrefix, b)
	if !invite && !link {
		s.Reset()
		return
	}
	out, err := c.cardBytes()
	if err != nil {
		s.Reset()
		return
	}
	if _, err := s.Write(out); err != nil {
		s.Reset()
		return
	}
	_ = s.Close()
}
