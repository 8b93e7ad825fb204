package keyring

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"time"
)

// AccountID identifies an account: the Ed25519 public key of its root key.
type AccountID [ed25519.PublicKeySize]byte

// DeviceID identifies a device: the Ed25519 public key of its signing key.
// It is the DeviceID the dag package records as a block's author.
type DeviceID [ed25519.PublicKeySize]byte

// String returns the hex form, for logs and errors.
func (a AccountID) String() string { return hex.EncodeToString(a[:]) }

// String returns the hex form, for logs and errors.
func (d DeviceID) String() string { return hex.EncodeToString(d[:]) }

// AccountKey is an account root key. It signs device certificates and
// revocations and nothing else; it should live only in the recovery backup
// and on devices the user marks as admin.
type AccountKey struct {
	priv ed25519.PrivateKey
}

// NewAccountKey generates a root key from rand.
func NewAccountKey(rand io.Reader) (*AccountKey, error) {
	seed, err := readRand(rand, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return AccountKeyFromSeed(seed)
}

// AccountKeyFromSeed rebuilds a root key from its 32-byte seed.
func AccountKeyFromSeed(seed []byte) (*AccountKey, error) {
	if err := checkLen("account seed", seed, ed25519.SeedSize); err != nil {
		return nil, err
	}
	return &AccountKey{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// ID returns the account identifier.
func (k *AccountKey) ID() AccountID { return AccountID(k.priv.Public().(ed25519.PublicKey)) }

// Public returns the root public key.
func (k *AccountKey) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Seed returns a copy of the 32-byte seed, for the keyring file and backups.
func (k *AccountKey) Seed() []byte { return slices.Clone(k.priv.Seed()) }

// DeviceKey is a device's Ed25519 signing key. It satisfies the dag
// package's Signer interface (Public and Sign).
type DeviceKey struct {
	priv ed25519.PrivateKey
	id   DeviceID
}

// NewDeviceKey generates a device signing key from rand.
func NewDeviceKey(rand io.Reader) (*DeviceKey, error) {
	seed, err := readRand(rand, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return DeviceKeyFromSeed(seed)
}

// DeviceKeyFromSeed rebuilds a device key from its 32-byte seed.
func DeviceKeyFromSeed(seed []byte) (*DeviceKey, error) {
	if err := checkLen("device seed", seed, ed25519.SeedSize); err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &DeviceKey{priv: priv, id: DeviceID(priv.Public().(ed25519.PublicKey))}, nil
}

// ID returns the device identifier.
func (k *DeviceKey) ID() DeviceID { return k.id }

// Public returns the device public key.
func (k *DeviceKey) Public() ed25519.PublicKey { return slices.Clone(k.id[:]) }

// Sign signs an inner block encoding. The signature covers
// "glitr/v1/block" || 0x00 || msg, never msg alone, so a block signature can
// never be replayed as a prekey or rotation signature (those use other
// labels and are made through other methods). Verify with
// VerifyBlockSignature.
func (k *DeviceKey) Sign(msg []byte) ([]byte, error) {
	return sign(k.priv, labelBlock, msg), nil
}

// Seed returns a copy of the 32-byte seed, for the keyring file.
func (k *DeviceKey) Seed() []byte { return slices.Clone(k.priv.Seed()) }

// Prekey schedule.
const (
	// PrekeyRotationPeriod is how long a prekey is the current one.
	PrekeyRotationPeriod = 7 * 24 * time.Hour
	// PrekeyGracePeriod is how long a replaced prekey's private part is kept
	// so that seals made to it while it was current still open.
	PrekeyGracePeriod = 7 * 24 * time.Hour
	// maxPrekeys caps the ring; older keys are dropped first.
	maxPrekeys = 8
	// prekeyPublicSize is the X-Wing encapsulation key size.
	prekeyPublicSize = 1216
	// prekeySeedSize is the X-Wing private key (seed) size.
	prekeySeedSize = 32
)

// PrekeyID names a prekey: the first 16 bytes of SHA-256 of its public key.
type PrekeyID [16]byte

func prekeyIDOf(pub []byte) PrekeyID {
	h := sha256.Sum256(pub)
	return PrekeyID(h[:16])
}

// Prekey is a device's X-Wing HPKE key pair that epoch secrets are sealed to.
type Prekey struct {
	id      PrekeyID
	seed    []byte
	priv    hpke.PrivateKey
	pub     []byte
	created time.Time
}

// NewPrekey generates a prekey from 32 bytes of rand, created at now.
func NewPrekey(rand io.Reader, now time.Time) (*Prekey, error) {
	ikm, err := readRand(rand, prekeySeedSize)
	if err != nil {
		return nil, err
	}
	defer wipe(ikm)
	return derivePrekey(ikm, now)
}

// derivePrekey is X-Wing DeriveKeyPair(ikm); the hpke-pq vectors run
// through it.
func derivePrekey(ikm []byte, now time.Time) (*Prekey, error) {
	priv, err := hpkeKEM().DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("keyring: derive prekey: %w", err)
	}
	seed, err := priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("keyring: prekey bytes: %w", err)
	}
	return prekeyFromSeed(seed, now)
}

func prekeyFromSeed(seed []byte, created time.Time) (*Prekey, error) {
	if err := checkLen("prekey seed", seed, prekeySeedSize); err != nil {
		return nil, err
	}
	priv, err := hpkeKEM().NewPrivateKey(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: prekey: %v", ErrMalformed, err)
	}
	pub := priv.PublicKey().Bytes()
	return &Prekey{id: prekeyIDOf(pub), seed: slices.Clone(seed), priv: priv, pub: pub, created: created.UTC().Truncate(time.Second)}, nil
}

// ID returns the prekey identifier.
func (p *Prekey) ID() PrekeyID { return p.id }

// Created returns the creation time (whole seconds, UTC).
func (p *Prekey) Created() time.Time { return p.created }

// PublicBytes returns the serialized X-Wing public key.
func (p *Prekey) PublicBytes() []byte { return slices.Clone(p.pub) }

type prekeyBody struct {
	_       struct{} `cbor:",toarray"`
	V       uint8
	Device  []byte
	KEM     uint16
	Public  []byte
	Created int64
	Expires int64
}

// SignedPrekey is a verified prekey announcement.
type SignedPrekey struct {
	Device  DeviceID
	ID      PrekeyID
	Public  hpke.PublicKey
	Created time.Time
	Expires time.Time
}

// SignPrekey produces a prekey announcement signed by the device, valid
// from the prekey's creation for the rotation period plus the grace period.
func (k *DeviceKey) SignPrekey(p *Prekey) ([]byte, error) {
	body := prekeyBody{
		V:       1,
		Device:  k.id[:],
		KEM:     hpkeKEM().ID(),
		Public:  p.pub,
		Created: p.created.Unix(),
		Expires: p.created.Add(PrekeyRotationPeriod + PrekeyGracePeriod).Unix(),
	}
	return sealSigned(k.priv, labelPrekey, body)
}

const maxSignedPrekeyLen = 1536

// VerifyPrekey strictly decodes a prekey announcement and checks the device
// signature. The caller checks that the device holds a valid certificate
// and that the prekey is valid at the time of use (ValidAt).
func VerifyPrekey(b []byte) (SignedPrekey, error) {
	var body prekeyBody
	raw, sig, err := openSigned(b, maxSignedPrekeyLen, &body)
	if err != nil {
		return SignedPrekey{}, fmt.Errorf("prekey: %w", err)
	}
	if body.V != 1 {
		return SignedPrekey{}, fmt.Errorf("prekey: %w: %d", ErrUnsupportedVersion, body.V)
	}
	if err := checkLen("device", body.Device, ed25519.PublicKeySize); err != nil {
		return SignedPrekey{}, fmt.Errorf("prekey: %w", err)
	}
	if body.KEM != hpkeKEM().ID() {
		return SignedPrekey{}, fmt.Errorf("prekey: %w: kem %#x", ErrMalformed, body.KEM)
	}
	if err := checkLen("public key", body.Public, prekeyPublicSize); err != nil {
		return SignedPrekey{}, fmt.Errorf("prekey: %w", err)
	}
	if body.Expires <= body.Created {
		return SignedPrekey{}, fmt.Errorf("prekey: %w: expiry before creation", ErrMalformed)
	}
	if err := verify(body.Device, labelPrekey, raw, sig); err != nil {
		return SignedPrekey{}, fmt.Errorf("prekey: %w", err)
	}
	pub, err := hpkeKEM().NewPublicKey(body.Public)
	if err != nil {
		return SignedPrekey{}, fmt.Errorf("prekey: %w: %v", ErrMalformed, err)
	}
	return SignedPrekey{
		Device:  DeviceID(body.Device),
		ID:      prekeyIDOf(body.Public),
		Public:  pub,
		Created: time.Unix(body.Created, 0).UTC(),
		Expires: time.Unix(body.Expires, 0).UTC(),
	}, nil
}

// ValidAt reports ErrExpired when t is outside the prekey's validity.
func (s SignedPrekey) ValidAt(t time.Time) error {
	if t.Before(s.Created.Add(-5*time.Minute)) || !t.Before(s.Expires) {
		return fmt.Errorf("prekey %x: %w", s.ID[:4], ErrExpired)
	}
	return nil
}

// PrekeyRing holds a device's prekeys: the current one and replaced ones
// still inside their grace period. It is not safe for concurrent use.
type PrekeyRing struct {
	keys []*Prekey // oldest first; the last is current
}

// NewPrekeyRing starts a ring with its first prekey.
func NewPrekeyRing(first *Prekey) *PrekeyRing {
	return &PrekeyRing{keys: []*Prekey{first}}
}

// Current returns the prekey to announce now.
func (r *PrekeyRing) Current() *Prekey { return r.keys[len(r.keys)-1] }

// Len returns the number of prekeys held.
func (r *PrekeyRing) Len() int { return len(r.keys) }

// NeedsRotation reports whether the current prekey is older than the
// rotation period at now.
func (r *PrekeyRing) NeedsRotation(now time.Time) bool {
	return !now.Before(r.Current().created.Add(PrekeyRotationPeriod))
}

// Rotate adds a new current prekey created at now and prunes keys whose
// grace period has ended. The caller announces the new key (SignPrekey) and
// persists the ring.
func (r *PrekeyRing) Rotate(rand io.Reader, now time.Time) (*Prekey, error) {
	p, err := NewPrekey(rand, now)
	if err != nil {
		return nil, err
	}
	r.keys = append(r.keys, p)
	r.Prune(now)
	return p, nil
}

// Prune deletes replaced prekeys whose successor has been current for
// longer than the grace period, and caps the ring. Deleting them is what
// gives epoch distribution its forward secrecy.
func (r *PrekeyRing) Prune(now time.Time) {
	keep := make([]*Prekey, 0, len(r.keys))
	for i, p := range r.keys {
		if i < len(r.keys)-1 && !now.Before(r.keys[i+1].created.Add(PrekeyGracePeriod)) {
			wipe(p.seed)
			continue
		}
		keep = append(keep, p)
	}
	if len(keep) > maxPrekeys {
		for _, p := range keep[:len(keep)-maxPrekeys] {
			wipe(p.seed)
		}
		keep = keep[len(keep)-maxPrekeys:]
	}
	r.keys = keep
}

// Lookup returns the prekey with the given id.
func (r *PrekeyRing) Lookup(id PrekeyID) (*Prekey, bool) {
	for _, p := range r.keys {
		if p.id == id {
			return p, true
		}
	}
	return nil, false
}
