package card

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/protocol"
)

// Token links (docs/people.md, docs/devices.md). Invites and device-link
// codes share one format: a prefix and the unpadded base64url of a
// canonical CBOR payload holding the issuer's card (certificate and peer
// id only: the prekey is fetched with the token's public id, which keeps a
// link short enough for a QR code read at arm's length), the display name,
// the expiry and a fresh token, under a MAC keyed from the token. A link
// altered in transit is refused by whoever reads it.

// LinkVersion is the payload version of token links: 2 leaves the prekey
// out of the link.
const LinkVersion = 2

// TokenLen is the length of a link's one-time token.
const TokenLen = 32

// maxLink caps a link's text before it is decoded.
const maxLink = 8 << 10

// Errors of token links; each failure of ParseLink wraps the kind's
// Invalid or Expired.
var (
	ErrInviteInvalid = errors.New("invite is not valid")
	ErrInviteExpired = errors.New("invite has expired")
	ErrLinkInvalid   = errors.New("link code is not valid")
	ErrLinkExpired   = errors.New("link code has expired")
)

// Kind describes one kind of token link: invites and device-link codes
// differ in prefix, MAC label and errors.
type Kind struct {
	Word     string // "invite" or "link": the path segment after the scheme
	Prefix   string // the canonical prefix (the web+ scheme a PWA handles)
	Alt      string // the prefix without web+
	MACLabel string
	Invalid  error
	Expired  error
}

// The two kinds of token links.
var (
	Invite = Kind{
		Word: "invite", Prefix: "web+glitr:invite/", Alt: "glitr:invite/", MACLabel: "invite-mac",
		Invalid: ErrInviteInvalid, Expired: ErrInviteExpired,
	}
	DeviceLink = Kind{
		Word: "link", Prefix: "web+glitr:link/", Alt: "glitr:link/", MACLabel: "link-mac",
		Invalid: ErrLinkInvalid, Expired: ErrLinkExpired,
	}
)

// Payload is the CBOR inside a link.
type Payload struct {
	V       uint8  `cbor:"1,keyasint"`
	Card    Card   `cbor:"2,keyasint"`
	Name    string `cbor:"3,keyasint"`
	Expires int64  `cbor:"4,keyasint"`
	Token   []byte `cbor:"5,keyasint"`
	MAC     []byte `cbor:"6,keyasint"`
}

// MACWith is the payload's MAC under a key derived from its token for label.
func (p *Payload) MACWith(label string) ([]byte, error) {
	unsigned := *p
	unsigned.MAC = nil
	b, err := enc.Marshal(unsigned)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, TokenKey(p.Token, label))
	m.Write(b)
	return m.Sum(nil), nil
}

// Encode returns the text of a link of kind k: p with its MAC set.
func (k Kind) Encode(p Payload) (string, error) {
	p.V = LinkVersion
	mac, err := p.MACWith(k.MACLabel)
	if err != nil {
		return "", err
	}
	p.MAC = mac
	b, err := enc.Marshal(p)
	if err != nil {
		return "", err
	}
	return k.Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenKey derives a key for label from a link's token.
func TokenKey(token []byte, label string) []byte {
	k, err := hkdf.Key(sha256.New, token, nil, protocol.Label(label), 32)
	if err != nil {
		panic(err) // only for lengths hkdf refuses
	}
	return k
}

// TokenID is a token's public id: what a request names the token by.
func TokenID(token []byte) []byte { return TokenKey(token, "invite-id")[:16] }

// ContactProof proves, in a contact request, that the requester read the
// invite: a MAC over the token id, its card and the pair secret it offers.
func ContactProof(token, tid []byte, c Card, secret []byte) ([]byte, error) {
	cb, err := enc.Marshal(c)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, TokenKey(token, "contact-proof"))
	m.Write(tid)
	m.Write(cb)
	m.Write(secret)
	return m.Sum(nil), nil
}

// LinkProof proves, in a device-link request, that the new device read the
// link code: a MAC over the token id, its signed prekey and its peer id.
func LinkProof(token, tid, prekey, peerID []byte) []byte {
	m := hmac.New(sha256.New, TokenKey(token, "link-proof"))
	m.Write(tid)
	m.Write(prekey)
	m.Write(peerID)
	return m.Sum(nil)
}

// Parsed is a link that decoded and verified.
type Parsed struct {
	Card    Verified
	Name    string
	Expires time.Time
	Token   []byte
}

// Parse decodes and checks a link of kind k: format, MAC, the card's
// signatures and the expiry (k.Expired; other failures wrap k.Invalid).
func (k Kind) Parse(link string, now time.Time) (Parsed, error) {
	var pi Parsed
	link = strings.TrimSpace(link)
	marker := k.Word + "/"
	if i := strings.Index(link, marker); i >= 0 && !strings.HasPrefix(link, k.Prefix) && !strings.HasPrefix(link, k.Alt) {
		// A deep link that went through a browser may be percent-encoded
		// or wrapped (…/#invite/…); take the part after "invite/".
		link = k.Alt + link[i+len(marker):]
	}
	raw, ok := strings.CutPrefix(link, k.Prefix)
	if !ok {
		if raw, ok = strings.CutPrefix(link, k.Alt); !ok {
			article := "a"
			if k.Word[0] == 'i' {
				article = "an"
			}
			return pi, fmt.Errorf("%w: not %s %s link", k.Invalid, article, k.Word)
		}
	}
	if len(raw) > maxLink {
		return pi, fmt.Errorf("%w: too long", k.Invalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return pi, fmt.Errorf("%w: %w", k.Invalid, err)
	}
	var p Payload
	if err := Dec.Unmarshal(b, &p); err != nil {
		return pi, fmt.Errorf("%w: %w", k.Invalid, err)
	}
	if p.V != LinkVersion || len(p.Token) != TokenLen || len(p.MAC) != sha256.Size || len(p.Card.Prekey) != 0 || len(p.Card.Addrs) != 0 {
		return pi, fmt.Errorf("%w: malformed", k.Invalid)
	}
	want, err := p.MACWith(k.MACLabel)
	if err != nil {
		return pi, fmt.Errorf("%w: %w", k.Invalid, err)
	}
	if !hmac.Equal(want, p.MAC) {
		return pi, fmt.Errorf("%w: the link was altered", k.Invalid)
	}
	if pi.Card, err = VerifyIdentity(p.Card, now); err != nil {
		return pi, fmt.Errorf("%w: %w", k.Invalid, err)
	}
	if err := CheckName(p.Name); err != nil {
		return pi, fmt.Errorf("%w: %w", k.Invalid, err)
	}
	pi.Name, pi.Expires, pi.Token = p.Name, time.Unix(p.Expires, 0), p.Token
	if !now.Before(pi.Expires) {
		return pi, fmt.Errorf("%w (%s)", k.Expired, pi.Expires.UTC().Format(time.RFC3339))
	}
	return pi, nil
}

// CheckName accepts a display name or title: valid UTF-8, no control
// characters, at most crdt.MaxTitleLen bytes.
func CheckName(s string) error {
	switch {
	case len(s) > crdt.MaxTitleLen:
		return fmt.Errorf("name is %d bytes, at most %d", len(s), crdt.MaxTitleLen)
	case !utf8.ValidString(s):
		return errors.New("name is not valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		return errors.New("name contains control characters")
	}
	return nil
}
