package dag

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// kv is one raw map entry for hand-built CBOR.
type kv struct {
	k string
	v []byte // encoded value
}

func rawMap(entries ...kv) []byte {
	out := []byte{0xa0 | byte(len(entries))}
	for _, e := range entries {
		out = append(out, 0x60|byte(len(e.k)))
		out = append(out, e.k...)
		out = append(out, e.v...)
	}
	return out
}

func enc(t tb, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sampleEnvelope() Envelope {
	return Envelope{
		Version:    EnvelopeVersion,
		Epoch:      bytes.Repeat([]byte{0xe1}, EpochIDSize),
		Nonce:      bytes.Repeat([]byte{0x11}, NonceSize),
		Ciphertext: []byte("ciphertext bytes"),
	}
}

func envEntries(t tb, e Envelope) []kv {
	return []kv{{"c", enc(t, e.Ciphertext)}, {"e", enc(t, e.Epoch)}, {"n", enc(t, e.Nonce)}, {"v", enc(t, e.Version)}}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	e := sampleEnvelope()
	b, err := EncodeEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, rawMap(envEntries(t, e)...)) {
		t.Fatalf("encoding is not the canonical hand-built map:\n%x", b)
	}
	got, err := DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != e.Version || !bytes.Equal(got.Epoch, e.Epoch) || !bytes.Equal(got.Nonce, e.Nonce) || !bytes.Equal(got.Ciphertext, e.Ciphertext) {
		t.Fatalf("round trip: got %+v want %+v", got, e)
	}
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	e := sampleEnvelope()
	good := envEntries(t, e)
	valid := rawMap(good...)
	indef := append([]byte{0xbf}, valid[1:]...)
	indef = append(indef, 0xff)
	nonMinimal := rawMap(good[0], good[1], good[2], kv{"v", []byte{0x18, 0x01}})
	indefBytes := rawMap(kv{"c", []byte{0x5f, 0x41, 'a', 0xff}}, good[1], good[2], good[3])
	tests := []struct {
		name string
		in   []byte
		want []error
	}{
		{"empty", nil, []error{ErrMalformed}},
		{"not a map", enc(t, []int{1}), []error{ErrMalformed}},
		{"trailing bytes", append(slices.Clone(valid), 0x00), []error{ErrMalformed}},
		{"duplicate key", rawMap(good[0], good[1], good[2], good[3], good[3]), []error{ErrMalformed, ErrDuplicateKey}},
		{"indefinite map", indef, []error{ErrMalformed, ErrIndefiniteLength}},
		{"indefinite bytes", indefBytes, []error{ErrMalformed, ErrIndefiniteLength}},
		{"unknown field", rawMap(append(slices.Clone(good), kv{"x", enc(t, 1)})...), []error{ErrMalformed, ErrUnknownField}},
		{"key order", rawMap(good[3], good[0], good[1], good[2]), []error{ErrMalformed, ErrNonCanonical}},
		{"non-minimal int", nonMinimal, []error{ErrMalformed, ErrNonCanonical}},
		{"version 2", rawMap(good[0], good[1], good[2], kv{"v", enc(t, 2)}), []error{ErrUnsupportedVersion}},
		{"short epoch", rawMap(good[0], kv{"e", enc(t, []byte{1})}, good[2], good[3]), []error{ErrMalformed}},
		{"short nonce", rawMap(good[0], good[1], kv{"n", enc(t, []byte{1})}, good[3]), []error{ErrMalformed}},
		{"missing nonce", rawMap(good[0], good[1], good[3]), []error{ErrMalformed}},
		{"text ciphertext", rawMap(kv{"c", enc(t, "text")}, good[1], good[2], good[3]), []error{ErrMalformed}},
		{"oversized input", make([]byte, MaxEnvelopeSize+1), []error{ErrTooLarge}},
		{"oversized ciphertext", rawMap(kv{"c", enc(t, make([]byte, MaxCiphertextSize+1))}, good[1], good[2], good[3]), []error{ErrTooLarge}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeEnvelope(tc.in)
			if err == nil {
				t.Fatal("decoded invalid input")
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q is not %q", err, w)
				}
			}
		})
	}
}

