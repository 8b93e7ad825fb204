package protocol

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

var testNow = time.Unix(1_800_000_000, 0)

func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

func TestRendezvousValidate(t *testing.T) {
	v := RendezvousValidator{Now: func() time.Time { return testNow }}
	priv := testKey(1)
	key, rec, err := SignRendezvous(priv, 7, testNow.Add(time.Hour), []byte("sealed addrs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(key, rec); err != nil {
		t.Fatalf("valid record rejected: %v", err)
	}

	otherKey, _, _ := SignRendezvous(testKey(2), 1, testNow.Add(time.Hour), nil)
	_, expired, _ := SignRendezvous(priv, 8, testNow.Add(-time.Second), nil)
	_, tooLong, _ := SignRendezvous(priv, 8, testNow.Add(MaxRendezvousTTL+time.Minute), nil)
	forged := append([]byte(nil), rec...)
	forged[len(forged)-1] ^= 1 // last byte is inside the signature
	tampered := append([]byte(nil), rec...)
	for i := range tampered { // flip a payload byte
		if string(tampered[i:i+6]) == "sealed" {
			tampered[i] ^= 0x20
			break
		}
	}

	cases := []struct {
		name string
		key  string
		val  []byte
		want error
	}{
		{"forged signature", key, forged, ErrRecordSignature},
		{"tampered payload", key, tampered, ErrRecordSignature},
		{"stored under someone else's key", otherKey, rec, ErrRecordKey},
		{"expired", key, expired, ErrRecordExpired},
		{"expiry too far ahead", key, tooLong, ErrRecordTTL},
		{"garbage", key, []byte{0xff, 0x00}, ErrRecordMalformed},
		{"wrong namespace", "/ipns/abc", rec, ErrRecordMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := v.Validate(c.key, c.val)
			if !errors.Is(err, c.want) {
				t.Fatalf("Validate = %v, want %v", err, c.want)
			}
		})
	}
}

func TestRendezvousSelectPrefersNewestSequence(t *testing.T) {
	v := RendezvousValidator{Now: func() time.Time { return testNow }}
	priv := testKey(3)
	key, old, _ := SignRendezvous(priv, 1, testNow.Add(2*time.Hour), []byte("old"))
	_, cur, _ := SignRendezvous(priv, 2, testNow.Add(time.Hour), []byte("new"))
	_, bad, _ := SignRendezvous(testKey(4), 99, testNow.Add(time.Hour), []byte("forged"))
	i, err := v.Select(key, [][]byte{old, bad, cur})
	if err != nil || i != 2 {
		t.Fatalf("Select = %d, %v; want 2 (the highest valid sequence)", i, err)
	}
	// Order of candidates must not matter.
	i, err = v.Select(key, [][]byte{cur, old})
	if err != nil || i != 0 {
		t.Fatalf("Select = %d, %v; want 0", i, err)
	}
	if _, err := v.Select(key, [][]byte{bad}); err == nil {
		t.Fatal("Select accepted only invalid records")
	}
}

func TestDecodeRendezvousRejectsNonCanonical(t *testing.T) {
	_, rec, _ := SignRendezvous(testKey(5), 1, testNow, nil)
	// Re-encode the sequence number 1 with a needless 1-byte argument (0x18 0x01).
	for i := 0; i+1 < len(rec); i++ {
		if rec[i] == 0x01 && rec[i+1] == 0x01 { // key 1, value 1
			bad := append(append(append([]byte(nil), rec[:i+1]...), 0x18, 0x01), rec[i+2:]...)
			if _, err := DecodeRendezvous(bad); !errors.Is(err, ErrRecordMalformed) {
				t.Fatalf("non-canonical record accepted: %v", err)
			}
			return
		}
	}
	t.Fatal("test setup: sequence field not found")
}

func FuzzDecodeRendezvous(f *testing.F) {
	_, rec, _ := SignRendezvous(testKey(6), 3, testNow, []byte("x"))
	f.Add(rec)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		v := RendezvousValidator{Now: func() time.Time { return testNow }}
		r, err := DecodeRendezvous(b)
		if err != nil {
			return
		}
		_ = v.Validate(RendezvousKey(r.PubKey), b)
	})
}

