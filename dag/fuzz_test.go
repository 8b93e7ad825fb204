package dag

import (
	"bytes"
	"testing"
)

func fuzzSeeds(f *testing.F, inner bool) {
	cb := newChainBuilder(f)
	a := cb.block(testSigner(1), nil, "seed")
	b := cb.block(testSigner(1), refs(a), "seed child")
	for _, blk := range []Block{a, b} {
		if inner {
			f.Add(blk.innerBytes)
		} else {
			f.Add(blk.envBytes)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0xbf, 0xff})
	f.Add([]byte{0xa1, 0x61, 'p', 0xd8, 0x2a, 0x41, 0x00})
	f.Add(bytes.Repeat([]byte{0x81}, 64))
	f.Add([]byte{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

// FuzzDecodeEnvelope: untrusted envelopes never panic, and whatever
// decodes re-encodes to the same bytes (one block, one CID).
func FuzzDecodeEnvelope(f *testing.F) {
	fuzzSeeds(f, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			return
		}
		re, err := EncodeEnvelope(e)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("decoded envelope does not re-encode identically: %v", err)
		}
	})
}

// FuzzDecodeInner: untrusted inner blocks never panic, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeInner(f *testing.F) {
	fuzzSeeds(f, true)
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeInner(b)
		if err != nil {
			return
		}
		re, err := EncodeInner(in)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("decoded inner block does not re-encode identically: %v", err)
		}
		_ = VerifySignature(in)
	})
}

// FuzzParseRecord: stored records are parsed defensively too.
func FuzzParseRecord(f *testing.F) {
	cb := newChainBuilder(f)
	a := cb.block(testSigner(1), nil, "seed")
	b := cb.block(testSigner(1), refs(a), "seed")
	f.Add(appendRecord(nil, &b.Inner, 1, b.envBytes, b.innerBytes))
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, rec []byte) {
		_, _, _, _ = parseRecord(rec)
		_, _ = blockFromRecord(rec)
	})
}
