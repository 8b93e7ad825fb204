package keyring

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// SealAtRest encrypts a value the node keeps in its store (key state,
// conversation secrets) under the store key from the keyring, bound to the
// datastore key it is stored under so values cannot be swapped.
func SealAtRest(key []byte, name string, plain []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(plain)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return aead.Seal(out, out, plain, []byte("glitr/v1/at-rest\x00"+name)), nil
}

// ErrAtRest: a stored secret does not open.
var ErrAtRest = errors.New("stored secret does not decrypt (wrong keyring or tampered store)")

// OpenAtRest opens what SealAtRest sealed under the same key and name.
func OpenAtRest(key []byte, name string, sealed []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < chacha20poly1305.NonceSizeX+aead.Overhead() {
		return nil, fmt.Errorf("%s: %w", name, ErrAtRest)
	}
	n := chacha20poly1305.NonceSizeX
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte("glitr/v1/at-rest\x00"+name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrAtRest)
	}
	return plain, nil
}

// RecordCipher seals inner blocks at rest in the block store
// (dag.Options.Records), under a key derived from the store key. The nonce
// is derived from the envelope, which names the block: a block's inner
// bytes never change, so a nonce is never used for two plaintexts, and
// none is stored. The envelope is the associated data, so a sealed inner
// block moved under another block does not open.
type RecordCipher struct{ aead cipher.AEAD }

// NewRecordCipher returns the record cipher of a store key.
func NewRecordCipher(storeKey []byte) (RecordCipher, error) {
	k, err := hkdf.Key(sha256.New, storeKey, nil, "glitr/v1/block-record", chacha20poly1305.KeySize)
	if err != nil {
		return RecordCipher{}, err
	}
	aead, err := chacha20poly1305.New(k)
	if err != nil {
		return RecordCipher{}, err
	}
	return RecordCipher{aead: aead}, nil
}

func recordNonce(env []byte) []byte {
	sum := sha256.Sum256(env)
	return sum[:chacha20poly1305.NonceSize]
}

// SealInner appends inner, sealed and bound to env, to dst.
func (r RecordCipher) SealInner(dst, env, inner []byte) []byte {
	return r.aead.Seal(dst, recordNonce(env), inner, env)
}

// OpenInner opens what SealInner sealed under the same env.
func (r RecordCipher) OpenInner(env, sealed []byte) ([]byte, error) {
	plain, err := r.aead.Open(nil, recordNonce(env), sealed, env)
	if err != nil {
		return nil, ErrAtRest
	}
	return plain, nil
}

// Overhead is the bytes SealInner adds (the tag).
func (r RecordCipher) Overhead() int { return r.aead.Overhead() }
