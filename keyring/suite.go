// Package keyring holds Glitr's cryptography: account and device identities,
// device certificates and revocations, signed HPKE prekeys, conversation
// epochs with per-sender hash chains, whole-block encryption of DAG blocks,
// the encrypted keyring file, recovery backups and safety numbers.
//
// The package writes the protocol, never the primitives: Ed25519
// (crypto/ed25519), HPKE with X-Wing (crypto/hpke), HKDF-SHA256
// (crypto/hkdf), XChaCha20-Poly1305 and argon2id (golang.org/x/crypto).
// There is one fixed suite per protocol version and no negotiation. Every
// signature and every KDF output is domain-separated by a label of the form
// "glitr/v1/<label>"; docs/crypto.md lists them all.
//
// Pure functions take values and return values; every function that needs
// randomness takes an io.Reader so vectors are reproducible. The one
// exception is HPKE encapsulation, whose randomness the standard library
// draws from crypto/rand itself.
package keyring

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/chacha20poly1305"
)

// labelPrefix starts every domain-separation label.
const labelPrefix = "glitr/v1/"

// Signature contexts. A signature covers label || 0x00 || message, so a
// signature made for one purpose never verifies for another.
const (
	labelBlock       = labelPrefix + "block"
	labelCertificate = labelPrefix + "device-cert"
	labelRevocation  = labelPrefix + "device-revoke"
	labelPrekey      = labelPrefix + "prekey"
	labelRotation    = labelPrefix + "epoch-rotation"
)

// KDF labels (HKDF-SHA256 info strings).
const (
	labelEpochID     = labelPrefix + "epoch-id"
	labelEpochBox    = labelPrefix + "epoch-box"
	labelHeaderKey   = labelPrefix + "header-key"
	labelSenderChain = labelPrefix + "sender-chain"
	labelExporter    = labelPrefix + "exporter"
	labelExport      = labelPrefix + "export"
	labelEnvelopeAD  = labelPrefix + "envelope"
	labelHeaderAD    = labelPrefix + "header"
	labelKeyringFile = labelPrefix + "keyring-file"
	labelBackupKey   = labelPrefix + "backup-key"
	labelBackupCheck = labelPrefix + "backup-check"
	labelBackupAD    = labelPrefix + "backup"
	labelSafetyID    = labelPrefix + "safety-number"
)

// Errors callers act on. Every error returned by this package wraps one of
// these (or a standard library error for I/O), so callers use errors.Is.
var (
	// ErrMalformed reports bytes that do not decode under the strict rules
	// (wrong lengths, unknown fields, non-canonical encoding, caps exceeded).
	ErrMalformed = errors.New("keyring: malformed input")
	// ErrBadSignature reports a signature that does not verify.
	ErrBadSignature = errors.New("keyring: bad signature")
	// ErrUnsupportedVersion reports a format version this code does not speak.
	ErrUnsupportedVersion = errors.New("keyring: unsupported version")
	// ErrExpired reports a certificate or prekey used outside its validity.
	ErrExpired = errors.New("keyring: expired")
	// ErrRevoked reports a device whose revocation cutoff excludes the item.
	ErrRevoked = errors.New("keyring: device revoked")
)

// Fixed sizes of the suite.
const (
	// KeySize is the size of every symmetric key and secret.
	KeySize = 32
	// EpochIDSize is the size of an epoch identifier.
	EpochIDSize = 16
	// NonceSize is the XChaCha20-Poly1305 nonce size.
	NonceSize = chacha20poly1305.NonceSizeX
	// TagSize is the Poly1305 tag size.
	TagSize = chacha20poly1305.Overhead
	// MaxConversationIDLen caps conversation identifiers (a CID is ≈ 36 bytes).
	MaxConversationIDLen = 64
)

// hpkeSuite is the only HPKE ciphersuite of protocol version 1:
// X-Wing (KEM 0x647a), HKDF-SHA256 (0x0001), ChaCha20-Poly1305 (0x0003).
func hpkeKEM() hpke.KEM   { return hpke.MLKEM768X25519() }
func hpkeKDF() hpke.KDF   { return hpke.HKDFSHA256() }
func hpkeAEAD() hpke.AEAD { return hpke.ChaCha20Poly1305() }

// hkdfSHA256 is the single HKDF entry point; the RFC 5869 vectors run
// through it.
func hkdfSHA256(ikm, salt []byte, info string, n int) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, ikm, salt, info, n)
	if err != nil {
		return nil, fmt.Errorf("keyring: hkdf: %w", err)
	}
	return k, nil
}

// kdf derives a 32-byte key for label from ikm, with salt and a context
// appended to the label after a zero byte.
func kdf(label string, ikm, salt []byte, context ...[]byte) [KeySize]byte {
	info := make([]byte, 0, len(label)+1+64)
	info = append(info, label...)
	info = append(info, 0)
	for _, c := range context {
		info = appendLenPrefixed(info, c)
	}
	k, err := hkdfSHA256(ikm, salt, string(info), KeySize)
	if err != nil {
		// hkdf.Key only fails for lengths above 255*32 bytes.
		panic(err)
	}
	var out [KeySize]byte
	copy(out[:], k)
	return out
}

