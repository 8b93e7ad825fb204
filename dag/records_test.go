package dag

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"golang.org/x/crypto/chacha20poly1305"
)

// testRecords is a RecordCipher for tests: ChaCha20-Poly1305 under a fixed
// key, nonce from the envelope, the envelope as associated data (what
// keyring.RecordCipher does).
type testRecords struct{}

func (testRecords) aead() interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
} {
	a, _ := chacha20poly1305.New(bytes.Repeat([]byte{7}, chacha20poly1305.KeySize))
	return a
}

func recordsNonce(env []byte) []byte { s := sha256.Sum256(env); return s[:12] }

func (r testRecords) SealInner(dst, env, inner []byte) []byte {
	return r.aead().Seal(dst, recordsNonce(env), inner, env)
}
func (r testRecords) OpenInner(env, sealed []byte) ([]byte, error) {
	return r.aead().Open(nil, recordsNonce(env), sealed, env)
}
func (testRecords) Overhead() int { return 16 }

// With a record cipher the store holds no inner block in the clear: the
// body of every block is sealed at rest, reads open it, and a store opened
// without the cipher (a thief without the keyring) cannot rebuild a block.
// Records written before stay readable.
func TestRecordsSealedAtRest(t *testing.T) {
	ctx := context.Background()
	raw := dssync.MutexWrap(ds.NewMapDatastore())
	opts := DefaultOptions()
	opts.Records = testRecords{}
	s, err := Open(ctx, raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	cb := newChainBuilder(t)
	secret := "a very secret body, plain inside the inner block"
	a := cb.block(testSigner(1), nil, secret)
	b := cb.block(testSigner(1), refs(a), secret+" again")
	id := DAGID("sealed")
	for _, blk := range []Block{a, b} {
		if _, err := s.Add(ctx, id, "test", blk); err != nil {
			t.Fatal(err)
		}
	}
	res, err := raw.Query(ctx, dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for e := range res.Next() {
		if bytes.Contains(e.Value, []byte("very secret")) {
			t.Fatalf("%s holds the body in the clear", e.Key)
		}
	}
	got, err := s.Get(ctx, id, b.CID)
	if err != nil || !bytes.Equal(got.Inner.Body, b.Inner.Body) {
		t.Fatalf("read back %q, %v", got.Inner.Body, err)
	}
	n := 0
	for blk, err := range s.Blocks(ctx, id, Position{}, false) {
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(blk.Inner.Body, []byte("very secret")) {
			t.Fatalf("block %s read back wrong", blk.CID)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d blocks read back", n)
	}
	thief, err := Open(ctx, raw, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := thief.Get(ctx, id, b.CID); !errors.Is(err, errBadRecord) {
		t.Fatalf("a store without the cipher read a sealed block: %v", err)
	}
	// A record written in the clear (before the store had a cipher)
	// still reads with one.
	c := cb.block(testSigner(2), nil, "from before")
	if _, err := thief.Add(ctx, id, "test", c); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, id, c.CID); err != nil || string(got.Inner.Body) != string(c.Inner.Body) {
		t.Fatalf("an old record: %q, %v", got.Inner.Body, err)
	}
	// A sealed inner block under another envelope does not open.
	envB, _ := b.EnvelopeBytes()
	envA, _ := a.EnvelopeBytes()
	innerB, _ := b.InnerBytes()
	sealed := testRecords{}.SealInner(nil, envB, innerB)
	if _, err := (testRecords{}).OpenInner(envA, sealed); err == nil {
		t.Fatal("a sealed inner block opened under another block's envelope")
	}
}
