package node

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/alloccheck"
	"github.com/glitr-chat/glitr/keyring"
)

// Fuzz targets for the node's decoders of bytes other people send: contact
// cards (pasted, and swapped over /glitr/card/1.0.0), invite links and
// device-link codes, and history frames. None may panic; whatever decodes
// must verify, and re-encode to something that decodes the same.

var fuzzNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// fuzzCard is a valid card, as raw CBOR.
func fuzzCard(t testing.TB) Card {
	t.Helper()
	acct, err := keyring.NewAccountKey(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := keyring.NewDeviceKey(bytes.NewReader(bytes.Repeat([]byte{2}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := acct.Certify(dev.ID(), "fuzz", fuzzNow.Add(-time.Hour), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keyring.NewPrekey(bytes.NewReader(bytes.Repeat([]byte{3}, 64)), fuzzNow.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := dev.SignPrekey(pk)
	if err != nil {
		t.Fatal(err)
	}
	_, pub, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{4}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Card{Cert: cert, Prekey: signed, Peer: []byte(id), Addrs: []string{"/ip4/127.0.0.1/udp/4001/quic-v1"}}
}

func FuzzParseCard(f *testing.F) {
	card := fuzzCard(f)
	raw, err := canonicalEnc.Marshal(card)
	if err != nil {
		f.Fatal(err)
	}
	seed := CardPrefix + base64.RawURLEncoding.EncodeToString(raw)
	if _, err := ParseCard(seed, fuzzNow); err != nil {
		f.Fatalf("the seed card does not parse: %v", err)
	}
	f.Add(seed)
	f.Add(CardPrefix)
	f.Add(CardPrefix + "oA")
	f.Fuzz(func(t *testing.T, s string) {
		vc, err := ParseCard(s, fuzzNow)
		if err != nil {
			if !errors.Is(err, ErrBadCard) {
				t.Fatalf("error does not wrap ErrBadCard: %v", err)
			}
			return
		}
		if vc.Prekey.Device != vc.Cert.Device {
			t.Fatal("a card whose prekey belongs to another device was accepted")
		}
		again, err := canonicalEnc.Marshal(vc.raw)
		if err != nil {
			t.Fatal(err)
		}
		vc2, err := ParseCard(CardPrefix+base64.RawURLEncoding.EncodeToString(again), fuzzNow)
		if err != nil || vc2.Cert.Device != vc.Cert.Device || vc2.Prekey.ID != vc.Prekey.ID || vc2.Peer.ID != vc.Peer.ID {
			t.Fatalf("a parsed card does not parse again the same: %v", err)
		}
	})
}

func FuzzParseTokenLink(f *testing.F) {
	card := fuzzCard(f)
	card.Prekey, card.Addrs = nil, nil // links carry neither
	p := invitePayload{V: tokenLinkVersion, Card: card, Name: "Ada", Expires: fuzzNow.Add(time.Hour).Unix(), Token: bytes.Repeat([]byte{7}, inviteTokenLen)}
	for _, kind := range []tokenLinkKind{linkKind, {word: "invite", prefix: InviteLinkPrefix, alt: altInviteLinkPrefix, macLabel: "invite-mac"}} {
		q := p
		mac, err := q.macWith(kind.macLabel)
		if err != nil {
			f.Fatal(err)
		}
		q.MAC = mac
		b, err := canonicalEnc.Marshal(q)
		if err != nil {
			f.Fatal(err)
		}
		seed := kind.prefix + base64.RawURLEncoding.EncodeToString(b)
		if kind.word == "invite" {
			if _, err := ParseInvite(seed, fuzzNow); err != nil {
				f.Fatalf("the seed invite does not parse: %v", err)
			}
		} else if _, err := parseTokenLink(seed, fuzzNow, linkKind); err != nil {
			f.Fatalf("the seed link code does not parse: %v", err)
		}
		f.Add(seed)
		f.Add("https://example.invalid/#" + kind.word + "/" + base64.RawURLEncoding.EncodeToString(b))
	}
	f.Add(InviteLinkPrefix)
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string, time.Time) (ParsedInvite, error){
			ParseInvite,
			func(s string, now time.Time) (ParsedInvite, error) { return parseTokenLink(s, now, linkKind) },
		} {
			pi, err := parse(s, fuzzNow)
			if err != nil {
				if !errors.Is(err, ErrInviteInvalid) && !errors.Is(err, ErrInviteExpired) && !errors.Is(err, ErrLinkInvalid) && !errors.Is(err, ErrLinkExpired) {
					t.Fatalf("error wraps none of the link errors: %v", err)
				}
				continue
			}
			if len(pi.token) != inviteTokenLen || pi.Expires.Before(fuzzNow) {
				t.Fatalf("accepted a link with token length %d expiring %v", len(pi.token), pi.Expires)
			}
		}
	})
}

func FuzzReadHistoryFrame(f *testing.F) {
	var buf bytes.Buffer
	if err := writeHistoryFrame(&buf, historyFrame{Conversation: bytes.Repeat([]byte{1}, 16), Blocks: [][2][]byte{{[]byte("cid"), []byte("envelope")}}}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		alloccheck.Check(t, "readHistoryFrame", b, 16, func() { _, _ = readHistoryFrame(bufio.NewReader(bytes.NewReader(b))) })
		r := bufio.NewReader(bytes.NewReader(b))
		for range 4 {
			fr, err := readHistoryFrame(r)
			if err != nil {
				return
			}
			var out bytes.Buffer
			if err := writeHistoryFrame(&out, fr); err != nil {
				t.Fatal(err)
			}
			again, err := readHistoryFrame(bufio.NewReader(&out))
			if err != nil || !bytes.Equal(again.Conversation, fr.Conversation) || len(again.Blocks) != len(fr.Blocks) {
				t.Fatalf("a frame does not survive re-encoding: %v", err)
			}
		}
	})
}
