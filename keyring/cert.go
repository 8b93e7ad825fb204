package keyring

import (
	"crypto/ed25519"
	"fmt"
	"time"
	"unicode/utf8"
)

// MaxDeviceNameLen caps a device name in bytes.
const MaxDeviceNameLen = 64

const maxCertificateLen = 512

type certBody struct {
	_       struct{} `cbor:",toarray"`
	V       uint8
	Account []byte
	Device  []byte
	Name    string
	Created int64
	Expires int64 // 0: no expiry
}

// Certificate binds a device signing key to an account. It is produced by
// AccountKey.Certify and checked by VerifyCertificate.
type Certificate struct {
	Account AccountID
	Device  DeviceID
	Name    string
	Created time.Time
	// Expires is the zero time when the certificate does not expire.
	Expires time.Time
}

// Certify issues a certificate for a device. expires may be the zero time.
func (k *AccountKey) Certify(device DeviceID, name string, created, expires time.Time) ([]byte, error) {
	body := certBody{V: 1, Account: k.Public(), Device: device[:], Name: name, Created: created.Unix()}
	if !expires.IsZero() {
		body.Expires = expires.Unix()
	}
	if err := body.check(); err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	return sealSigned(k.priv, labelCertificate, body)
}

func (b *certBody) check() error {
	if b.V != 1 {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, b.V)
	}
	if err := checkLen("account", b.Account, ed25519.PublicKeySize); err != nil {
		return err
	}
	if err := checkLen("device", b.Device, ed25519.PublicKeySize); err != nil {
		return err
	}
	if len(b.Name) > MaxDeviceNameLen || !utf8.ValidString(b.Name) {
		return fmt.Errorf("%w: device name", ErrMalformed)
	}
	if b.Expires != 0 && b.Expires <= b.Created {
		return fmt.Errorf("%w: expiry not after creation", ErrMalformed)
	}
	return nil
}

// VerifyCertificate strictly decodes a certificate and checks the account
// root signature over it. The caller checks that Account is the account it
// expects and calls ValidAt for the time of use.
func VerifyCertificate(b []byte) (Certificate, error) {
	var body certBody
	raw, sig, err := openSigned(b, maxCertificateLen, &body)
	if err != nil {
		return Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	if err := body.check(); err != nil {
		return Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	if err := verify(body.Account, labelCertificate, raw, sig); err != nil {
		return Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	c := Certificate{
		Account: AccountID(body.Account),
		Device:  DeviceID(body.Device),
		Name:    body.Name,
		Created: time.Unix(body.Created, 0).UTC(),
	}
	if body.Expires != 0 {
		c.Expires = time.Unix(body.Expires, 0).UTC()
	}
	return c, nil
}

// ValidAt returns ErrExpired when t is at or after the expiry.
func (c Certificate) ValidAt(t time.Time) error {
	if !c.Expires.IsZero() && !t.Before(c.Expires) {
		return fmt.Errorf("certificate for device %s: %w", c.Device, ErrExpired)
	}
	return nil
}

const maxRevocationLen = 256

type revocationBody struct {
	_       struct{} `cbor:",toarray"`
	V       uint8
	Account []byte
	Device  []byte
	LastSeq uint64
	Cutoff  int64
	Created int64
}

// Revocation is an account root's statement that a device is no longer
// trusted. Blocks by the device with a sequence number above LastSeq, or
// timestamped after Cutoff, are rejected; blocks at or below both stay
// valid, so history written before the compromise is kept.
type Revocation struct {
	Account AccountID
	Device  DeviceID
	// LastSeq is the last per-device sequence number accepted.
	LastSeq uint64
	// Cutoff is the last block timestamp accepted.
	Cutoff  time.Time
	Created time.Time
}

// Revoke signs a revocation of device with the given cutoff.
func (k *AccountKey) Revoke(device DeviceID, lastSeq uint64, cutoff, created time.Time) ([]byte, error) {
	body := revocationBody{V: 1, Account: k.Public(), Device: device[:], LastSeq: lastSeq, Cutoff: cutoff.Unix(), Created: created.Unix()}
	return sealSigned(k.priv, labelRevocation, body)
}

// VerifyRevocation strictly decodes a revocation and checks the account
// root signature. The caller checks that Account is the expected account.
func VerifyRevocation(b []byte) (Revocation, error) {
	var body revocationBody
	raw, sig, err := openSigned(b, maxRevocationLen, &body)
	if err != nil {
		return Revocation{}, fmt.Errorf("revocation: %w", err)
	}
	if body.V != 1 {
		return Revocation{}, fmt.Errorf("revocation: %w: %d", ErrUnsupportedVersion, body.V)
	}
	if err := checkLen("account", body.Account, ed25519.PublicKeySize); err != nil {
		return Revocation{}, fmt.Errorf("revocation: %w", err)
	}
	if err := checkLen("device", body.Device, ed25519.PublicKeySize); err != nil {
		return Revocation{}, fmt.Errorf("revocation: %w", err)
	}
	if err := verify(body.Account, labelRevocation, raw, sig); err != nil {
		return Revocation{}, fmt.Errorf("revocation: %w", err)
	}
	return Revocation{
		Account: AccountID(body.Account),
		Device:  DeviceID(body.Device),
		LastSeq: body.LastSeq,
		Cutoff:  time.Unix(body.Cutoff, 0).UTC(),
		Created: time.Unix(body.Created, 0).UTC(),
	}, nil
}

// Accepts returns nil when a block by the revoked device with sequence
// number seq and timestamp ts falls inside the cutoff, and ErrRevoked
// otherwise. Both limits must hold: a thief can forge timestamps but not
// rewrite blocks the account already accepted below LastSeq.
func (r Revocation) Accepts(device DeviceID, seq uint64, ts time.Time) error {
	if device != r.Device {
		return nil
	}
	if seq > r.LastSeq || ts.After(r.Cutoff) {
		return fmt.Errorf("device %s seq %d: %w", device, seq, ErrRevoked)
	}
	return nil
}
