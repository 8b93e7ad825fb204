package keyring

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func boxFixture(t testing.TB) (*DeviceKey, *PrekeyRing, SignedPrekey) {
	t.Helper()
	dev, err := NewDeviceKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := NewPrekey(rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := dev.SignPrekey(pk)
	if err != nil {
		t.Fatal(err)
	}
	spk, err := VerifyPrekey(signed)
	if err != nil {
		t.Fatal(err)
	}
	return dev, NewPrekeyRing(pk), spk
}

func TestBoxRoundTripAndBindings(t *testing.T) {
	dev, ring, spk := boxFixture(t)
	msg := []byte("contact request")
	box, err := SealBox(spk, "contact-request", []byte("token-1"), msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ring.OpenBox(dev.ID(), "contact-request", []byte("token-1"), box)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("OpenBox = %q, %v", got, err)
	}
	other, _, _ := boxFixture(t)
	_, otherRing, _ := boxFixture(t)
	for name, open := range map[string]func() ([]byte, error){
		"other purpose":   func() ([]byte, error) { return ring.OpenBox(dev.ID(), "other", []byte("token-1"), box) },
		"other context":   func() ([]byte, error) { return ring.OpenBox(dev.ID(), "contact-request", []byte("token-2"), box) },
		"other recipient": func() ([]byte, error) { return ring.OpenBox(other.ID(), "contact-request", []byte("token-1"), box) },
		"other ring":      func() ([]byte, error) { return otherRing.OpenBox(dev.ID(), "contact-request", []byte("token-1"), box) },
		"tampered": func() ([]byte, error) {
			bad := bytes.Clone(box)
			bad[len(bad)-1] ^= 1
			return ring.OpenBox(dev.ID(), "contact-request", []byte("token-1"), bad)
		},
		"truncated": func() ([]byte, error) { return ring.OpenBox(dev.ID(), "contact-request", []byte("token-1"), box[:40]) },
		"empty":     func() ([]byte, error) { return ring.OpenBox(dev.ID(), "contact-request", []byte("token-1"), nil) },
	} {
		if _, err := open(); !errors.Is(err, ErrBox) {
			t.Errorf("%s: err = %v, want ErrBox", name, err)
		}
	}
	if _, err := SealBox(spk, "p", nil, make([]byte, MaxBoxPlaintext+1)); err == nil {
		t.Error("oversized plaintext sealed")
	}
}

func FuzzOpenBox(f *testing.F) {
	dev, ring, spk := boxFixture(f)
	box, _ := SealBox(spk, "p", nil, []byte("x"))
	f.Add(box)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ring.OpenBox(dev.ID(), "p", nil, b)
	})
}

// Adopt moves an advanced copy's state into the original, in place.
func TestCipherAdopt(t *testing.T) {
	ms := newMembers(t, 2)
	rotate(t, 100, ms[0], ms)
	env := seal(t, ms[0], []byte("m"))
	state, err := ms[1].cipher.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	scratch, err := UnmarshalCipher(state, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := scratch.OpenBlock(env.epoch, env.nonce, env.ct); err != nil {
		t.Fatal(err)
	}
	orig := ms[1].cipher
	if err := orig.Adopt(scratch); err != nil {
		t.Fatal(err)
	}
	// The key the copy spent is spent in the original too.
	if _, _, err := orig.OpenBlock(env.epoch, env.nonce, env.ct); !errors.Is(err, ErrReplay) {
		t.Fatalf("open after adopting = %v, want ErrReplay", err)
	}
	other, _ := NewCipher([]byte("another conversation"), ms[1].dev.ID(), rand.Reader)
	if err := orig.Adopt(other); !errors.Is(err, ErrMalformed) {
		t.Fatalf("adopting another conversation's state = %v, want ErrMalformed", err)
	}
}
