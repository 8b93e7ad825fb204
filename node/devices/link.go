package devices

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// Linking a device to an account (docs/devices.md).
//
// A device of the account shows a one-time link code (the invite format:
// its card, the account name, a 10-minute expiry and a token under a MAC).
// The new node — fresh, its provisional account still unnamed and empty —
// proves the token over LinkProtocol with an HPKE box to the linker's
// prekey holding its device's signed prekey and peer id. The linker
// certifies the new device with the account root key and answers with a
// Bundle sealed to the new device's prekey. The new node adopts the
// account (the node restarts its chat service under the new identity)
// while the linker adds the device to the account DAG and to every
// conversation — a rotation sealed to it, a welcome with the conversation
// root and the history, as for a member added to a group — so it reads
// everything and its contacts' devices seal new epochs to it from then on.

const (
	purposeLinkReq    = "link-request"
	purposeLinkBundle = "link-bundle"
	maxLinkReply      = keyring.MaxBoxPlaintext + 8192
)

type linkRequestBody struct {
	Prekey []byte `cbor:"1,keyasint"`
	Peer   []byte `cbor:"2,keyasint"`
	Proof  []byte `cbor:"3,keyasint"`
}

type linkReply struct {
	Err    string `cbor:"1,keyasint,omitempty"` // "expired" or "used"
	Bundle []byte `cbor:"2,keyasint,omitempty"`
}

// CreateLinkCode makes a one-time code that links a new device to this
// account; it expires after LinkTTL.
func (s *Service) CreateLinkCode(ctx context.Context) (people.Invite, error) {
	if !s.chat.Self().HoldsAccountKey {
		return people.Invite{}, ErrNoAccountKey
	}
	return s.people.IssueLink(ctx, card.DeviceLink, LinkTTL)
}

// handleLinkRequest is the linker's side. Anything that does not prove a
// code we issued gets the stream reset and nothing else.
func (s *Service) handleLinkRequest(st network.Stream) {
	from := st.Conn().RemotePeer()
	b, ok := s.requests.Read(st, "link", 30*time.Second)
	if !ok {
		return
	}
	reply, newDev, err := s.acceptLinkRequest(s.ctx, from, b)
	if err != nil {
		s.log.Debug("link request dropped", "peer", from.String(), "err", err)
		st.Reset()
		return
	}
	if !request.Answer(st, reply) || newDev == nil {
		return
	}
	// Only a device that got its bundle becomes one of ours: an
	// interrupted link leaves no half-certified device (the code is spent;
	// the user makes a new one and links again).
	if err := s.chat.DeviceLinked(s.ctx, *newDev); err != nil {
		s.log.Error("record the linked device", "err", err)
		return
	}
	s.log.Info("device linked", "device", newDev.Cert.Device.String()[:16])
}

func (s *Service) acceptLinkRequest(ctx context.Context, from peer.ID, b []byte) (linkReply, *card.Verified, error) {
	defer s.people.LockTokens()()
	tokenID, pending, body, err := people.OpenRequest[linkRequestBody](ctx, s.people, card.DeviceLink, purposeLinkReq, b)
	if err != nil {
		return linkReply{}, nil, err
	}
	if !hmac.Equal(card.LinkProof(pending.Token, tokenID, body.Prekey, body.Peer), body.Proof) {
		return linkReply{}, nil, people.ErrDropRequest
	}
	if pending.Used {
		return linkReply{Err: "used"}, nil, nil
	}
	now := s.now()
	if !now.Before(time.Unix(pending.Expires, 0)) {
		return linkReply{Err: "expired"}, nil, nil
	}
	spk, err := keyring.VerifyPrekey(body.Prekey)
	if err != nil || spk.ValidAt(now) != nil {
		return linkReply{}, nil, fmt.Errorf("%w: prekey: %v", people.ErrDropRequest, err)
	}
	p, err := peer.IDFromBytes(body.Peer)
	if err != nil || p != from {
		return linkReply{}, nil, fmt.Errorf("%w: the request names another peer", people.ErrDropRequest)
	}
	pending.Used = true
	if err := s.people.PutPending(ctx, card.DeviceLink, tokenID, pending); err != nil {
		return linkReply{}, nil, err
	}
	certBytes, err := s.chat.CertifyDevice(spk.Device, "linked device")
	if err != nil {
		return linkReply{}, nil, err
	}
	cert, err := keyring.VerifyCertificate(certBytes)
	if err != nil {
		return linkReply{}, nil, err
	}
	bundle, err := s.chat.Bundle(certBytes)
	if err != nil {
		return linkReply{}, nil, err
	}
	raw, err := enc.Marshal(bundle)
	if err != nil {
		return linkReply{}, nil, err
	}
	box, err := keyring.SealBox(spk, purposeLinkBundle, tokenID, raw)
	if err != nil {
		return linkReply{}, nil, fmt.Errorf("seal the link bundle: %w", err)
	}
	vc := card.Verified{Cert: cert, Prekey: spk, Peer: peer.AddrInfo{ID: p}, Raw: card.Card{Cert: certBytes, Prekey: body.Prekey, Peer: body.Peer}}
	return linkReply{Bundle: box}, &vc, nil
}

