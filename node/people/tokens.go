package people

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// One-time tokens. An invite or a device-link code carries a fresh token;
// the issuer keeps it, sealed at rest and synced, under the token's
// public id until a request proves it (or it expires). A request names
// the id in the clear and seals the rest to the issuer's prekey, so an
// unknown id costs a lookup and nothing else.

// Datastore prefixes of pending tokens, by kind.
var (
	invitePrefix = ds.NewKey("/invite")
	linkPrefix   = ds.NewKey("/link")
)

// StorePrefixes are the datastore prefixes this service writes under: an
// account adopted by linking or restoring clears them.
var StorePrefixes = []ds.Key{invitePrefix, linkPrefix}

func prefixOf(k card.Kind) ds.Key {
	if k.Word == card.DeviceLink.Word {
		return linkPrefix
	}
	return invitePrefix
}

// Pending is what the issuer keeps per token (sealed at rest).
type Pending struct {
	Expires int64 `cbor:"1,keyasint"`
	Used    bool  `cbor:"2,keyasint"`
	Token   []byte
}

// Request is a request that proves a token: its public id, and a body
// sealed to the issuer's prekey.
type Request struct {
	TokenID []byte `cbor:"1,keyasint"`
	Box     []byte `cbor:"2,keyasint"`
}

// ErrDropRequest: a request proves no token this device issued. The
// stream is reset without a reply.
var ErrDropRequest = errors.New("request does not prove a valid token")

var enc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// IssueLink makes a one-time link of kind k carrying this device's card,
// the display name, the expiry and a fresh token, and stores the token
// (synced) for the request that will prove it.
func (s *Service) IssueLink(ctx context.Context, k card.Kind, ttl time.Duration) (Invite, error) {
	token := make([]byte, card.TokenLen)
	if _, err := rand.Read(token); err != nil {
		return Invite{}, err
	}
	expires := s.now().Add(ttl).Truncate(time.Second)
	self := s.chat.Self()
	link, err := k.Encode(card.Payload{
		Card:    card.Card{Cert: self.Cert, Peer: []byte(s.host.ID())},
		Name:    s.chat.ProfileName(),
		Expires: expires.Unix(),
		Token:   token,
	})
	if err != nil {
		return Invite{}, err
	}
	tid := card.TokenID(token)
	if err := s.PutPending(ctx, k, tid, Pending{Expires: expires.Unix(), Token: token}); err != nil {
		return Invite{}, err
	}
	return Invite{Link: link, Token: hex.EncodeToString(tid), Expires: expires}, nil
}

// PutPending stores a token's state, synced.
func (s *Service) PutPending(ctx context.Context, k card.Kind, tid []byte, p Pending) error {
	b, err := enc.Marshal(p)
	if err != nil {
		return err
	}
	key := prefixOf(k).ChildString(hex.EncodeToString(tid))
	sealed, err := keyring.SealAtRest(s.storeKey, key.String(), b)
	if err != nil {
		return err
	}
	if err := s.store.Put(ctx, key, sealed); err != nil {
		return fmt.Errorf("store %s token: %w", k.Word, err)
	}
	return s.store.Sync(ctx, key)
}

// GetPending looks a token of kind k up by its id.
func (s *Service) GetPending(ctx context.Context, k card.Kind, tid []byte) (Pending, bool) {
	var p Pending
	key := prefixOf(k).ChildString(hex.EncodeToString(tid))
	sealed, err := s.store.Get(ctx, key)
	if err != nil {
		return p, false
	}
	b, err := keyring.OpenAtRest(s.storeKey, key.String(), sealed)
	if err != nil || cbor.Unmarshal(b, &p) != nil {
		return p, false
	}
	return p, true
}

// LockTokens takes the lock under which a token is checked and spent; the
// caller calls the returned function to release it.
func (s *Service) LockTokens() (unlock func()) {
	s.tokMu.Lock()
	return s.tokMu.Unlock
}

// OpenRequest opens a request that proves a token of kind k: the token id
// in the clear, and a body sealed to this device's prekey under purpose,
// decoded into a B. The token is looked up before any public-key work, so
// unknown ids cost nothing. Anything that does not decode, is not ours or
// does not open is ErrDropRequest. The caller holds LockTokens, so that
// checking and spending the token is one step.
func OpenRequest[B any](ctx context.Context, s *Service, k card.Kind, purpose string, b []byte) (tokenID []byte, issued Pending, body B, err error) {
	var req Request
	if err := card.Dec.Unmarshal(b, &req); err != nil || len(req.TokenID) != 16 {
		return nil, issued, body, ErrDropRequest
	}
	issued, ok := s.GetPending(ctx, k, req.TokenID)
	if !ok {
		return nil, issued, body, ErrDropRequest
	}
	plain, err := s.chat.OpenBox(purpose, req.TokenID, req.Box)
	if err != nil {
		return nil, issued, body, fmt.Errorf("%w: %w", ErrDropRequest, err)
	}
	if err := card.Dec.Unmarshal(plain, &body); err != nil {
		return nil, issued, body, fmt.Errorf("%w: %w", ErrDropRequest, err)
	}
	return req.TokenID, issued, body, nil
}

