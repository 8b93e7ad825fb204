package dag

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Protocol limits and constants of the version-1 block format.
const (
	// EnvelopeVersion is the only envelope version this package produces
	// and accepts.
	EnvelopeVersion = 1

	// MaxInnerSize caps the canonical encoding of an inner block (the
	// plaintext the cipher seals).
	MaxInnerSize = 64 << 10

	// MaxCiphertextSize caps the ciphertext in an envelope: the inner block
	// plus room for the cipher's padding and authentication tag.
	MaxCiphertextSize = MaxInnerSize + 256

	// MaxEnvelopeSize caps the encoded envelope: the ciphertext plus the
	// CBOR header (map, keys, version, epoch id, nonce, length prefixes),
	// which needs 62 bytes; the remainder is slack.
	MaxEnvelopeSize = MaxCiphertextSize + 128

	// MaxParents caps the parent links of one block.
	MaxParents = 16

	// EpochIDSize is the length of an epoch id in the envelope.
	EpochIDSize = 16

	// NonceSize is the length of the AEAD nonce in the envelope
	// (XChaCha20-Poly1305).
	NonceSize = 24

	// CodecDagCBOR is the multicodec code of DAG-CBOR, used in block CIDs.
	CodecDagCBOR = 0x71

	// SignatureDomain prefixes the message a device signs for a block, so
	// that a block signature can never be replayed as another kind of
	// signature made with the same key.
	SignatureDomain = "glitr/v1/block\x00"
)

// DeviceID is a device's Ed25519 public key, the author of a block.
type DeviceID [32]byte

// String returns the lowercase hex encoding of the key.
func (d DeviceID) String() string { return hex.EncodeToString(d[:]) }

// PublicKey returns the device key as an ed25519.PublicKey.
func (d DeviceID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(bytes.Clone(d[:])) }

// DeviceIDFromKey converts an Ed25519 public key to a DeviceID.
func DeviceIDFromKey(k ed25519.PublicKey) (DeviceID, error) {
	var d DeviceID
	if len(k) != ed25519.PublicKeySize {
		return d, fmt.Errorf("dag: device key has %d bytes, want %d: %w", len(k), ed25519.PublicKeySize, ErrMalformed)
	}
	copy(d[:], k)
	return d, nil
}

// Sealed is what the cipher produces; dag wraps it in the Envelope.
type Sealed struct {
	Epoch      []byte
	Nonce      []byte
	Ciphertext []byte
}

// Sealer encrypts an encoded inner block. The implementation (keyring)
// binds the envelope header (EnvelopeVersion, epoch id, nonce) as
// associated data and pads the plaintext before encryption. Build copies
// the ciphertext into the envelope bytes and keeps no reference to it, so
// a Sealer may hand out the same buffer for every block.
type Sealer interface {
	Seal(inner []byte) (Sealed, error)
}

// Opener decrypts a sealed inner block. It must be deterministic per
// envelope: the same (epoch, nonce, ciphertext) either always fails or
// always yields the same plaintext. Chain authentication (PlanVerification)
// relies on it; a key-committing construction or keys derived only from
// header fields provide it.
type Opener interface {
	Open(s Sealed) (inner []byte, err error)
}

// Signer signs block signing messages with a device key. keyring's device
// key implements it; an ed25519.PrivateKey is wrapped by Ed25519Signer.
type Signer interface {
	Public() ed25519.PublicKey
	Sign(msg []byte) ([]byte, error)
}

// Ed25519Signer adapts an ed25519.PrivateKey to Signer.
type Ed25519Signer struct{ Key ed25519.PrivateKey }

// Public returns the public half of the key.
func (s Ed25519Signer) Public() ed25519.PublicKey { return s.Key.Public().(ed25519.PublicKey) }

// Sign signs msg with pure Ed25519.
func (s Ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.Key, msg), nil }

// Envelope is the outer, encrypted form of a block: what travels and is
// stored. Its CID (EnvelopeCID) is the block id. It reveals nothing about
// author, time or parents.
type Envelope struct {
	Version    uint64
	Epoch      []byte
	Nonce      []byte
	Ciphertext []byte
}

// Sealed returns the cipher-facing part of the envelope.
func (e Envelope) Sealed() Sealed {
	return Sealed{Epoch: e.Epoch, Nonce: e.Nonce, Ciphertext: e.Ciphertext}
}

// Inner is the decrypted, signed content of a block.
type Inner struct {
	// Author is the signing device.
	Author DeviceID
	// Seq is the author's per-DAG sequence number, starting at 1.
	Seq uint64
	// Height is 1 + the maximum height of Parents and Prev (1 for a block
	// without links).
	Height uint64
	// Lamport is 1 + the maximum Lamport clock of Parents and Prev.
	Lamport uint64
	// Time is the author's wall clock in Unix milliseconds (informative;
	// never used for ordering or validity).
	Time int64
	// Prev links the author's previous block in this DAG; cid.Undef when
	// Seq is 1.
	Prev cid.Cid
	// Parents are the heads the author built on, sorted by CID bytes,
	// without duplicates, at most MaxParents.
	Parents []cid.Cid
	// Cert is an opaque device certificate (keyring), carried in an
	// author's first block of a DAG.
	Cert []byte
	// Body is opaque to dag (CBOR-encoded CRDT operations owned by crdt).
	Body []byte
	// Sig is the Ed25519 signature over SigningMessage.
	Sig []byte
}

// Links returns the blocks this block depends on: its parents and, if
// present, Prev. Height, Lamport clock, downward closure and topological
// order all treat Prev like a parent.
func (in *Inner) Links() []cid.Cid {
	if !in.Prev.Defined() {
		return in.Parents
	}
	out := make([]cid.Cid, 0, len(in.Parents)+1)
	out = append(out, in.Parents...)
	return append(out, in.Prev)
}

// Block is a decoded block: the envelope, its CID and the opened inner
// block. Blocks made by OpenBlock, DecodeBlock or Build cache their
// canonical encodings, which the store reuses instead of re-encoding.
type Block struct {
	CID      cid.Cid
	Envelope Envelope
	Inner    Inner

	envBytes   []byte
	innerBytes []byte
}

// EnvelopeBytes returns the canonical encoding of the envelope (the bytes
// whose hash is the CID).
func (b *Block) EnvelopeBytes() ([]byte, error) {
	if b.envBytes != nil {
		return b.envBytes, nil
	}
	return EncodeEnvelope(b.Envelope)
}

// InnerBytes returns the canonical encoding of the signed inner block.
func (b *Block) InnerBytes() ([]byte, error) {
	if b.innerBytes != nil {
		return b.innerBytes, nil
	}
	return EncodeInner(b.Inner)
}

// Ref names a committed block together with the values a child needs to
// compute its own height and Lamport clock.
type Ref struct {
	CID     cid.Cid
	Height  uint64
	Lamport uint64
}
