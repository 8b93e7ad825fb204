package dag

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"golang.org/x/crypto/chacha20poly1305"
)

// tb is the part of testing.TB that helpers need; *rapid.T has it too.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// testCipher is a fixed-key XChaCha20-Poly1305 cipher standing in for
// keyring. Nonces come from a counter so tests are deterministic. The
// header (envelope version, epoch id, nonce) is the associated data.
type testCipher struct {
	key   [32]byte
	epoch [EpochIDSize]byte
	ctr   uint64
}

func newTestCipher(seed byte) *testCipher {
	c := &testCipher{}
	c.key = sha256.Sum256([]byte{seed, 'k'})
	e := sha256.Sum256([]byte{seed, 'e'})
	copy(c.epoch[:], e[:])
	return c
}

func headerAD(epoch, nonce []byte) []byte {
	ad := []byte{EnvelopeVersion}
	ad = append(ad, epoch...)
	return append(ad, nonce...)
}

func (c *testCipher) Seal(inner []byte) (Sealed, error) {
	aead, err := chacha20poly1305.NewX(c.key[:])
	if err != nil {
		return Sealed{}, err
	}
	c.ctr++
	nonce := make([]byte, NonceSize)
	binary.BigEndian.PutUint64(nonce, c.ctr)
	nonce[23] = c.key[0] // differ between test ciphers
	epoch := c.epoch[:]
	return Sealed{Epoch: epoch, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, inner, headerAD(epoch, nonce))}, nil
}

func (c *testCipher) Open(s Sealed) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(c.key[:])
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, s.Nonce, s.Ciphertext, headerAD(s.Epoch, s.Nonce))
}

func testKey(seed byte) ed25519.PrivateKey {
	var s [32]byte
	s[0] = seed
	s[1] = 0x5e
	return ed25519.NewKeyFromSeed(s[:])
}

func testSigner(seed byte) Signer { return Ed25519Signer{Key: testKey(seed)} }

var testEpoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// chainBuilder builds blocks for tests outside a store, tracking each
// author's chain.
type chainBuilder struct {
	t      tb
	cipher *testCipher
	chains map[DeviceID]ChainState
	n      int
}

func newChainBuilder(t tb) *chainBuilder {
	return &chainBuilder{t: t, cipher: newTestCipher(1), chains: make(map[DeviceID]ChainState)}
}

func (cb *chainBuilder) block(signer Signer, parents []Ref, body string) Block {
	cb.t.Helper()
	id, _ := DeviceIDFromKey(signer.Public())
	chain := cb.chains[id]
	cb.n++
	b, err := Build(BuildParams{Signer: signer, Sealer: cb.cipher, Chain: chain, Parents: parents,
		Body: []byte(body), Now: testEpoch.Add(time.Duration(cb.n) * time.Millisecond)})
	if err != nil {
		cb.t.Fatalf("build: %v", err)
	}
	cb.chains[id] = ChainState{Seq: b.Inner.Seq, Last: refOf(b)}
	return b
}

func refOf(b Block) Ref {
	return Ref{CID: b.CID, Height: b.Inner.Height, Lamport: b.Inner.Lamport}
}

func refs(bs ...Block) []Ref {
	out := make([]Ref, len(bs))
	for i, b := range bs {
		out[i] = refOf(b)
	}
	return out
}

func newMapStore(t tb) (*Store, ds.Batching) {
	t.Helper()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	s, err := Open(context.Background(), d, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return s, d
}

func mustAdd(t tb, s *Store, dag DAGID, bs ...Block) AddResult {
	t.Helper()
	res, err := s.AddBatch(context.Background(), dag, "peer", bs)
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if len(res.Rejected) > 0 {
		t.Fatalf("add rejected: %v", res.Rejected[0].Err)
	}
	return res
}

func cids(bs []Block) []cid.Cid {
	out := make([]cid.Cid, len(bs))
	for i := range bs {
		out[i] = bs[i].CID
	}
	return out
}

// faults injects failures into batch commits and syncs: while fail is
// set they fail, after writing when afterWrite is set (like a crash after
// the write reached the disk but before the caller heard back).
type faults struct{ fail, afterWrite bool }

var errInjected = errors.New("injected failure")

// hook wraps a fast-path commit (pebbleKV.commitHook).
func (f *faults) hook(commit func() error) error {
	if !f.fail {
		return commit()
	}
	if f.afterWrite {
		if err := commit(); err != nil {
			return err
		}
	}
	return fmt.Errorf("commit: %w", errInjected)
}

// failingDS wraps a datastore (hiding its type, so the store uses the
// go-datastore path) and applies its faults to batch commits and syncs.
type failingDS struct {
	ds.Batching
	*faults
}

type failingBatch struct {
	ds.Batch
	f *failingDS
}

func (f *failingDS) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := f.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &failingBatch{Batch: b, f: f}, nil
}

func (b *failingBatch) Commit(ctx context.Context) error {
	if b.f.fail {
		if b.f.afterWrite {
			if err := b.Batch.Commit(ctx); err != nil {
				return err
			}
		}
		return fmt.Errorf("commit: %w", errInjected)
	}
	return b.Batch.Commit(ctx)
}

func (f *failingDS) Sync(ctx context.Context, k ds.Key) error {
	if f.fail {
		return fmt.Errorf("sync: %w", errInjected)
	}
	return f.Batching.Sync(ctx, k)
}
