package mailbox

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"filippo.io/edwards25519"

	"github.com/glitr-chat/glitr/protocol"
)

func testOwner(seed byte) *OwnerKey {
	var s [SecretSize]byte
	for i := range s {
		s[i] = seed + byte(i)
	}
	return OwnerKeyFromSecret(s)
}

var testRelay = []byte("relay-peer-id")

// Frozen vector: a change to any label, derivation or encoding of the key
// schedule changes these, and would strand every deposit key handed out.
func TestKeyScheduleVector(t *testing.T) {
	o := testOwner(1)
	c, err := o.DepositKey().Capability(20000)
	if err != nil {
		t.Fatal(err)
	}
	d := o.Drain(20000)
	dk := o.DepositKey()
	got := map[string]string{
		"deposit secret": hex.EncodeToString(dk.Secret[:]),
		"drain base":     hex.EncodeToString(dk.DrainBase[:]),
		"deposit pub":    hex.EncodeToString(c.DepositPub[:]),
		"drain pub":      hex.EncodeToString(c.DrainPub[:]),
		"id":             hex.EncodeToString(c.ID[:]),
	}
	want := map[string]string{
		"deposit secret": "0a7d65c00d74b007b842f5dc4a5511c3ed3d4c66f37931d4bdf97d3c170308a1",
		"drain base":     "4115f5f1e31d5730b60d87649032d6ab1f4e4eb9a08e9f0ea7caaf5cf176066a",
		"deposit pub":    "53b1d65f7c44d19918ffaac38cae3db197bfa900341b27e4d041b1df96ba5eea",
		"drain pub":      "24dc32c29bc2bb87a90d8a7be89f85498b8c98e638568ce312cca191946dc148",
		"id":             "9c97c6f6ba5f1d314406eb75ea1186652ed97180f949f3fb4ba6cfa6c24381e4",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	if d.ID != c.ID || d.DrainPub != c.DrainPub {
		t.Fatal("the owner and a contact derive different mailboxes")
	}
}

// Determinism: the owner's devices and every contact derive the same
// mailbox for a period, from the secret alone.
func TestKeyScheduleDeterministic(t *testing.T) {
	a, b := testOwner(1), testOwner(1)
	for p := Period(19990); p < 20010; p++ {
		ca, _ := a.DepositKey().Capability(p)
		cb, _ := b.DepositKey().Capability(p)
		enc, _ := a.DepositKey().MarshalBinary()
		dk, err := ParseDepositKey(enc)
		if err != nil {
			t.Fatal(err)
		}
		cc, _ := dk.Capability(p)
		if ca.ID != cb.ID || ca.ID != cc.ID || ca.DrainPub != cc.DrainPub || ca.DepositPub != cc.DepositPub {
			t.Fatalf("period %d: derivations differ", p)
		}
		if d := b.Drain(p); d.ID != ca.ID || d.DrainPub != ca.DrainPub {
			t.Fatalf("period %d: owner's drain key names another mailbox", p)
		}
	}
}

// Unlinkability, as far as a test can show it: nothing the relay sees
// (id, deposit key, drain key) repeats across periods or owners, none of it
// is the drain base or the deposit secret, and the drain keys of two
// periods are not related by the blinding of a public value (h·B with B
// known would let the relay test a guess).
func TestKeyScheduleUnlinkable(t *testing.T) {
	seen := map[[32]byte]string{}
	note := func(v [32]byte, what string) {
		if prev, ok := seen[v]; ok {
			t.Fatalf("%s repeats %s", what, prev)
		}
		seen[v] = what
	}
	for _, o := range []*OwnerKey{testOwner(1), testOwner(2)} {
		dk := o.DepositKey()
		note(dk.Secret, "deposit secret")
		note(dk.DrainBase, "drain base")
		for p := Period(20000); p < 20040; p++ {
			c, _ := dk.Capability(p)
			note(c.ID, "id")
			note(c.DepositPub, "deposit pub")
			note(c.DrainPub, "drain pub")
		}
	}
	// Another owner with the same drain base but another deposit secret
	// (the blinding is keyed) yields unrelated drain keys.
	dk := testOwner(1).DepositKey()
	other := dk
	other.Secret[0] ^= 1
	c1, _ := dk.Capability(20000)
	c2, _ := other.Capability(20000)
	if c1.DrainPub == c2.DrainPub {
		t.Fatal("the blinding does not depend on the deposit secret")
	}
}

// The owner's blinded signature is a standard Ed25519 signature under the
// drain key a contact computes; a contact's keys cannot make one.
func TestDrainSignature(t *testing.T) {
	o := testOwner(1)
	now := time.Unix(1_700_000_000, 0)
	p := PeriodOf(now)
	d := o.Drain(p)
	req := d.DrainRequest(testRelay, now, 7)
	if err := VerifyDrain(testRelay, d.DrainPub[:], req); err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(d.DrainPub[:], DrainMessage(testRelay, d.ID[:], 7, now.UnixMilli()), req.Sig) {
		t.Fatal("not a standard Ed25519 signature")
	}
	// Same message, same signature (deterministic nonce), as RFC 8032.
	if again := d.DrainRequest(testRelay, now, 7); !bytes.Equal(again.Sig, req.Sig) {
		t.Fatal("signature is not deterministic")
	}
	for name, mut := range map[string]func(protocol.MailboxDrainReq) (protocol.MailboxDrainReq, []byte){
		"other cursor": func(r protocol.MailboxDrainReq) (protocol.MailboxDrainReq, []byte) { r.After++; return r, testRelay },
		"other time":   func(r protocol.MailboxDrainReq) (protocol.MailboxDrainReq, []byte) { r.Time++; return r, testRelay },
		"other relay":  func(r protocol.MailboxDrainReq) (protocol.MailboxDrainReq, []byte) { return r, []byte("other") },
	} {
		r, relay := mut(req)
		if err := VerifyDrain(relay, d.DrainPub[:], r); !errors.Is(err, ErrBadCapability) {
			t.Errorf("%s: %v", name, err)
		}
	}
	digests := []Digest{DigestOf([]byte("a")), DigestOf([]byte("b"))}
	ack := d.Ack(testRelay, now, digests)
	if got, err := VerifyAck(testRelay, d.DrainPub[:], ack); err != nil || len(got) != 2 || got[1] != digests[1] {
		t.Fatalf("ack: %v %v", got, err)
	}
	ack.Digests = ack.Digests[:1]
	if _, err := VerifyAck(testRelay, d.DrainPub[:], ack); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("ack with a digest removed: %v", err)
	}
}

