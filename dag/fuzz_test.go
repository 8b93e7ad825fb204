package dag

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

// checkAlloc fails when decoding b with fn allocates beyond a small
// multiple of b: a length claimed by untrusted bytes must never be trusted
// for sizing.
func checkAlloc(t *testing.T, what string, b []byte, fn func()) {
	t.Helper()
	alloccheck.Check(t, what, b, 8, fn)
}

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
	// Heads claiming huge containers and strings inside a valid prefix.
	f.Add([]byte{0xa4, 0x61, 'c', 0x5a, 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{0xaa, 0x61, 'a', 0x58, 0x20})
	f.Add([]byte{0xa9, 0x61, 'p', 0x9b, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

// FuzzDecodeEnvelope: untrusted envelopes never panic nor allocate beyond
// a small multiple of their size, and whatever decodes re-encodes to the
// same bytes (one block, one CID).
func FuzzDecodeEnvelope(f *testing.F) {
	fuzzSeeds(f, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Envelope
		var err error
		checkAlloc(t, "DecodeEnvelope", b, func() { e, err = DecodeEnvelope(b) })
		checkAlloc(t, "general envelope decoder", b, func() { _, _ = decodeEnvelopeCBOR(b) })
		if fe, ok := fastDecodeEnvelope(b); ok {
			se, serr := decodeEnvelopeCBOR(b)
			if serr != nil || !reflect.DeepEqual(fe, se) {
				t.Fatalf("fast path accepted what the general decoder refuses or reads differently: %v", serr)
			}
		}
		if err != nil {
			return
		}
		re, err := EncodeEnvelope(e)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("decoded envelope does not re-encode identically: %v", err)
		}
	})
}

// FuzzDecodeInner: untrusted inner blocks never panic nor allocate beyond
// a small multiple of their size, and whatever decodes re-encodes to the
// same bytes.
func FuzzDecodeInner(f *testing.F) {
	fuzzSeeds(f, true)
	f.Fuzz(func(t *testing.T, b []byte) {
		var in Inner
		var err error
		checkAlloc(t, "DecodeInner", b, func() { in, err = DecodeInner(b) })
		checkAlloc(t, "general inner decoder", b, func() { _, _ = decodeInnerCBOR(b) })
		if fi, ok := fastDecodeInner(b); ok {
			si, serr := decodeInnerCBOR(b)
			if serr != nil || !reflect.DeepEqual(fi, si) {
				t.Fatalf("fast path accepted what the general decoder refuses or reads differently: %v\n%+v\n%+v", serr, fi, si)
			}
		}
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
	f.Add(appendRecord(nil, &b.Inner, 1, b.envBytes, b.innerBytes, recordVersion))
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, rec []byte) {
		checkAlloc(t, "blockFromRecord", rec, func() {
			_, _, _, _ = parseRecord(rec)
			_, _ = blockFromRecord(rec, nil)
			_, _ = blockFromRecord(rec, testRecords{})
		})
	})
}

// TestFastDecodersAgree: the fast decoders accept every valid block the
// builder makes (with and without cert, prev, parents, body), read it
// exactly as the general decoder does, and refuse every one-byte
// corruption the general decoder refuses.
func TestFastDecodersAgree(t *testing.T) {
	cb := newChainBuilder(t)
	g, err := Build(BuildParams{Signer: testSigner(1), Sealer: cb.cipher, Cert: []byte("cert"), Body: []byte("g"), Now: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	blocks := []Block{g, cb.block(testSigner(2), refs(g), ""), cb.block(testSigner(3), nil, strings.Repeat("x", 300))}
	blocks = append(blocks, cb.block(testSigner(3), refs(blocks[1], g), "y"))
	neg, err := Build(BuildParams{Signer: testSigner(4), Sealer: cb.cipher, Body: []byte("old"), Now: time.UnixMilli(-5)})
	if err != nil {
		t.Fatal(err)
	}
	blocks = append(blocks, neg)
	for i, blk := range blocks {
		fe, ok := fastDecodeEnvelope(blk.envBytes)
		se, err := decodeEnvelopeCBOR(blk.envBytes)
		if !ok || err != nil || !reflect.DeepEqual(fe, se) {
			t.Fatalf("block %d: envelope fast %v general %v", i, ok, err)
		}
		fi, ok := fastDecodeInner(blk.innerBytes)
		si, err := decodeInnerCBOR(blk.innerBytes)
		if !ok || err != nil || !reflect.DeepEqual(fi, si) {
			t.Fatalf("block %d: inner fast %v general %v\n%+v\n%+v", i, ok, err, fi, si)
		}
		for _, enc := range [][]byte{blk.envBytes, blk.innerBytes} {
			for j := range enc {
				for _, d := range []byte{1, 0x20, 0x80} {
					mut := bytes.Clone(enc)
					mut[j] ^= d
					if _, ok := fastDecodeEnvelope(mut); ok {
						if _, err := decodeEnvelopeCBOR(mut); err != nil {
							t.Fatalf("block %d: fast envelope accepts a corruption at %d: %v", i, j, err)
						}
					}
					if _, ok := fastDecodeInner(mut); ok {
						if _, err := decodeInnerCBOR(mut); err != nil {
							t.Fatalf("block %d: fast inner accepts a corruption at %d: %v", i, j, err)
						}
					}
				}
			}
			for n := range len(enc) {
				if _, ok := fastDecodeEnvelope(enc[:n]); ok {
					t.Fatal("fast envelope accepts a truncation")
				}
				if _, ok := fastDecodeInner(enc[:n]); ok {
					t.Fatal("fast inner accepts a truncation")
				}
			}
		}
	}
}