func sampleInner(t tb) Inner {
	cb := newChainBuilder(t)
	a := cb.block(testSigner(1), nil, "a")
	b := cb.block(testSigner(2), nil, "b")
	c := cb.block(testSigner(1), refs(a, b), "c")
	return c.Inner
}

func TestInnerRoundTripAndSignature(t *testing.T) {
	in := sampleInner(t)
	b, err := EncodeInner(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeInner(b)
	if err != nil {
		t.Fatal(err)
	}
	re, err := EncodeInner(got)
	if err != nil || !bytes.Equal(re, b) {
		t.Fatalf("re-encode differs: %v", err)
	}
	if got.Author != in.Author || got.Seq != 2 || got.Prev != in.Prev || len(got.Parents) != 2 || got.Height != 2 || got.Lamport != 2 || got.Time != in.Time {
		t.Fatalf("round trip mismatch: %+v", got)
	}
	if err := VerifySignature(got); err != nil {
		t.Fatal(err)
	}
	// The signing message is the signed encoding without the "sig" entry.
	msg, err := SigningMessage(got)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := slices.Clone(b[:len(b)-(4+2+64)])
	unsigned[0]--
	if !bytes.Equal(msg, append([]byte(SignatureDomain), unsigned...)) {
		t.Fatal("signing message is not domain || encoding without sig")
	}
	for _, mut := range []func(*Inner){
		func(in *Inner) { in.Body = []byte("changed") },
		func(in *Inner) { in.Seq++ },
		func(in *Inner) { in.Time++ },
		func(in *Inner) { in.Parents = in.Parents[:1] },
		func(in *Inner) { in.Author[0] ^= 1 },
	} {
		m := got
		m.Author = got.Author
		m.Parents = slices.Clone(got.Parents)
		mut(&m)
		if err := VerifySignature(m); !errors.Is(err, ErrBadSignature) {
			t.Errorf("mutated block verified: %v", err)
		}
	}
}

func TestDecodeInnerRejects(t *testing.T) {
	in := sampleInner(t)
	w := toWireInner(&in, true)
	em := cbc.enc
	mk := func(mut func(*wireInner)) []byte {
		w2 := w
		w2.Parents = slices.Clone(w.Parents)
		mut(&w2)
		b, err := em.Marshal(w2)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	parent := func(i int) link {
		sum := make([]byte, 32)
		sum[0] = byte(i)
		mh, _ := multihash.Encode(sum, multihash.SHA2_256)
		return toLink(cid.NewCidV1(CodecDagCBOR, mh))
	}
	v0, _ := multihash.Sum([]byte("x"), multihash.SHA2_256, -1)
	rawCodec, _ := multihash.Sum([]byte("x"), multihash.SHA2_256, -1)
	valid := mk(func(*wireInner) {})
	tests := []struct {
		name string
		in   []byte
		want []error
	}{
		{"17 parents", mk(func(w *wireInner) {
			w.Parents = nil
			for i := range 17 {
				w.Parents = append(w.Parents, parent(i))
			}
		}), []error{ErrMalformed, ErrTooManyParents}},
		{"unsorted parents", mk(func(w *wireInner) { w.Parents = []link{parent(2), parent(1)} }), []error{ErrBadParents}},
		{"duplicate parents", mk(func(w *wireInner) { w.Parents = []link{parent(1), parent(1)} }), []error{ErrBadParents}},
		{"cidv0 link", mk(func(w *wireInner) { w.Parents = []link{append(link{0}, cid.NewCidV0(v0).Bytes()...)} }), []error{ErrBadLink}},
		{"raw codec link", mk(func(w *wireInner) { w.Parents = []link{append(link{0}, cid.NewCidV1(cid.Raw, rawCodec).Bytes()...)} }), []error{ErrBadLink}},
		{"link without 0x00", mk(func(w *wireInner) { w.Parents = []link{parent(1)[1:]} }), []error{ErrBadLink}},
		{"short author", mk(func(w *wireInner) { w.Author = w.Author[:31] }), []error{ErrMalformed}},
		{"short sig", mk(func(w *wireInner) { w.Sig = w.Sig[:63] }), []error{ErrMalformed}},
		{"no sig", mk(func(w *wireInner) { w.Sig = nil }), []error{ErrMalformed}},
		{"seq 0", mk(func(w *wireInner) { w.Seq = 0 }), []error{ErrBadSeq}},
		{"seq 2 without prev", mk(func(w *wireInner) { w.Prev = nil }), []error{ErrBadSeq}},
		{"seq 1 with prev", mk(func(w *wireInner) { w.Seq = 1 }), []error{ErrBadSeq}},
		{"root height 2", mk(func(w *wireInner) { w.Seq, w.Prev, w.Parents = 1, nil, nil }), []error{ErrBadHeight}},
		{"height 0", mk(func(w *wireInner) { w.Height = 0 }), []error{ErrBadHeight}},
		{"empty cert present", mk(func(w *wireInner) {}) /* replaced below */, nil},
		{"duplicate key", append([]byte{valid[0] + 1}, append(slices.Clone(valid[1:]), 0x61, 's', 0x01)...), []error{ErrMalformed, ErrDuplicateKey}},
		{"oversized", make([]byte, MaxInnerSize+1), []error{ErrTooLarge}},
		{"deep nesting", bytes.Repeat([]byte{0x81}, 100), []error{ErrMalformed, ErrLimit}},
	}
	// An explicitly empty optional field re-encodes without it: non-canonical.
	withEmptyCert := append([]byte{valid[0] + 1}, valid[1:]...)
	withEmptyCert = append(withEmptyCert, 0x61, 'c', 0x40)
	tests[14] = struct {
		name string
		in   []byte
		want []error
	}{"empty cert present", withEmptyCert, []error{ErrMalformed}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeInner(tc.in)
			if err == nil {
				t.Fatal("decoded invalid input")
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q is not %q", err, w)
				}
			}
		})
	}
}

