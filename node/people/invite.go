package people

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// Invites (docs/people.md). An invite link carries the inviter's certified
// device and peer id (no prekey, no addresses: about 500 characters, a QR
// code a phone reads at arm's length), the display name, an expiry and a
// one-time 32-byte token, all bound by a MAC keyed from the token, so a
// link altered in transit is refused by the acceptor. Accepting finds the
// inviter through the private DHT (peer routing), fetches its signed
// prekey with the token's public id (TokenCardProtocol: the prekey must be
// signed by the device the link certifies), and sends a contact request on
// ContactProtocol: the token's public id and an HPKE box sealed to the
// inviter's prekey holding the acceptor's card, name, a fresh pair secret
// (for rendezvous) and a proof of the token. The inviter looks the id up
// before any public-key work (an unknown id costs a map lookup and is
// dropped without a reply: there is no open inbox), opens the box, checks
// the proof, marks the token used (durably, before answering), and answers
// with the id of the 1:1 conversation it starts.

const (
	purposeContactReq = "contact-request"
	maxContactReply   = 4 << 10
)

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

// CreateInvite makes a one-time invite valid for ttl (0: a week).
func (s *Service) CreateInvite(ctx context.Context, ttl time.Duration) (Invite, error) {
	if ttl <= 0 {
		ttl = DefaultInviteTTL
	}
	if ttl > MaxInviteTTL {
		return Invite{}, fmt.Errorf("%w: an invite lasts at most %s", ErrInviteTTL, MaxInviteTTL)
	}
	return s.IssueLink(ctx, card.Invite, ttl)
}

// AcceptInvite sends a contact request for link and returns the inviter's
// account and the 1:1 conversation once it has arrived.
func (s *Service) AcceptInvite(ctx context.Context, link string) (keyring.AccountID, string, error) {
	pi, err := card.Invite.Parse(link, s.now())
	if err != nil {
		return keyring.AccountID{}, "", err
	}
	inviter := pi.Card.Cert.Account
	if inviter == s.chat.Self().Account {
		return inviter, "", fmt.Errorf("%w: that is your own invite", card.ErrInviteInvalid)
	}
	tid := card.TokenID(pi.Token)
	if pi.Card, err = s.FetchTokenCard(ctx, pi.Card, tid, "the inviter", card.ErrInviteInvalid); err != nil {
		return inviter, "", err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return inviter, "", err
	}
	signed, err := s.chat.SignedPrekey()
	if err != nil {
		return inviter, "", err
	}
	myCard := card.Of(s.chat.Self().Cert, signed, peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()})
	proof, err := card.ContactProof(pi.Token, tid, myCard, secret)
	if err != nil {
		return inviter, "", err
	}
	req, err := SealRequest(pi.Card.Prekey, purposeContactReq, tid, contactRequestBody{Card: myCard, Name: s.chat.ProfileName(), Secret: secret, Proof: proof})
	if err != nil {
		return inviter, "", err
	}
	// The inviter becomes a contact first: its welcome must be accepted.
	if err := s.chat.AddContact(ctx, pi.Card, pi.Name); err != nil {
		return inviter, "", err
	}
	if err := s.chat.PutPairSecret(ctx, inviter, secret); err != nil {
		return inviter, "", err
	}
	reply, err := s.sendContactRequest(ctx, pi.Card.Peer.ID, req)
	if err != nil {
		return inviter, "", err
	}
	switch reply.Err {
	case "":
	case "expired":
		return inviter, "", card.ErrInviteExpired
	case "used":
		return inviter, "", ErrInviteUsed
	default:
		return inviter, "", fmt.Errorf("%w: %s", card.ErrInviteInvalid, reply.Err)
	}
	if len(reply.Conversation) != 16 {
		return inviter, "", fmt.Errorf("%w: the inviter answered without a conversation", protocol.ErrBadPeer)
	}
	// The welcome is on its way (the inviter sent it before answering,
	// or is retrying): wait for it.
	hexID := hex.EncodeToString(reply.Conversation)
	return inviter, hexID, s.chat.AwaitConversation(ctx, hexID)
}

// sendContactRequest reaches the inviter (through the DHT when no address
// is known) and exchanges the request for the reply.
func (s *Service) sendContactRequest(ctx context.Context, p peer.ID, req []byte) (contactReply, error) {
	var reply contactReply
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Reach(ctx, p, "the inviter"); err != nil {
		return reply, err
	}
	b, err := request.Exchange(ctx, s.host, p, ContactProtocol, req, maxContactReply, 30*time.Second)
	switch {
	case errors.Is(err, request.ErrNoAnswer):
		return reply, fmt.Errorf("%w: the inviter did not answer (the invite is unknown to it, or was revoked)", card.ErrInviteInvalid)
	case errors.Is(err, request.ErrTooLong):
		return reply, fmt.Errorf("%w: malformed answer: %w", protocol.ErrBadPeer, err)
	case err != nil:
		return reply, fmt.Errorf("contact request: %w", err)
	}
	if err := card.Dec.Unmarshal(b, &reply); err != nil {
		return reply, fmt.Errorf("%w: malformed answer: %w", protocol.ErrBadPeer, err)
	}
	return reply, nil
}

// handleContactRequest is the inviter's side. Anything that does not prove
// a token we issued gets the stream reset and nothing else.
func (s *Service) handleContactRequest(st network.Stream) {
	from := st.Conn().RemotePeer()
	b, ok := s.requests.Read(st, "contact", 15*time.Second)
	if !ok {
		return
	}
	reply, err := s.acceptContactRequest(s.ctx, from, b)
	if err != nil {
		s.log.Debug("contact request dropped", "peer", from.String(), "err", err)
		st.Reset()
		return
	}
	request.Answer(st, reply)
}

func (s *Service) acceptContactRequest(ctx context.Context, from peer.ID, b []byte) (contactReply, error) {
	defer s.LockTokens()()
	tokenID, inv, body, err := OpenRequest[contactRequestBody](ctx, s, card.Invite, purposeContactReq, b)
	if err != nil {
		return contactReply{}, err
	}
	want, err := card.ContactProof(inv.Token, tokenID, body.Card, body.Secret)
	if err != nil || !hmac.Equal(want, body.Proof) || len(body.Secret) != 32 {
		return contactReply{}, ErrDropRequest
	}
	// The requester holds the token: from here it gets an answer.
	if inv.Used {
		return contactReply{Err: "used"}, nil
	}
	if !s.now().Before(time.Unix(inv.Expires, 0)) {
		return contactReply{Err: "expired"}, nil
	}
	vc, err := card.Verify(body.Card, s.now())
	if err != nil || vc.Peer.ID != from || vc.Cert.Account == s.chat.Self().Account {
		return contactReply{}, fmt.Errorf("%w: card does not verify or is not the requester's", ErrDropRequest)
	}
	if card.CheckName(body.Name) != nil {
		body.Name = ""
	}
	inv.Used = true
	if err := s.PutPending(ctx, card.Invite, tokenID, inv); err != nil {
		return contactReply{}, err
	}
	if err := s.chat.AddContact(ctx, vc, body.Name); err != nil {
		return contactReply{}, err
	}
	if err := s.chat.PutPairSecret(ctx, vc.Cert.Account, body.Secret); err != nil {
		return contactReply{}, err
	}
	hexID, err := s.chat.CreateConversation(ctx, "", []keyring.AccountID{vc.Cert.Account})
	if err != nil {
		return contactReply{}, err
	}
	conv, _ := hex.DecodeString(hexID)
	s.chat.ContactAdded(hexID)
	return contactReply{Conversation: conv, Name: s.chat.ProfileName()}, nil
}