func TestLabel(t *testing.T) {
	if got := Label("block"); got != "glitr/v1/block" {
		t.Fatalf("Label = %q", got)
	}
}

// A record signed by someone else but carrying the victim's public key
// (so it names the victim's DHT key) fails the signature check.
func TestRendezvousValidateForgedBySomeoneElse(t *testing.T) {
	v := RendezvousValidator{Now: func() time.Time { return testNow }}
	victim, attacker := testKey(7), testKey(8)
	key, rec, err := SignRendezvous(victim, 1, testNow.Add(time.Hour), []byte("victim"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeRendezvous(rec)
	if err != nil {
		t.Fatal(err)
	}
	r.Seq, r.Payload = 99, []byte("attacker's addresses")
	msg, err := r.SigningBytes(key)
	if err != nil {
		t.Fatal(err)
	}
	r.Sig = ed25519.Sign(attacker, msg)
	forged, err := recEnc.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(key, forged); !errors.Is(err, ErrRecordSignature) {
		t.Fatalf("Validate = %v, want ErrRecordSignature", err)
	}
	// Nor does it win against the genuine record, whatever its sequence.
	if i, err := v.Select(key, [][]byte{forged, rec}); err != nil || i != 1 {
		t.Fatalf("Select = %d, %v; want 1 (the genuine record)", i, err)
	}
}

// A DHT server replaces its record only when Select prefers the incoming
// one (kad-dht calls Select(key, [incoming, stored])): a stale sequence
// number loses even with a later expiry, so an old record replayed by
// anyone cannot roll the addresses back.
func TestRendezvousStaleSequenceRejected(t *testing.T) {
	v := RendezvousValidator{Now: func() time.Time { return testNow }}
	priv := testKey(9)
	key, stored, _ := SignRendezvous(priv, 100, testNow.Add(time.Hour), []byte("current"))
	_, stale, _ := SignRendezvous(priv, 99, testNow.Add(40*time.Hour), []byte("replayed"))
	_, sameSeq, _ := SignRendezvous(priv, 100, testNow.Add(30*time.Minute), []byte("same seq, earlier expiry"))
	_, newer, _ := SignRendezvous(priv, 101, testNow.Add(time.Minute), []byte("moved"))
	cases := []struct {
		name     string
		incoming []byte
		want     int // 0: incoming replaces the stored record, 1: rejected
	}{
		{"stale sequence, later expiry", stale, 1},
		{"same sequence, earlier expiry", sameSeq, 1},
		{"newer sequence, earlier expiry", newer, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := v.Validate(key, c.incoming); err != nil {
				t.Fatalf("test setup: incoming record invalid: %v", err)
			}
			if i, err := v.Select(key, [][]byte{c.incoming, stored}); err != nil || i != c.want {
				t.Fatalf("Select = %d, %v; want %d", i, err, c.want)
			}
		})
	}
}

// Expiry is checked at validation time: a record accepted while valid is
// rejected from its expiry second on, and an expired record with a higher
// sequence number never displaces a live one.
func TestRendezvousExpiryOverTime(t *testing.T) {
	now := testNow
	v := RendezvousValidator{Now: func() time.Time { return now }}
	priv := testKey(10)
	key, rec, _ := SignRendezvous(priv, 1, testNow.Add(time.Hour), nil)
	if err := v.Validate(key, rec); err != nil {
		t.Fatalf("fresh record rejected: %v", err)
	}
	now = testNow.Add(time.Hour - time.Second)
	if err := v.Validate(key, rec); err != nil {
		t.Fatalf("record rejected a second before expiry: %v", err)
	}
	now = testNow.Add(time.Hour)
	if err := v.Validate(key, rec); !errors.Is(err, ErrRecordExpired) {
		t.Fatalf("Validate at expiry = %v, want ErrRecordExpired", err)
	}
	now = testNow
	_, expired, _ := SignRendezvous(priv, 5, testNow.Add(-time.Minute), nil)
	if i, err := v.Select(key, [][]byte{expired, rec}); err != nil || i != 1 {
		t.Fatalf("Select = %d, %v; want 1 (the live record)", i, err)
	}
}
