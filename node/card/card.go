// Package card is what two people's devices exchange out of band: contact
// cards (a certified device, its signed prekey and where to reach it) and
// one-time token links (invites and device-link codes: a card without
// prekey or addresses, a display name, an expiry and a 32-byte token, all
// bound by a MAC keyed from the token). It parses and verifies them and
// derives the token's keys and proofs; it does no I/O and keeps no state,
// so the people and devices services share it and fuzz tests reach it
// directly.
package card

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

// Card is what a contact needs to start a conversation with this device:
// who it is (account and certified device), how to seal an epoch to it (a
// signed prekey) and where to reach it.
type Card struct {
	Cert   []byte   `cbor:"1,keyasint"`
	Prekey []byte   `cbor:"2,keyasint"`
	Peer   []byte   `cbor:"3,keyasint"`
	Addrs  []string `cbor:"4,keyasint"`
}

// Prefix starts the text form of a card.
const Prefix = "glitr-card:"

// maxText caps a card's text form before it is decoded.
const maxText = 16 << 10

// ErrBadCard marks a card that does not decode or verify.
var ErrBadCard = errors.New("invalid contact card")

// Verified is a card whose signatures checked out. Raw is the card as it
// was received (what is stored and passed on).
type Verified struct {
	Cert   keyring.Certificate
	Prekey keyring.SignedPrekey
	Peer   peer.AddrInfo
	Raw    Card
}

// Dec decodes cards and the other small messages peers send.
var Dec = protocol.SmallDec

// enc is canonical CBOR: a card encodes to the same bytes on every device,
// which the MACs and proofs below rely on.
var enc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// Text returns the text form of a card: Prefix and the card's canonical
// CBOR in unpadded base64url.
func Text(c Card) (string, error) {
	b, err := enc.Marshal(c)
	if err != nil {
		return "", err
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Of builds the card of a device: its certificate, its current prekey
// signed, and the peer's addresses.
func Of(cert, signedPrekey []byte, p peer.AddrInfo) Card {
	c := Card{Cert: cert, Prekey: signedPrekey, Peer: []byte(p.ID)}
	for _, a := range p.Addrs {
		c.Addrs = append(c.Addrs, a.String())
	}
	return c
}

// Parse decodes and verifies a card's text form. A zero now skips the
// validity-period checks (for cards already accepted and stored).
func Parse(s string, now time.Time) (Verified, error) {
	var vc Verified
	raw, ok := strings.CutPrefix(strings.TrimSpace(s), Prefix)
	if !ok {
		return vc, fmt.Errorf("%w: does not start with %q", ErrBadCard, Prefix)
	}
	if len(raw) > maxText {
		return vc, fmt.Errorf("%w: too long", ErrBadCard)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return vc, fmt.Errorf("%w: %w", ErrBadCard, err)
	}
	var c Card
	if err := Dec.Unmarshal(b, &c); err != nil {
		return vc, fmt.Errorf("%w: %w", ErrBadCard, err)
	}
	return Verify(c, now)
}

// Verify checks a card's certificate, prekey, peer id and addresses (the
// validity periods at now, unless now is zero).
func Verify(c Card, now time.Time) (Verified, error) {
	vc, err := VerifyIdentity(c, now)
	if err != nil {
		return vc, err
	}
	if vc.Prekey, err = keyring.VerifyPrekey(c.Prekey); err != nil {
		return vc, fmt.Errorf("%w: prekey: %w", ErrBadCard, err)
	}
	if vc.Prekey.Device != vc.Cert.Device {
		return vc, fmt.Errorf("%w: prekey belongs to another device", ErrBadCard)
	}
	if err := vc.Prekey.ValidAt(now); err != nil && !now.IsZero() {
		return vc, fmt.Errorf("%w: prekey: %w", ErrBadCard, err)
	}
	return vc, nil
}

// VerifyIdentity checks a card's certificate (at now, unless zero), peer
// id and addresses, not its prekey: who the card speaks for.
func VerifyIdentity(c Card, now time.Time) (Verified, error) {
	vc := Verified{Raw: c}
	var err error
	if vc.Cert, err = keyring.VerifyCertificate(c.Cert); err != nil {
		return vc, fmt.Errorf("%w: certificate: %w", ErrBadCard, err)
	}
	if err := vc.Cert.ValidAt(now); err != nil && !now.IsZero() {
		return vc, fmt.Errorf("%w: certificate: %w", ErrBadCard, err)
	}
	if vc.Peer.ID, err = peer.IDFromBytes(c.Peer); err != nil {
		return vc, fmt.Errorf("%w: peer id: %w", ErrBadCard, err)
	}
	for _, s := range c.Addrs {
		ai, err := peer.AddrInfoFromString(s + "/p2p/" + vc.Peer.ID.String())
		if err != nil {
			return vc, fmt.Errorf("%w: address %q: %w", ErrBadCard, s, err)
		}
		vc.Peer.Addrs = append(vc.Peer.Addrs, ai.Addrs...)
	}
	return vc, nil
}
