package keyring

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestDeviceKeySignerContract(t *testing.T) {
	dev, err := DeviceKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	// The dag package's Signer interface.
	var s interface {
		Public() ed25519.PublicKey
		Sign(msg []byte) ([]byte, error)
	} = dev
	msg := []byte("inner block bytes")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyBlockSignature(s.Public(), msg, sig); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	if !ed25519.Verify(s.Public(), append(BlockSignaturePrefix(), msg...), sig) {
		t.Fatal("signature is not over the documented prefix")
	}
	if ed25519.Verify(s.Public(), msg, sig) {
		t.Fatal("signature verifies without the domain prefix")
	}
	if err := VerifyBlockSignature(s.Public()[:31], msg, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("short key: %v", err)
	}
	if _, err := DeviceKeyFromSeed(make([]byte, 31)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short seed: %v", err)
	}
}

func TestCertificate(t *testing.T) {
	acct, _ := NewAccountKey(detRand(1))
	other, _ := NewAccountKey(detRand(2))
	dev, _ := NewDeviceKey(detRand(3))
	exp := t0.Add(365 * 24 * time.Hour)
	raw, err := acct.Certify(dev.ID(), "laptop", t0, exp)
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	if c.Account != acct.ID() || c.Device != dev.ID() || c.Name != "laptop" || !c.Created.Equal(t0) || !c.Expires.Equal(exp) {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.ValidAt(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidAt(exp); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}

	// A forgery: another account signs a body naming acct.
	var body certBody
	if _, _, err := openSigned(raw, maxCertificateLen, &body); err != nil {
		t.Fatal(err)
	}
	forged, _ := sealSigned(other.priv, labelCertificate, body)
	// A signature by the right key under another label (a revocation).
	crossLabel, _ := sealSigned(acct.priv, labelRevocation, body)

	flip := bytes.Clone(raw)
	flip[len(flip)-1] ^= 1
	long := make([]byte, maxCertificateLen+1)
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"forged by other account", forged, ErrBadSignature},
		{"signed under another label", crossLabel, ErrBadSignature},
		{"flipped signature bit", flip, ErrBadSignature},
		{"truncated", raw[:len(raw)-3], ErrMalformed},
		{"trailing byte", append(bytes.Clone(raw), 0), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"oversized", long, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyCertificate(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := acct.Certify(dev.ID(), string(bytes.Repeat([]byte{'x'}, MaxDeviceNameLen+1)), t0, time.Time{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("long name: %v", err)
	}
	if _, err := acct.Certify(dev.ID(), "x", t0, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("expiry at creation: %v", err)
	}
	noexp, _ := acct.Certify(dev.ID(), "phone", t0, time.Time{})
	c2, err := VerifyCertificate(noexp)
	if err != nil || !c2.Expires.IsZero() || c2.ValidAt(t0.Add(100*365*24*time.Hour)) != nil {
		t.Fatalf("no-expiry cert: %+v %v", c2, err)
	}
}

func TestRevocation(t *testing.T) {
	acct, _ := NewAccountKey(detRand(1))
	other, _ := NewAccountKey(detRand(2))
	dev, _ := NewDeviceKey(detRand(3))
	dev2, _ := NewDeviceKey(detRand(4))
	cutoff := t0.Add(time.Hour)
	raw, err := acct.Revoke(dev.ID(), 41, cutoff, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r, err := VerifyRevocation(raw)
	if err != nil {
		t.Fatal(err)
	}
	if r.Account != acct.ID() || r.Device != dev.ID() || r.LastSeq != 41 || !r.Cutoff.Equal(cutoff) {
		t.Fatalf("decoded %+v", r)
	}
	for _, tc := range []struct {
		dev  DeviceID
		seq  uint64
		ts   time.Time
		want error
	}{
		{dev.ID(), 41, cutoff, nil},
		{dev.ID(), 1, t0, nil},
		{dev.ID(), 42, t0, ErrRevoked},
		{dev.ID(), 3, cutoff.Add(time.Second), ErrRevoked},
		{dev2.ID(), 1000, cutoff.Add(time.Hour), nil},
	} {
		if err := r.Accepts(tc.dev, tc.seq, tc.ts); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("Accepts(%d, %v) = %v, want %v", tc.seq, tc.ts, err, tc.want)
		}
	}
	var body revocationBody
	openSigned(raw, maxRevocationLen, &body)
	forged, _ := sealSigned(other.priv, labelRevocation, body)
	if _, err := VerifyRevocation(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged revocation: %v", err)
	}
	crossLabel, _ := sealSigned(acct.priv, labelCertificate, body)
	if _, err := VerifyRevocation(crossLabel); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("cross-label revocation: %v", err)
	}
}

func TestPrekeyAnnouncementAndRing(t *testing.T) {
	r := detRand(9)
	dev, _ := NewDeviceKey(r)
	pk, err := NewPrekey(r, t0)
	if err != nil {
		t.Fatal(err)
	}
	ann, _ := dev.SignPrekey(pk)
	sp, err := VerifyPrekey(ann)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Device != dev.ID() || sp.ID != pk.ID() || !bytes.Equal(sp.Public.Bytes(), pk.PublicBytes()) {
		t.Fatal("announcement does not match prekey")
	}
	if err := sp.ValidAt(t0.Add(PrekeyRotationPeriod + PrekeyGracePeriod)); !errors.Is(err, ErrExpired) {
		t.Fatalf("after validity: %v", err)
	}
	other, _ := NewDeviceKey(r)
	var body prekeyBody
	openSigned(ann, maxSignedPrekeyLen, &body)
	forged, _ := sealSigned(other.priv, labelPrekey, body)
	if _, err := VerifyPrekey(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged prekey: %v", err)
	}

	ring := NewPrekeyRing(pk)
	if ring.NeedsRotation(t0.Add(PrekeyRotationPeriod - time.Second)) {
		t.Fatal("rotation due too early")
	}
	now := t0.Add(PrekeyRotationPeriod)
	if !ring.NeedsRotation(now) {
		t.Fatal("rotation not due after a week")
	}
	second, err := ring.Rotate(r, now)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Current() != second || ring.Len() != 2 {
		t.Fatalf("after rotation: len %d", ring.Len())
	}
	if _, ok := ring.Lookup(pk.ID()); !ok {
		t.Fatal("previous prekey dropped inside its grace period")
	}
	ring.Prune(now.Add(PrekeyGracePeriod))
	if _, ok := ring.Lookup(pk.ID()); ok || ring.Len() != 1 {
		t.Fatal("previous prekey kept after its grace period")
	}
	for i := range 20 {
		if _, err := ring.Rotate(r, now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if ring.Len() > maxPrekeys {
		t.Fatalf("ring holds %d prekeys", ring.Len())
	}
}