// appendLenPrefixed appends a 2-byte big-endian length and b; every context
// element is length-prefixed so concatenations cannot be ambiguous.
func appendLenPrefixed(dst, b []byte) []byte {
	dst = append(dst, byte(len(b)>>8), byte(len(b)))
	return append(dst, b...)
}

// signedMessage builds label || 0x00 || msg.
func signedMessage(label string, msg []byte) []byte {
	m := make([]byte, 0, len(label)+1+len(msg))
	m = append(m, label...)
	m = append(m, 0)
	return append(m, msg...)
}

// signRaw is the single Ed25519 signing entry point (RFC 8032 vectors run
// through it with an empty label handled by the caller).
func signRaw(priv ed25519.PrivateKey, msg []byte) []byte {
	return ed25519.Sign(priv, msg)
}

// verifyRaw verifies an Ed25519 signature without panicking on malformed
// key or signature lengths (ed25519.Verify panics on a short public key).
func verifyRaw(pub, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub), msg, sig)
}

func sign(priv ed25519.PrivateKey, label string, msg []byte) []byte {
	return signRaw(priv, signedMessage(label, msg))
}

func verify(pub []byte, label string, msg, sig []byte) error {
	if !verifyRaw(pub, signedMessage(label, msg), sig) {
		return ErrBadSignature
	}
	return nil
}

// VerifyBlockSignature checks a signature made by DeviceKey.Sign over an
// inner block encoding: Ed25519 over "glitr/v1/block" || 0x00 || msg.
func VerifyBlockSignature(pub ed25519.PublicKey, msg, sig []byte) error {
	if err := verify(pub, labelBlock, msg, sig); err != nil {
		return fmt.Errorf("block signature: %w", err)
	}
	return nil
}

// BlockSignaturePrefix returns the bytes DeviceKey.Sign prepends to the
// message before signing, for verifiers that call ed25519.Verify directly.
func BlockSignaturePrefix() []byte { return signedMessage(labelBlock, nil) }

// aeadSeal and aeadOpen are the single XChaCha20-Poly1305 entry points.
func aeadSeal(key, nonce, plaintext, ad []byte) ([]byte, error) {
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("keyring: aead: %w", err)
	}
	return a.Seal(nil, nonce, plaintext, ad), nil
}

var errAEAD = errors.New("keyring: authentication failed")

func aeadOpen(key, nonce, ciphertext, ad []byte) ([]byte, error) {
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("keyring: aead: %w", err)
	}
	pt, err := a.Open(nil, nonce, ciphertext, ad)
	if err != nil {
		return nil, errAEAD
	}
	return pt, nil
}

// readRand fills n bytes from r, failing loudly on a short read.
func readRand(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("keyring: read randomness: %w", err)
	}
	return b, nil
}

// CBOR codec. Encoding is canonical (RFC 8949 core deterministic); decoding
// is strict and re-encodes to reject any non-canonical input, so every
// signed structure has exactly one byte representation.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  4096,
		MaxMapPairs:       4096,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("keyring: encode: %w", err)
	}
	return b, nil
}

// unmarshalStrict decodes b into v and rejects trailing bytes and any
// encoding that is not the canonical one.
func unmarshalStrict(b []byte, v any) error {
	rest, err := decMode.UnmarshalFirst(b, v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: trailing bytes", ErrMalformed)
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, b) {
		return fmt.Errorf("%w: non-canonical encoding", ErrMalformed)
	}
	return nil
}

// signedWire is the outer form of every signed object: the canonical CBOR
// body and a signature over label || 0x00 || body.
type signedWire struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

func sealSigned(priv ed25519.PrivateKey, label string, body any) ([]byte, error) {
	b, err := marshal(body)
	if err != nil {
		return nil, err
	}
	return marshal(signedWire{Body: b, Sig: sign(priv, label, b)})
}

// openSigned decodes the outer form and the body, and returns the body bytes
// and signature for the caller to verify against the key named in the body.
func openSigned(b []byte, maxLen int, body any) (bodyBytes, sig []byte, err error) {
	if len(b) > maxLen {
		return nil, nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), maxLen)
	}
	var w signedWire
	if err := unmarshalStrict(b, &w); err != nil {
		return nil, nil, err
	}
	if len(w.Sig) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: signature length %d", ErrMalformed, len(w.Sig))
	}
	if err := unmarshalStrict(w.Body, body); err != nil {
		return nil, nil, err
	}
	return w.Body, w.Sig, nil
}

func checkLen(name string, b []byte, n int) error {
	if len(b) != n {
		return fmt.Errorf("%w: %s is %d bytes, want %d", ErrMalformed, name, len(b), n)
	}
	return nil
}

// wipe overwrites key material that is no longer needed. Go's GC may have
// copied it, so this is hygiene, not a guarantee; the guarantee of deletion
// comes from the serialized state no longer containing the key.
func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