func TestEnvelopeCIDMatchesGoCID(t *testing.T) {
	b, err := EncodeEnvelope(sampleEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	want, err := cid.Prefix{Version: 1, Codec: CodecDagCBOR, MhType: multihash.SHA2_256, MhLength: -1}.Sum(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := EnvelopeCID(b); got != want {
		t.Fatalf("cid %s, go-cid says %s", got, want)
	}
	if !strings.HasPrefix(want.String(), "bafyrei") {
		t.Fatalf("unexpected cid string %s", want)
	}
}

func TestOpenBlockWrongKeyAndTamper(t *testing.T) {
	cb := newChainBuilder(t)
	b := cb.block(testSigner(1), nil, "hello")
	env, _ := b.EnvelopeBytes()
	got, err := OpenBlock(env, cb.cipher)
	if err != nil {
		t.Fatal(err)
	}
	if got.CID != b.CID || string(got.Inner.Body) != "hello" {
		t.Fatalf("open: %+v", got)
	}
	if _, err := OpenBlock(env, newTestCipher(9)); err == nil {
		t.Fatal("opened with the wrong key")
	}
	// Changing the epoch id (bound as associated data) breaks opening.
	e2 := b.Envelope
	e2.Epoch = bytes.Repeat([]byte{7}, EpochIDSize)
	env2, _ := EncodeEnvelope(e2)
	if _, err := OpenBlock(env2, cb.cipher); err == nil {
		t.Fatal("opened with a swapped header")
	}
}

func TestPack7(t *testing.T) {
	for n := range 50 {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i*37 + n)
		}
		p := pack7(nil, src)
		if len(p) != packedLen(n) || bytes.ContainsAny(p, "/.") {
			t.Fatalf("n=%d: bad packing %x", n, p)
		}
		got, ok := unpack7(p, n)
		if !ok || !bytes.Equal(got, src) {
			t.Fatalf("n=%d: round trip failed", n)
		}
	}
	a, b := []byte{0x00, 0xff, 0x10}, []byte{0x01, 0x00, 0x00}
	if bytes.Compare(pack7(nil, a), pack7(nil, b)) >= 0 {
		t.Fatal("pack7 does not preserve order")
	}
}
