package card

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
)

// Fuzz targets for cards (pasted, and swapped over /glitr/card/1.0.0),
// invite links and device-link codes: bytes other people send. None may
// panic; whatever decodes must verify, and re-encode to something that
// decodes the same.

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
	c := fuzzCard(f)
	raw, err := enc.Marshal(c)
	if err != nil {
		f.Fatal(err)
	}
	seed := Prefix + base64.RawURLEncoding.EncodeToString(raw)
	if _, err := Parse(seed, fuzzNow); err != nil {
		f.Fatalf("the seed card does not parse: %v", err)
	}
	f.Add(seed)
	f.Add(Prefix)
	f.Add(Prefix + "oA")
	f.Fuzz(func(t *testing.T, s string) {
		vc, err := Parse(s, fuzzNow)
		if err != nil {
			if !errors.Is(err, ErrBadCard) {
				t.Fatalf("error does not wrap ErrBadCard: %v", err)
			}
			return
		}
		if vc.Prekey.Device != vc.Cert.Device {
			t.Fatal("a card whose prekey belongs to another device was accepted")
		}
		again, err := enc.Marshal(vc.Raw)
		if err != nil {
			t.Fatal(err)
		}
		vc2, err := Parse(Prefix+base64.RawURLEncoding.EncodeToString(again), fuzzNow)
		if err != nil || vc2.Cert.Device != vc.Cert.Device || vc2.Prekey.ID != vc.Prekey.ID || vc2.Peer.ID != vc.Peer.ID {
			t.Fatalf("a parsed card does not parse again the same: %v", err)
		}
	})
}

func FuzzParseTokenLink(f *testing.F) {
	c := fuzzCard(f)
	c.Prekey, c.Addrs = nil, nil // links carry neither
	p := Payload{Card: c, Name: "Ada", Expires: fuzzNow.Add(time.Hour).Unix(), Token: bytes.Repeat([]byte{7}, TokenLen)}
	for _, kind := range []Kind{Invite, DeviceLink} {
		seed, err := kind.Encode(p)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := kind.Parse(seed, fuzzNow); err != nil {
			f.Fatalf("the seed %s does not parse: %v", kind.Word, err)
		}
		f.Add(seed)
		f.Add("https://example.invalid/#" + kind.Word + "/" + seed[len(kind.Prefix):])
	}
	f.Add(Invite.Prefix)
	f.Fuzz(func(t *testing.T, s string) {
		for _, kind := range []Kind{Invite, DeviceLink} {
			pi, err := kind.Parse(s, fuzzNow)
			if err != nil {
				if !errors.Is(err, kind.Invalid) && !errors.Is(err, kind.Expired) {
					t.Fatalf("error wraps neither of the %s errors: %v", kind.Word, err)
				}
				continue
			}
			if len(pi.Token) != TokenLen || pi.Expires.Before(fuzzNow) {
				t.Fatalf("accepted a link with token length %d expiring %v", len(pi.Token), pi.Expires)
			}
		}
	})
}
