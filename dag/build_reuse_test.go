package dag

import (
	"bytes"
	"errors"
	"testing"
)

// reusingSealer seals every block into the same buffer, as the node's
// sealer does, and scribbles over it afterwards.
type reusingSealer struct {
	inner *testCipher
	buf   []byte
}

func (s *reusingSealer) Seal(inner []byte) (Sealed, error) {
	sealed, err := s.inner.Seal(inner)
	if err != nil {
		return Sealed{}, err
	}
	s.buf = append(s.buf[:0], sealed.Ciphertext...)
	sealed.Ciphertext = s.buf
	return sealed, nil
}

func (s *reusingSealer) scribble() {
	for i := range s.buf {
		s.buf[i] = 0xee
	}
}

// A block keeps its ciphertext inside its own envelope bytes: a sealer
// that reuses its buffer cannot change a block already built, at every
// byte-string head size of the envelope encoding.
func TestBuildKeepsNoSealerBuffer(t *testing.T) {
	s := &reusingSealer{inner: newTestCipher(3)}
	signer := testSigner(1)
	var chain ChainState
	longest := false
	for _, size := range []int{1, 23 - 16, 24, 255 - 16, 256, 4096, MaxInnerSize} {
		body := bytes.Repeat([]byte{'x'}, size)
		b, err := Build(BuildParams{Signer: signer, Sealer: s, Chain: chain, Body: body, Now: testEpoch})
		for errors.Is(err, ErrTooLarge) && size == MaxInnerSize && len(body) > 0 {
			body = body[:len(body)-1] // the largest body that fits
			b, err = Build(BuildParams{Signer: signer, Sealer: s, Chain: chain, Body: body, Now: testEpoch})
		}
		if err != nil {
			t.Fatalf("body of %d bytes: %v", size, err)
		}
		longest = longest || len(b.Envelope.Ciphertext) >= 1<<16
		chain = ChainState{Seq: b.Inner.Seq, Last: refOf(b)}
		want := bytes.Clone(b.Envelope.Ciphertext)
		env, err := b.EnvelopeBytes()
		if err != nil {
			t.Fatal(err)
		}
		s.scribble()
		if !bytes.Equal(b.Envelope.Ciphertext, want) {
			t.Fatalf("body of %d bytes: the block's ciphertext changed with the sealer's buffer", size)
		}
		dec, err := DecodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dec.Ciphertext, want) || EnvelopeCID(env) != b.CID {
			t.Fatalf("body of %d bytes: the envelope bytes do not hold the block's ciphertext", size)
		}
		if _, err := s.inner.Open(Sealed{Epoch: b.Envelope.Epoch, Nonce: b.Envelope.Nonce, Ciphertext: b.Envelope.Ciphertext}); err != nil {
			t.Fatalf("body of %d bytes: %v", size, err)
		}
	}
	if !longest {
		t.Fatal("no ciphertext needed the 5-byte byte-string head")
	}
}
