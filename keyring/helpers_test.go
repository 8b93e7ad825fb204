package keyring

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// detRand is a deterministic randomness source for reproducible tests.
func detRand(seed uint64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var testConv = []byte("conversation-0001")

// member is one test device with its keys and its cipher for testConv.
type member struct {
	dev     *DeviceKey
	prekeys *PrekeyRing
	signed  SignedPrekey
	cipher  *Cipher
}

func newMember(t testing.TB, seed uint64) *member {
	t.Helper()
	r := detRand(seed)
	dev, err := NewDeviceKey(r)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := NewPrekey(r, t0)
	if err != nil {
		t.Fatal(err)
	}
	ann, err := dev.SignPrekey(pk)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := VerifyPrekey(ann)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCipher(testConv, dev.ID(), detRand(seed+1000))
	if err != nil {
		t.Fatal(err)
	}
	return &member{dev: dev, prekeys: NewPrekeyRing(pk), signed: sp, cipher: c}
}

func newMembers(t testing.TB, n int) []*member {
	ms := make([]*member, n)
	for i := range ms {
		ms[i] = newMember(t, uint64(i+1))
	}
	return ms
}

// rotate has ms[0]'s rotator create an epoch for ms, every member open and
// install it, and everyone switch their sending epoch to it.
func rotate(t testing.TB, seed uint64, rotator *member, ms []*member, prev ...EpochID) EpochID {
	t.Helper()
	var recips []SignedPrekey
	for _, m := range ms {
		recips = append(recips, m.signed)
	}
	parts, ep, err := NewRotation(detRand(seed), rotator.dev, RotationParams{Conversation: testConv, Prev: prev, Recipients: recips, Created: t0})
	if err != nil {
		t.Fatal(err)
	}
	id := ep.ID
	if err := rotator.cipher.Install(ep); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m == rotator {
			continue
		}
		e := openFromParts(t, parts, m)
		if err := m.cipher.Install(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		if err := m.cipher.SetSendingEpoch(id); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func openFromParts(t testing.TB, parts [][]byte, m *member) *Epoch {
	t.Helper()
	for _, p := range parts {
		r, err := VerifyRotation(p)
		if err != nil {
			t.Fatal(err)
		}
		if !r.HasBoxFor(m.dev.ID()) {
			continue
		}
		e, err := OpenEpoch(r, m.dev.ID(), m.prekeys)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	t.Fatalf("no box for %s", m.dev.ID())
	return nil
}

type envelope struct{ epoch, nonce, ct []byte }

func seal(t testing.TB, m *member, inner []byte) envelope {
	t.Helper()
	e, n, c, err := m.cipher.SealBlock(inner)
	if err != nil {
		t.Fatal(err)
	}
	return envelope{e, n, c}
}

func (e envelope) clone() envelope {
	return envelope{bytes.Clone(e.epoch), bytes.Clone(e.nonce), bytes.Clone(e.ct)}
}

// pad is the reference ISO/IEC 7816-4 padding (0x80 then zeros up to
// padLen); SealBlock pads in place.
func pad(inner []byte) []byte {
	out := make([]byte, padLen(len(inner)+1))
	copy(out, inner)
	out[len(inner)] = 0x80
	return out
}