// Link is the new device's side: it proves code to the device that showed
// it and returns the account that device belongs to and the bundle that
// makes this device one of its devices (the caller adopts it).
func (s *Service) Link(ctx context.Context, code string) (keyring.AccountID, Bundle, error) {
	var bundle Bundle
	pl, err := card.DeviceLink.Parse(code, s.now())
	if err != nil {
		return keyring.AccountID{}, bundle, err
	}
	want := pl.Card.Cert.Account
	self := s.chat.Self()
	if want == self.Account {
		return want, bundle, fmt.Errorf("%w: this device already belongs to that account", card.ErrLinkInvalid)
	}
	if !s.chat.Fresh() {
		return want, bundle, ErrNotFresh
	}
	tid := card.TokenID(pl.Token)
	if pl.Card, err = s.people.FetchTokenCard(ctx, pl.Card, tid, "the other device", card.ErrLinkInvalid); err != nil {
		return want, bundle, err
	}
	prekey, err := s.chat.SignedPrekey()
	if err != nil {
		return want, bundle, err
	}
	peerID := []byte(s.host.ID())
	req, err := people.SealRequest(pl.Card.Prekey, purposeLinkReq, tid, linkRequestBody{Prekey: prekey, Peer: peerID, Proof: card.LinkProof(pl.Token, tid, prekey, peerID)})
	if err != nil {
		return want, bundle, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.people.Reach(rctx, pl.Card.Peer.ID, "the other device"); err != nil {
		return want, bundle, err
	}
	raw, err := request.Exchange(rctx, s.host, pl.Card.Peer.ID, LinkProtocol, req, maxLinkReply, 30*time.Second)
	switch {
	case errors.Is(err, request.ErrNoAnswer):
		return want, bundle, fmt.Errorf("%w: the other device did not answer (the code is unknown to it)", card.ErrLinkInvalid)
	case errors.Is(err, request.ErrTooLong):
		return want, bundle, fmt.Errorf("%w: malformed answer: %w", protocol.ErrBadPeer, err)
	case err != nil:
		return want, bundle, fmt.Errorf("link request: %w", err)
	}
	var reply linkReply
	if err := Dec.Unmarshal(raw, &reply); err != nil {
		return want, bundle, fmt.Errorf("%w: malformed answer: %w", protocol.ErrBadPeer, err)
	}
	switch reply.Err {
	case "":
	case "expired":
		return want, bundle, card.ErrLinkExpired
	case "used":
		return want, bundle, ErrLinkUsed
	default:
		return want, bundle, fmt.Errorf("%w: %s", card.ErrLinkInvalid, reply.Err)
	}
	plain, err := s.chat.OpenBox(purposeLinkBundle, tid, reply.Bundle)
	if err != nil {
		return want, bundle, fmt.Errorf("%w: link bundle: %w", protocol.ErrBadPeer, err)
	}
	if err := Dec.Unmarshal(plain, &bundle); err != nil {
		return want, bundle, fmt.Errorf("%w: link bundle: %w", protocol.ErrBadPeer, err)
	}
	return want, bundle, nil
}
