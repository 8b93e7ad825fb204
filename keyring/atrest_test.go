package keyring

import (
	"bytes"
	"errors"
	"testing"
)

// A value sealed at rest opens only under its key and the name it was
// stored under: a swapped, tampered or truncated value is ErrAtRest.
func TestAtRestBindsKeyAndName(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	sealed, err := SealAtRest(key, "/pair/a", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenAtRest(key, "/pair/a", sealed); err != nil || string(got) != "secret" {
		t.Fatalf("open: %q, %v", got, err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for name, try := range map[string]func() ([]byte, error){
		"another name": func() ([]byte, error) { return OpenAtRest(key, "/pair/b", sealed) },
		"another key":  func() ([]byte, error) { return OpenAtRest(bytes.Repeat([]byte{8}, 32), "/pair/a", sealed) },
		"tampered":     func() ([]byte, error) { return OpenAtRest(key, "/pair/a", tampered) },
		"truncated":    func() ([]byte, error) { return OpenAtRest(key, "/pair/a", sealed[:10]) },
	} {
		if _, err := try(); !errors.Is(err, ErrAtRest) {
			t.Errorf("%s: %v, want ErrAtRest", name, err)
		}
	}
}
