package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Limits on rendezvous records. A record carries a device's current
// addresses, sealed for its contacts; a few KiB is ample, and every DHT
// server stores what it is given, so the cap protects them.
const (
	MaxRendezvousPayload = 4 << 10
	MaxRendezvousTTL     = 48 * time.Hour
	maxRendezvousRecord  = MaxRendezvousPayload + 256
)

// Errors returned by the rendezvous record validator.
var (
	ErrRecordMalformed = errors.New("rendezvous record: malformed")
	ErrRecordKey       = errors.New("rendezvous record: key does not match signing key")
	ErrRecordSignature = errors.New("rendezvous record: bad signature")
	ErrRecordExpired   = errors.New("rendezvous record: expired")
	ErrRecordTTL       = errors.New("rendezvous record: expiry too far in the future")
)

// RendezvousRecord is a signed, self-certifying DHT record. Its key is
// derived from its public key (see RendezvousKey), so only the holder of the
// private key can write under that key; the private key itself is derived by
// the two contacts from their shared secret and the day, so an observer of
// the DHT sees unlinkable keys and opaque payloads.
type RendezvousRecord struct {
	Seq     uint64 `cbor:"1,keyasint"` // higher replaces lower
	Expires int64  `cbor:"2,keyasint"` // unix seconds
	Payload []byte `cbor:"3,keyasint"` // sealed for the contacts; opaque here
	PubKey  []byte `cbor:"4,keyasint"` // ed25519, 32 bytes
	Sig     []byte `cbor:"5,keyasint"` // ed25519 over SigningBytes
}

var (
	recEnc cbor.EncMode
	recDec cbor.DecMode
)

func init() {
	var err error
	if recEnc, err = cbor.CanonicalEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if recDec, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// RendezvousKey returns the DHT key ("/glitr-rv/<hex>") that a record signed
// by pub must be stored under.
func RendezvousKey(pub ed25519.PublicKey) string {
	h := sha256.New()
	h.Write([]byte(Label("rendezvous-key")))
	h.Write(pub)
	return "/" + RendezvousNamespace + "/" + hex.EncodeToString(h.Sum(nil))
}

// SigningBytes returns the domain-separated message the record's signature
// covers: the label, the DHT key, and the canonical encoding of every field
// but the signature.
func (r RendezvousRecord) SigningBytes(key string) ([]byte, error) {
	r.Sig = nil
	body, err := recEnc.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode rendezvous record: %w", err)
	}
	var b bytes.Buffer
	b.WriteString(Label("rendezvous"))
	b.WriteByte(0)
	b.WriteString(key)
	b.WriteByte(0)
	b.Write(body)
	return b.Bytes(), nil
}

// SignRendezvous builds and signs a record for priv, returning its key and
// encoded bytes.
func SignRendezvous(priv ed25519.PrivateKey, seq uint64, expires time.Time, payload []byte) (key string, rec []byte, err error) {
	if len(payload) > MaxRendezvousPayload {
		return "", nil, fmt.Errorf("%w: payload %d bytes > %d", ErrRecordMalformed, len(payload), MaxRendezvousPayload)
	}
	pub := priv.Public().(ed25519.PublicKey)
	key = RendezvousKey(pub)
	r := RendezvousRecord{Seq: seq, Expires: expires.Unix(), Payload: payload, PubKey: pub}
	msg, err := r.SigningBytes(key)
	if err != nil {
		return "", nil, err
	}
	r.Sig = ed25519.Sign(priv, msg)
	rec, err = recEnc.Marshal(r)
	if err != nil {
		return "", nil, fmt.Errorf("encode rendezvous record: %w", err)
	}
	return key, rec, nil
}

// DecodeRendezvous parses untrusted record bytes without checking the
// signature.
func DecodeRendezvous(b []byte) (RendezvousRecord, error) {
	var r RendezvousRecord
	if len(b) > maxRendezvousRecord {
		return r, fmt.Errorf("%w: %d bytes > %d", ErrRecordMalformed, len(b), maxRendezvousRecord)
	}
	if err := recDec.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrRecordMalformed, err)
	}
	switch {
	case len(r.PubKey) != ed25519.PublicKeySize:
		return r, fmt.Errorf("%w: public key is %d bytes", ErrRecordMalformed, len(r.PubKey))
	case len(r.Sig) != ed25519.SignatureSize:
		return r, fmt.Errorf("%w: signature is %d bytes", ErrRecordMalformed, len(r.Sig))
	case len(r.Payload) > MaxRendezvousPayload:
		return r, fmt.Errorf("%w: payload %d bytes > %d", ErrRecordMalformed, len(r.Payload), MaxRendezvousPayload)
	}
	// One record, one encoding: a re-encoded record must match, so that
	// nobody can make the same record look different to DHT servers.
	again, err := recEnc.Marshal(r)
	if err != nil || !bytes.Equal(again, b) {
		return r, fmt.Errorf("%w: not canonical CBOR", ErrRecordMalformed)
	}
	return r, nil
}

// RendezvousValidator is the DHT record validator for RendezvousNamespace.
// It implements go-libp2p-record's Validator interface.
type RendezvousValidator struct {
	// Now returns the current time; nil means time.Now. Injected so tests
	// can check expiry without sleeping.
	Now func() time.Time
}

func (v RendezvousValidator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Validate checks that val is a well-formed record, signed by the key that
// key names, and neither expired nor valid for longer than MaxRendezvousTTL.
func (v RendezvousValidator) Validate(key string, val []byte) error {
	if !strings.HasPrefix(key, "/"+RendezvousNamespace+"/") {
		return fmt.Errorf("%w: key outside namespace %q", ErrRecordMalformed, RendezvousNamespace)
	}
	r, err := DecodeRendezvous(val)
	if err != nil {
		return err
	}
	if RendezvousKey(r.PubKey) != key {
		return ErrRecordKey
	}
	msg, err := r.SigningBytes(key)
	if err != nil {
		return err
	}
	if !ed25519.Verify(r.PubKey, msg, r.Sig) {
		return ErrRecordSignature
	}
	now := v.now()
	exp := time.Unix(r.Expires, 0)
	if !exp.After(now) {
		return fmt.Errorf("%w at %s", ErrRecordExpired, exp.UTC().Format(time.RFC3339))
	}
	if exp.Sub(now) > MaxRendezvousTTL {
		return fmt.Errorf("%w: %s", ErrRecordTTL, exp.Sub(now).Round(time.Second))
	}
	return nil
}

// Select picks the best of several valid records for one key: the highest
// sequence number, then the latest expiry, then the smallest encoding, so
// every DHT server makes the same choice.
func (v RendezvousValidator) Select(key string, vals [][]byte) (int, error) {
	best := -1
	var bestRec RendezvousRecord
	for i, val := range vals {
		if v.Validate(key, val) != nil {
			continue
		}
		r, _ := DecodeRendezvous(val)
		if best < 0 || better(r, val, bestRec, vals[best]) {
			best, bestRec = i, r
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: no valid record among %d", ErrRecordMalformed, len(vals))
	}
	return best, nil
}

func better(a RendezvousRecord, araw []byte, b RendezvousRecord, braw []byte) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	if a.Expires != b.Expires {
		return a.Expires > b.Expires
	}
	return bytes.Compare(araw, braw) < 0
}
