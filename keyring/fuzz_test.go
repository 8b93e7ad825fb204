package keyring

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Every decoder of untrusted bytes has a fuzz target. Seeds are valid
// encodings plus a few truncations; the property is: no panic, and
// whatever is accepted re-encodes to the same bytes (the decoders are
// strict and canonical).

func addSeeds(f *testing.F, valid ...[]byte) {
	for _, v := range valid {
		f.Add(v)
		f.Add(v[:len(v)/2])
		if len(v) > 0 {
			mut := bytes.Clone(v)
			mut[len(mut)/3] ^= 0x40
			f.Add(mut)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x82, 0x40, 0x40})
}

func FuzzVerifyCertificate(f *testing.F) {
	acct, _ := NewAccountKey(detRand(1))
	dev, _ := NewDeviceKey(detRand(2))
	c1, _ := acct.Certify(dev.ID(), "phone", t0, time.Time{})
	c2, _ := acct.Certify(dev.ID(), "laptop", t0, t0.Add(time.Hour))
	addSeeds(f, c1, c2)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := VerifyCertificate(b)
		if err != nil {
			return
		}
		if c.Account != acct.ID() {
			// Only a forgery could verify under another key the fuzzer made up,
			// which Ed25519 rules out; a self-consistent random key is fine.
			return
		}
		if c.Device != dev.ID() {
			t.Fatalf("verified certificate with a device acct never certified")
		}
	})
}

func FuzzVerifyRevocation(f *testing.F) {
	acct, _ := NewAccountKey(detRand(1))
	dev, _ := NewDeviceKey(detRand(2))
	r, _ := acct.Revoke(dev.ID(), 9, t0, t0)
	addSeeds(f, r)
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := VerifyRevocation(b); err == nil && r.Account == acct.ID() && r.LastSeq != 9 {
			t.Fatal("verified a revocation acct never signed")
		}
	})
}

func FuzzVerifyPrekey(f *testing.F) {
	m := newMember(f, 1)
	ann, _ := m.dev.SignPrekey(m.prekeys.Current())
	addSeeds(f, ann)
	f.Fuzz(func(t *testing.T, b []byte) {
		VerifyPrekey(b)
	})
}

func FuzzVerifyRotation(f *testing.F) {
	ms := newMembers(f, 2)
	parts, _, err := NewRotation(detRand(3), ms[0].dev, RotationParams{Conversation: testConv, Recipients: []SignedPrekey{ms[0].signed, ms[1].signed}, Created: t0})
	if err != nil {
		f.Fatal(err)
	}
	addSeeds(f, parts...)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := VerifyRotation(b)
		if err != nil {
			return
		}
		// Whatever verifies must be safe to open.
		OpenEpoch(r, ms[1].dev.ID(), ms[1].prekeys)
	})
}

func FuzzOpenBlock(f *testing.F) {
	ms := newMembers(f, 2)
	rotate(f, 100, ms[0], ms)
	state, err := ms[1].cipher.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range []int{0, 300, 5000} {
		e := seal(f, ms[0], make([]byte, n))
		f.Add(e.epoch, e.nonce, e.ct)
	}
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, epoch, nonce, ct []byte) {
		c, err := UnmarshalCipher(state, detRand(1))
		if err != nil {
			t.Fatal(err)
		}
		inner, _, err := c.OpenBlock(epoch, nonce, ct)
		if err != nil {
			return
		}
		// An opened envelope cannot be opened twice.
		if _, _, err := c.OpenBlock(epoch, nonce, ct); err == nil {
			t.Fatalf("envelope opened twice (%d bytes)", len(inner))
		}
	})
}

func FuzzUnmarshalCipher(f *testing.F) {
	ms := newMembers(f, 3)
	rotate(f, 100, ms[0], ms)
	var envs []envelope
	for range 5 {
		envs = append(envs, seal(f, ms[0], []byte("m")))
	}
	ms[1].cipher.OpenBlock(envs[3].epoch, envs[3].nonce, envs[3].ct) // leaves skipped keys
	s1, _ := ms[1].cipher.MarshalBinary()
	s2, _ := NewCipher(testConv, ms[2].dev.ID(), detRand(1))
	s2b, _ := s2.MarshalBinary()
	for i := range MaxEpochs + 2 { // a state that has dropped epochs
		rotate(f, uint64(200+i), ms[0], ms)
	}
	s3, _ := ms[1].cipher.MarshalBinary()
	addSeeds(f, s1, s2b, s3)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalCipher(b, detRand(1))
		if err != nil {
			return
		}
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// A version 2 state round-trips byte for byte; a version 1 state is
		// written back as the same state with nothing dropped.
		want := b
		var v1 cipherWireV1
		if unmarshalStrict(b, &v1) == nil {
			want, err = marshal(cipherWire{V: cipherStateVersion, Conv: v1.Conv, Self: v1.Self, Sending: v1.Sending, SkipSeq: v1.SkipSeq, Epochs: v1.Epochs, Dropped: [][]byte{}})
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(again, want) {
			t.Fatalf("accepted state does not round-trip (%d bytes in, %d out)", len(b), len(again))
		}
	})
}

func FuzzOpenKeyringFile(f *testing.F) {
	dir := f.TempDir()
	keyPath := filepath.Join(dir, "k")
	kr := testKeyring(f)
	withKey, err := SealFile(kr, KeyFile(keyPath), cheapOpts(1)...)
	if err != nil {
		f.Fatal(err)
	}
	withPass, _ := SealFile(kr, Passphrase("pw"), cheapOpts(2)...)
	addSeeds(f, withKey, withPass)
	if _, err := os.Stat(keyPath); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The key-file protection exercises every decoder without running
		// argon2id on fuzzer-chosen parameters.
		OpenFile(b, KeyFile(keyPath), WithArgon2Floor(cheapArgon))
	})
}

func FuzzOpenBackup(f *testing.F) {
	k, _ := NewRecoveryKey(detRand(1))
	acct, _ := NewAccountKey(detRand(2))
	b, _ := SealBackup(detRand(3), k, Backup{Account: acct, Secrets: map[string][]byte{"a": {1}}, Created: t0})
	addSeeds(f, b)
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, err := OpenBackup(k, data); err == nil && got.Account.ID() != acct.ID() {
			t.Fatal("backup with a foreign account opened under our key")
		}
	})
}

func FuzzParseRecoveryWords(f *testing.F) {
	k, _ := NewRecoveryKey(detRand(1))
	f.Add(k.Words())
	f.Add("abandon abandon")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseRecoveryWords(s)
		if err == nil {
			if back, err := ParseRecoveryWords(got.Words()); err != nil || back != got {
				t.Fatal("accepted phrase does not round-trip")
			}
		}
	})
}
