package keyring

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

type katFile struct {
	Ed25519 []struct{ Name, Seed, Public, Msg, Sig string } `json:"ed25519_rfc8032"`
	X25519  struct {
		AlicePrivate string `json:"alice_private"`
		AlicePublic  string `json:"alice_public"`
		BobPrivate   string `json:"bob_private"`
		BobPublic    string `json:"bob_public"`
		Shared       string
	} `json:"x25519_rfc7748"`
	HKDF    []struct{ Name, IKM, Salt, Info, OKM string } `json:"hkdf_rfc5869"`
	XChaCha struct {
		Key, Nonce, AAD, Plaintext string
		CT                         string `json:"ciphertext_and_tag"`
	} `json:"xchacha20poly1305_draft_a31"`
	Argon2 struct {
		Password, Salt, Hash string
		T, M                 uint32
		P                    uint8
	} `json:"argon2id_phc"`
	Fingerprint struct {
		Iterations  int
		AliceKey    string `json:"alice_key"`
		AliceID     string `json:"alice_id"`
		BobKey      string `json:"bob_key"`
		BobID       string `json:"bob_id"`
		Displayable string
	} `json:"libsignal_fingerprint"`
}

func TestKnownAnswers(t *testing.T) {
	var k katFile
	loadJSON(t, "kat.json", &k)

	t.Run("RFC8032", func(t *testing.T) {
		for _, v := range k.Ed25519 {
			priv := ed25519.NewKeyFromSeed(unhex(t, v.Seed))
			if !bytes.Equal(priv.Public().(ed25519.PublicKey), unhex(t, v.Public)) {
				t.Fatalf("%s: public key", v.Name)
			}
			sig := signRaw(priv, unhex(t, v.Msg))
			if !bytes.Equal(sig, unhex(t, v.Sig)) {
				t.Fatalf("%s: signature %x", v.Name, sig)
			}
			if !verifyRaw(unhex(t, v.Public), unhex(t, v.Msg), sig) {
				t.Fatalf("%s: verify", v.Name)
			}
		}
	})
	t.Run("RFC7748", func(t *testing.T) {
		x := ecdh.X25519()
		a, _ := x.NewPrivateKey(unhex(t, k.X25519.AlicePrivate))
		b, _ := x.NewPrivateKey(unhex(t, k.X25519.BobPrivate))
		if !bytes.Equal(a.PublicKey().Bytes(), unhex(t, k.X25519.AlicePublic)) || !bytes.Equal(b.PublicKey().Bytes(), unhex(t, k.X25519.BobPublic)) {
			t.Fatal("public keys")
		}
		s1, _ := a.ECDH(b.PublicKey())
		s2, _ := b.ECDH(a.PublicKey())
		if !bytes.Equal(s1, unhex(t, k.X25519.Shared)) || !bytes.Equal(s2, s1) {
			t.Fatal("shared secret")
		}
	})
	t.Run("RFC5869", func(t *testing.T) {
		for _, v := range k.HKDF {
			want := unhex(t, v.OKM)
			got, err := hkdfSHA256(unhex(t, v.IKM), unhex(t, v.Salt), string(unhex(t, v.Info)), len(want))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: %x %v", v.Name, got, err)
			}
		}
	})
	t.Run("XChaCha20Poly1305", func(t *testing.T) {
		v := k.XChaCha
		ct, err := aeadSeal(unhex(t, v.Key), unhex(t, v.Nonce), unhex(t, v.Plaintext), unhex(t, v.AAD))
		if err != nil || !bytes.Equal(ct, unhex(t, v.CT)) {
			t.Fatalf("seal: %x %v", ct, err)
		}
		pt, err := aeadOpen(unhex(t, v.Key), unhex(t, v.Nonce), ct, unhex(t, v.AAD))
		if err != nil || !bytes.Equal(pt, unhex(t, v.Plaintext)) {
			t.Fatal("open")
		}
	})
	t.Run("Argon2idPHC", func(t *testing.T) {
		v := k.Argon2
		got := argon2idKey([]byte(v.Password), []byte(v.Salt), Argon2Params{v.T, v.M, v.P}, 32)
		if !bytes.Equal(got, unhex(t, v.Hash)) {
			t.Fatalf("argon2id %x", got)
		}
	})
	t.Run("LibsignalFingerprint", func(t *testing.T) {
		v := k.Fingerprint
		got := displayableFingerprint(v.Iterations, unhex(t, v.AliceKey), []byte(v.AliceID), unhex(t, v.BobKey), []byte(v.BobID))
		if got != v.Displayable {
			t.Fatalf("got %s", got)
		}
		if rev := displayableFingerprint(v.Iterations, unhex(t, v.BobKey), []byte(v.BobID), unhex(t, v.AliceKey), []byte(v.AliceID)); rev != got {
			t.Fatal("not symmetric")
		}
	})
}