// SealRequest is the asking side of OpenRequest: body sealed to the
// issuer's prekey under purpose, with the token's id.
func SealRequest(to keyring.SignedPrekey, purpose string, tid []byte, body any) ([]byte, error) {
	raw, err := enc.Marshal(body)
	if err != nil {
		return nil, err
	}
	box, err := keyring.SealBox(to, purpose, tid, raw)
	if err != nil {
		return nil, err
	}
	return enc.Marshal(Request{TokenID: tid, Box: box})
}

// Reach connects to p, asking the router for its addresses when none is
// known; who names p in errors.
func (s *Service) Reach(ctx context.Context, p peer.ID, who string) error {
	if s.host.Network().Connectedness(p) == network.Connected {
		return nil
	}
	if s.router != nil && len(s.host.Peerstore().Addrs(p)) == 0 {
		ai, err := s.router.FindPeer(ctx, p)
		if err != nil {
			return fmt.Errorf("cannot find %s on the network: %w", who, err)
		}
		s.host.Peerstore().AddAddrs(p, ai.Addrs, time.Hour)
	}
	if err := s.host.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		return fmt.Errorf("cannot reach %s: %w", who, err)
	}
	return nil
}

// FetchTokenCard reaches the device a link names and asks, with the token
// id, for its current card. The answer must speak for the very device the
// link certifies (same certificate, same peer), and its prekey must be
// signed by that device and valid now: the link authenticates the prekey.
// invalid is the error of a code the device does not know.
func (s *Service) FetchTokenCard(ctx context.Context, linked card.Verified, tid []byte, who string, invalid error) (card.Verified, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p := linked.Peer.ID
	if err := s.Reach(ctx, p, who); err != nil {
		return linked, err
	}
	b, err := request.Exchange(ctx, s.host, p, TokenCardProtocol, tid, request.MaxSize, 30*time.Second)
	switch {
	case errors.Is(err, request.ErrNoAnswer):
		return linked, fmt.Errorf("%w: %s did not answer (the code is unknown to it, or was revoked)", invalid, who)
	case errors.Is(err, request.ErrTooLong):
		return linked, fmt.Errorf("%w: %s sent a malformed card", protocol.ErrBadPeer, who)
	case err != nil:
		return linked, fmt.Errorf("ask %s for its key: %w", who, err)
	}
	var cd card.Card
	if card.Dec.Unmarshal(b, &cd) != nil {
		return linked, fmt.Errorf("%w: %s sent a malformed card", protocol.ErrBadPeer, who)
	}
	vc, err := card.Verify(cd, s.now())
	if err != nil {
		return linked, fmt.Errorf("%w: %s's card: %w", protocol.ErrBadPeer, who, err)
	}
	if !bytes.Equal(cd.Cert, linked.Raw.Cert) || vc.Peer.ID != p {
		return linked, fmt.Errorf("%w: %s answered with another device's card", protocol.ErrBadPeer, who)
	}
	vc.Raw.Addrs, vc.Peer.Addrs = nil, nil
	return vc, nil
}

// handleTokenCard answers a token id of a pending invite or link code with
// this device's current card (without addresses). An unknown id gets the
// stream reset: no public-key work and nothing learnt.
func (s *Service) handleTokenCard(st network.Stream) {
	b, ok := s.requests.Read(st, "token card", 10*time.Second)
	if !ok {
		return
	}
	if len(b) != 16 {
		st.Reset()
		return
	}
	_, invite := s.GetPending(s.ctx, card.Invite, b)
	_, link := s.GetPending(s.ctx, card.DeviceLink, b)
	if !invite && !link {
		st.Reset()
		return
	}
	signed, err := s.chat.SignedPrekey()
	if err != nil {
		st.Reset()
		return
	}
	if !request.Answer(st, card.Card{Cert: s.chat.Self().Cert, Prekey: signed, Peer: []byte(s.host.ID())}) {
		s.log.Debug("token card not sent", "peer", st.Conn().RemotePeer().String())
	}
}
