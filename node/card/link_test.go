package card

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func testPayload(t *testing.T) Payload {
	c := fuzzCard(t)
	c.Prekey, c.Addrs = nil, nil
	return Payload{Card: c, Name: "Ada", Expires: fuzzNow.Add(time.Hour).Unix(), Token: bytes.Repeat([]byte{9}, TokenLen)}
}

func TestLinkRoundTripAndRefusals(t *testing.T) {
	p := testPayload(t)
	invite, err := Invite.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	code, err := DeviceLink.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Invite.Parse(invite, fuzzNow)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Ada" || !bytes.Equal(got.Token, p.Token) || got.Expires.Unix() != p.Expires {
		t.Fatalf("parsed %+v", got)
	}
	if !bytes.Equal(TokenID(got.Token), TokenID(p.Token)) || len(TokenID(got.Token)) != 16 {
		t.Fatal("token id is not a 16-byte function of the token")
	}
	// A deep link that went through a browser: wrapped and escaped.
	wrapped := "https://example.invalid/app/#" + url.PathEscape(strings.TrimPrefix(invite, "web+glitr:"))
	if _, err := Invite.Parse(strings.ReplaceAll(wrapped, "%2F", "/"), fuzzNow); err != nil {
		t.Fatalf("a wrapped invite: %v", err)
	}
	raw := strings.TrimPrefix(invite, Invite.Prefix)
	flipped := raw[:40] + string(rune(raw[40]^1)) + raw[41:]
	for name, tc := range map[string]struct {
		kind Kind
		link string
		now  time.Time
		want error
	}{
		"altered":                 {Invite, Invite.Prefix + flipped, fuzzNow, ErrInviteInvalid},
		"expired":                 {Invite, invite, fuzzNow.Add(2 * time.Hour), ErrInviteExpired},
		"a link code as invite":   {Invite, Invite.Prefix + strings.TrimPrefix(code, DeviceLink.Prefix), fuzzNow, ErrInviteInvalid},
		"an invite as link code":  {DeviceLink, DeviceLink.Prefix + raw, fuzzNow, ErrLinkInvalid},
		"not a link":              {DeviceLink, "hello", fuzzNow, ErrLinkInvalid},
		"too long":                {Invite, Invite.Prefix + strings.Repeat("A", maxLink+1), fuzzNow, ErrInviteInvalid},
		"link code expired":       {DeviceLink, code, fuzzNow.Add(time.Hour), ErrLinkExpired},
		"an invite with a prekey": {Invite, mustEncode(t, Invite, withPrekey(p)), fuzzNow, ErrInviteInvalid},
	} {
		if _, err := tc.kind.Parse(tc.link, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func withPrekey(p Payload) Payload {
	p.Card.Prekey = []byte{1}
	return p
}

func mustEncode(t *testing.T, k Kind, p Payload) string {
	s, err := k.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestProofsBindTheirInputs(t *testing.T) {
	tok := bytes.Repeat([]byte{1}, TokenLen)
	tid := TokenID(tok)
	a := LinkProof(tok, tid, []byte("prekey"), []byte("peer"))
	if bytes.Equal(a, LinkProof(tok, tid, []byte("prekey"), []byte("peer2"))) ||
		bytes.Equal(a, LinkProof(bytes.Repeat([]byte{2}, TokenLen), tid, []byte("prekey"), []byte("peer"))) {
		t.Fatal("a link proof does not depend on the peer or the token")
	}
	c := fuzzCard(t)
	p1, err := ContactProof(tok, tid, c, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := ContactProof(tok, tid, c, []byte("other"))
	if bytes.Equal(p1, p2) {
		t.Fatal("a contact proof does not depend on the pair secret")
	}
}

func TestCheckName(t *testing.T) {
	for _, bad := range []string{strings.Repeat("x", 1000), "a\x00b", "\xff"} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
	if err := CheckName("Ada Lovelace 🧮"); err != nil {
		t.Fatal(err)
	}
}