// TestHPKEVectors runs the draft-ietf-hpke-pq X-Wing vector (KEM 0x647a,
// HKDF-SHA256, ChaCha20-Poly1305: exactly our suite) through derivePrekey
// and hpkeOpen.
func TestHPKEVectors(t *testing.T) {
	var vs []struct {
		KEM         uint16 `json:"kem_id"`
		KDF         uint16 `json:"kdf_id"`
		AEAD        uint16 `json:"aead_id"`
		Info        string
		IkmR        string `json:"ikmR"`
		SkRm        string `json:"skRm"`
		PkRm        string `json:"pkRm"`
		Enc         string
		Encryptions []struct{ AAD, CT, Nonce, PT string }
	}
	loadJSON(t, "hpke_vectors.json", &vs)
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vs {
		if v.KEM != hpkeKEM().ID() || v.KDF != hpkeKDF().ID() || v.AEAD != hpkeAEAD().ID() {
			t.Fatalf("vector suite %#x/%d/%d is not ours", v.KEM, v.KDF, v.AEAD)
		}
		pk, err := derivePrekey(unhex(t, v.IkmR), t0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pk.seed, unhex(t, v.SkRm)) || !bytes.Equal(pk.pub, unhex(t, v.PkRm)) {
			t.Fatal("DeriveKeyPair mismatch")
		}
		e := v.Encryptions[0]
		box := append(unhex(t, v.Enc), unhex(t, e.CT)...)
		pt, err := hpkeOpen(pk.priv, hpkeKDF(), hpkeAEAD(), unhex(t, v.Info), unhex(t, e.AAD), box)
		if err != nil || !bytes.Equal(pt, unhex(t, e.PT)) {
			t.Fatalf("open: %v", err)
		}
		box[len(box)-1] ^= 1
		if _, err := hpkeOpen(pk.priv, hpkeKDF(), hpkeAEAD(), unhex(t, v.Info), unhex(t, e.AAD), box); err == nil {
			t.Fatal("tampered box opened")
		}
		if _, err := hpkeOpen(pk.priv, hpkeKDF(), hpkeAEAD(), unhex(t, v.Info), nil, box[:100]); err == nil {
			t.Fatal("truncated box opened")
		}
	}
}

func TestBIP39Vectors(t *testing.T) {
	if sum := sha256.Sum256([]byte(bip39English)); hex.EncodeToString(sum[:]) != "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda" {
		t.Fatal("BIP-39 English word list differs from the standard one")
	}
	var vs []struct{ Entropy, Mnemonic string }
	loadJSON(t, "bip39_trezor_256.json", &vs)
	if len(vs) < 8 {
		t.Fatalf("%d vectors", len(vs))
	}
	for _, v := range vs {
		k := RecoveryKey(unhex(t, v.Entropy))
		if got := k.Words(); got != v.Mnemonic {
			t.Fatalf("entropy %s: %s", v.Entropy, got)
		}
		back, err := ParseRecoveryWords("  " + strings.ToUpper(v.Mnemonic) + "\n")
		if err != nil || back != k {
			t.Fatalf("parse %q: %v", v.Mnemonic, err)
		}
	}
}