// A contact holds the deposit key only: signing a drain or an ack with the
// period's deposit key, or with another owner's drain key, fails.
func TestContactCannotSignDrain(t *testing.T) {
	o := testOwner(1)
	now := time.Unix(1_700_000_000, 0)
	c, _ := o.DepositKey().Capability(PeriodOf(now))
	forged := protocol.MailboxDrainReq{ID: c.ID[:], Time: now.UnixMilli()}
	forged.Sig = ed25519.Sign(c.priv, DrainMessage(testRelay, c.ID[:], 0, forged.Time))
	if err := VerifyDrain(testRelay, c.DrainPub[:], forged); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("deposit key signed a drain: %v", err)
	}
	stranger := testOwner(9).Drain(PeriodOf(now))
	req := stranger.DrainRequest(testRelay, now, 0)
	req.ID = c.ID[:]
	forged.Sig = stranger.sign(DrainMessage(testRelay, c.ID[:], 0, req.Time))
	if err := VerifyDrain(testRelay, c.DrainPub[:], forged); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("another owner's drain key signed a drain: %v", err)
	}
}

func TestDepositCapability(t *testing.T) {
	o := testOwner(1)
	now := time.Unix(1_700_000_000, 0)
	c, _ := o.DepositKey().Capability(PeriodOf(now))
	envs := [][]byte{[]byte("one"), []byte("two")}
	ok := func() *protocol.MailboxDeposit { d := c.Deposit(testRelay, now, envs); return d }
	if _, err := VerifyDeposit(testRelay, ok()); err != nil {
		t.Fatal(err)
	}
	stranger, _ := testOwner(9).DepositKey().Capability(PeriodOf(now))
	for name, mod := range map[string]func(*protocol.MailboxDeposit) []byte{
		"tampered envelope": func(d *protocol.MailboxDeposit) []byte {
			d.Envelopes = [][]byte{[]byte("one"), []byte("tw0")}
			return testRelay
		},
		"envelope added": func(d *protocol.MailboxDeposit) []byte {
			d.Envelopes = append(d.Envelopes, []byte("x"))
			return testRelay
		},
		"other time":      func(d *protocol.MailboxDeposit) []byte { d.Time++; return testRelay },
		"other relay":     func(d *protocol.MailboxDeposit) []byte { return []byte("other") },
		"forged sig":      func(d *protocol.MailboxDeposit) []byte { d.Sig[5] ^= 1; return testRelay },
		"other period":    func(d *protocol.MailboxDeposit) []byte { d.Period++; return testRelay },
		"other drain key": func(d *protocol.MailboxDeposit) []byte { d.DrainKey = stranger.DrainPub[:]; return testRelay },
		// A stranger's own keys do not name the victim's mailbox...
		"stranger's keys": func(d *protocol.MailboxDeposit) []byte {
			s := stranger.Deposit(testRelay, now, envs)
			s.ID = d.ID
			*d = *s
			return testRelay
		},
		// ...and the victim's public keys are no use without the secret.
		"victim's keys, stranger's signature": func(d *protocol.MailboxDeposit) []byte {
			d.Sig = stranger.Deposit(testRelay, now, envs).Sig
			return testRelay
		},
	} {
		d := ok()
		relay := mod(d)
		if _, err := VerifyDeposit(relay, d); !errors.Is(err, ErrBadCapability) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseDepositKey(t *testing.T) {
	good, _ := testOwner(1).DepositKey().MarshalBinary()
	if k, err := ParseDepositKey(good); err != nil || k != testOwner(1).DepositKey() {
		t.Fatalf("round trip: %v", err)
	}
	identity := append(make([]byte, 32), append([]byte{1}, make([]byte, 31)...)...)
	notPoint := append(make([]byte, 32), make([]byte, 32)...)
	for y := byte(2); ; y++ { // the first y that is no point's coordinate
		notPoint[32] = y
		if _, err := edwards25519.NewIdentityPoint().SetBytes(notPoint[32:]); err != nil {
			break
		}
	}
	for name, b := range map[string][]byte{
		"short":         good[:63],
		"long":          append(good, 0),
		"not a point":   notPoint,
		"small order":   identity,
		"empty":         nil,
		"secret only":   good[:32],
		"doubled input": append(good, good...),
	} {
		if _, err := ParseDepositKey(b); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPeriods(t *testing.T) {
	at := time.Date(2026, 12, 7, 23, 59, 59, 0, time.UTC)
	p := PeriodOf(at)
	if PeriodOf(at.Add(time.Second)) != p+1 || !p.End().Equal(at.Add(time.Second)) || !p.Start().Equal(at.Add(-24*time.Hour+time.Second)) {
		t.Fatalf("period boundaries: %d %s %s", p, p.Start(), p.End())
	}
	if PeriodOf(time.Unix(-5, 0)) != 0 {
		t.Fatal("negative time")
	}
}

// FuzzParseDepositKey: no input panics, and what parses derives a
// capability.
func FuzzParseDepositKey(f *testing.F) {
	good, _ := testOwner(1).DepositKey().MarshalBinary()
	f.Add(good)
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseDepositKey(b)
		if err != nil {
			return
		}
		if _, err := k.Capability(1); err != nil {
			t.Fatalf("a parsed key does not derive: %v", err)
		}
	})
}
