package keyring

import (
	"crypto/rand"
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
