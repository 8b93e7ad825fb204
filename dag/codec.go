package dag

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
)

// cidPrefix is the byte prefix of every link this format accepts: CIDv1
// (0x01), dag-cbor (0x71), sha2-256 (0x12), 32-byte digest (0x20).
var cidPrefix = [4]byte{0x01, CodecDagCBOR, 0x12, 0x20}

// cidLen is the byte length of such a CID.
const cidLen = len(cidPrefix) + sha256.Size

// tagCID is the CBOR tag DAG-CBOR uses for links.
const tagCID = 42

// link is the CBOR content of a tag-42 link: 0x00 (the multibase identity
// prefix DAG-CBOR requires) followed by the binary CID.
type link []byte

// wireEnvelope is the envelope's CBOR shape. Keys are one letter; DAG-CBOR
// orders map keys by length, then bytewise, so the fields are listed in
// that order (the encoder sorts anyway).
type wireEnvelope struct {
	Ciphertext []byte `cbor:"c"`
	Epoch      []byte `cbor:"e"`
	Nonce      []byte `cbor:"n"`
	Version    uint64 `cbor:"v"`
}

// wireInner is the inner block's CBOR shape, in canonical key order.
// "sig" sorts last, which lets the signing message be derived from the
// signed encoding by dropping the last entry.
type wireInner struct {
	Author  []byte `cbor:"a"`
	Body    []byte `cbor:"b"`
	Cert    []byte `cbor:"c,omitempty"`
	Height  uint64 `cbor:"h"`
	Lamport uint64 `cbor:"l"`
	Parents []link `cbor:"p"`
	Seq     uint64 `cbor:"s"`
	Time    int64  `cbor:"t"`
	Prev    link   `cbor:"pv,omitempty"`
	Sig     []byte `cbor:"sig,omitempty"`
}

// codec holds the immutable CBOR modes. They are built once; EncMode and
// DecMode are safe for concurrent use.
type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

var cbc = newCodec()

func newCodec() codec {
	tags := cbor.NewTagSet()
	if err := tags.Add(cbor.TagOptions{EncTag: cbor.EncTagRequired, DecTag: cbor.DecTagRequired},
		reflect.TypeFor[link](), tagCID); err != nil {
		panic(fmt.Sprintf("dag: register link tag: %v", err))
	}
	eo := cbor.CanonicalEncOptions() // length-first map key order, as DAG-CBOR
	eo.NilContainers = cbor.NilContainerAsEmpty
	enc, err := eo.EncModeWithTags(tags)
	if err != nil {
		panic(fmt.Sprintf("dag: cbor enc mode: %v", err))
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4, // map > array > tag > bytes
		MaxArrayElements:  MaxParents,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecModeWithTags(tags)
	if err != nil {
		panic(fmt.Sprintf("dag: cbor dec mode: %v", err))
	}
	return codec{enc: enc, dec: dec}
}

// classify maps a CBOR library error to this package's sentinels, keeping
// the library message for diagnosis.
func classify(what string, err error) error {
	var (
		dup  *cbor.DupMapKeyError
		ind  *cbor.IndefiniteLengthError
		unk  *cbor.UnknownFieldError
		nest *cbor.MaxNestedLevelError
		arr  *cbor.MaxArrayElementsError
		mp   *cbor.MaxMapPairsError
	)
	var precise error
	switch {
	case errors.As(err, &dup):
		precise = ErrDuplicateKey
	case errors.As(err, &ind):
		precise = ErrIndefiniteLength
	case errors.As(err, &unk):
		precise = ErrUnknownField
	case errors.As(err, &arr):
		precise = ErrTooManyParents
	case errors.As(err, &nest), errors.As(err, &mp):
		precise = ErrLimit
	}
	if precise != nil {
		return fmt.Errorf("%s: %w: %w: %v", what, ErrMalformed, precise, err)
	}
	return fmt.Errorf("%s: %w: %v", what, ErrMalformed, err)
}

// EnvelopeCID computes the CID of encoded envelope bytes: CIDv1, dag-cbor,
// sha2-256.
func EnvelopeCID(envelope []byte) cid.Cid {
	sum := sha256.Sum256(envelope)
	var raw [cidLen]byte
	copy(raw[:], cidPrefix[:])
	copy(raw[len(cidPrefix):], sum[:])
	c, err := cid.Cast(raw[:])
	if err != nil {
		// The prefix is a constant valid CID header; Cast cannot fail.
		panic(fmt.Sprintf("dag: cast constant-prefix cid: %v", err))
	}
	return c
}

// checkLink validates that c is a CID this format accepts as a link.
func checkLink(c cid.Cid) error {
	b := c.KeyString() // the binary CID, without copying
	if len(b) != cidLen || b[:len(cidPrefix)] != string(cidPrefix[:]) {
		return fmt.Errorf("%w: %s", ErrBadLink, c)
	}
	return nil
}

func toLink(c cid.Cid) link {
	b := c.Bytes()
	l := make(link, 1+len(b))
	copy(l[1:], b)
	return l
}

func fromLink(l link) (cid.Cid, error) {
	if len(l) != 1+cidLen || l[0] != 0x00 || !bytes.Equal(l[1:1+len(cidPrefix)], cidPrefix[:]) {
		return cid.Undef, fmt.Errorf("%w: %w: want 0x00 + CIDv1 dag-cbor sha2-256", ErrMalformed, ErrBadLink)
	}
	c, err := cid.Cast(l[1:])
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %w: %v", ErrMalformed, ErrBadLink, err)
	}
	return c, nil
}

func checkEnvelope(e Envelope) error {
	switch {
	case e.Version != EnvelopeVersion:
		return fmt.Errorf("envelope version %d: %w", e.Version, ErrUnsupportedVersion)
	case len(e.Epoch) != EpochIDSize:
		return fmt.Errorf("%w: epoch id has %d bytes, want %d", ErrMalformed, len(e.Epoch), EpochIDSize)
	case len(e.Nonce) != NonceSize:
		return fmt.Errorf("%w: nonce has %d bytes, want %d", ErrMalformed, len(e.Nonce), NonceSize)
	case len(e.Ciphertext) == 0:
		return fmt.Errorf("%w: empty ciphertext", ErrMalformed)
	case len(e.Ciphertext) > MaxCiphertextSize:
		return fmt.Errorf("ciphertext of %d bytes (max %d): %w", len(e.Ciphertext), MaxCiphertextSize, ErrTooLarge)
	}
	return nil
}

// EncodeEnvelope returns the canonical DAG-CBOR encoding of e.
func EncodeEnvelope(e Envelope) ([]byte, error) {
	if err := checkEnvelope(e); err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	b, err := cbc.enc.Marshal(wireEnvelope{Ciphertext: e.Ciphertext, Epoch: e.Epoch, Nonce: e.Nonce, Version: e.Version})
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	return b, nil
}

// envelopeCiphertext returns the n-byte ciphertext inside envelope bytes
// that EncodeEnvelope produced: the canonical map's first entry, "c"
// (0xa4 0x61 'c', then the byte-string head).
func envelopeCiphertext(b []byte, n int) []byte {
	head := 3
	switch {
	case n < 24:
		head++
	case n < 1<<8:
		head += 2
	case n < 1<<16:
		head += 3
	default:
		head += 5
	}
	return b[head : head+n : head+n]
}

// DecodeEnvelope decodes untrusted envelope bytes. It accepts only the
// canonical encoding, so that a block has exactly one CID.
func DecodeEnvelope(b []byte) (Envelope, error) {
	if e, ok := fastDecodeEnvelope(b); ok {
		return e, nil
	}
	return decodeEnvelopeCBOR(b)
}

// decodeEnvelopeCBOR is DecodeEnvelope through the general CBOR decoder
// and the re-encoding check; it explains what the fast path refuses.
func decodeEnvelopeCBOR(b []byte) (Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return Envelope{}, fmt.Errorf("decode envelope: %d bytes (max %d): %w", len(b), MaxEnvelopeSize, ErrTooLarge)
	}
	var w wireEnvelope
	if err := cbc.dec.Unmarshal(b, &w); err != nil {
		return Envelope{}, classify("decode envelope", err)
	}
	e := Envelope{Version: w.Version, Epoch: w.Epoch, Nonce: w.Nonce, Ciphertext: w.Ciphertext}
	if err := checkEnvelope(e); err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: %w", err)
	}
	re, err := cbc.enc.Marshal(w)
	if err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: re-encode: %w", err)
	}
	if !bytes.Equal(re, b) {
		return Envelope{}, fmt.Errorf("decode envelope: %w: %w", ErrMalformed, ErrNonCanonical)
	}
	return e, nil
}

// checkInner validates everything about an inner block that needs no other
// block: field sizes, sequence/prev consistency, parent order and caps, and
// the height and Lamport clock of a block without links.
func checkInner(in *Inner, signed bool) error {
	switch {
	case in.Seq == 0:
		return fmt.Errorf("%w: seq 0 (sequence numbers start at 1)", ErrBadSeq)
	case in.Seq == 1 && in.Prev.Defined():
		return fmt.Errorf("%w: seq 1 with a prev link", ErrBadSeq)
	case in.Seq > 1 && !in.Prev.Defined():
		return fmt.Errorf("%w: seq %d without a prev link", ErrBadSeq, in.Seq)
	case len(in.Parents) > MaxParents:
		return fmt.Errorf("%d parents (max %d): %w", len(in.Parents), MaxParents, ErrTooManyParents)
	case in.Height == 0 || in.Lamport == 0:
		return fmt.Errorf("%w: height and lamport start at 1", ErrBadHeight)
	case len(in.Parents) == 0 && !in.Prev.Defined() && (in.Height != 1 || in.Lamport != 1):
		return fmt.Errorf("%w: a block without links has height and lamport 1", ErrBadHeight)
	case signed && len(in.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature has %d bytes, want %d", ErrMalformed, len(in.Sig), ed25519.SignatureSize)
	}
	if in.Prev.Defined() {
		if err := checkLink(in.Prev); err != nil {
			return fmt.Errorf("prev: %w", err)
		}
	}
	for i, p := range in.Parents {
		if err := checkLink(p); err != nil {
			return fmt.Errorf("parent %d: %w", i, err)
		}
		if i > 0 && in.Parents[i-1].KeyString() >= p.KeyString() {
			return fmt.Errorf("parent %d: %w", i, ErrBadParents)
		}
	}
	return nil
}

func toWireInner(in *Inner, withSig bool) wireInner {
	w := wireInner{
		Author:  in.Author[:],
		Body:    in.Body,
		Cert:    in.Cert,
		Height:  in.Height,
		Lamport: in.Lamport,
		Parents: make([]link, len(in.Parents)),
		Seq:     in.Seq,
		Time:    in.Time,
	}
	for i, p := range in.Parents {
		w.Parents[i] = toLink(p)
	}
	if in.Prev.Defined() {
		w.Prev = toLink(in.Prev)
	}
	if withSig {
		w.Sig = in.Sig
	}
	return w
}

// EncodeInner returns the canonical DAG-CBOR encoding of a signed inner
// block.
func EncodeInner(in Inner) ([]byte, error) {
	if err := checkInner(&in, true); err != nil {
		return nil, fmt.Errorf("encode inner: %w", err)
	}
	b, err := cbc.enc.Marshal(toWireInner(&in, true))
	if err != nil {
		return nil, fmt.Errorf("encode inner: %w", err)
	}
	if len(b) > MaxInnerSize {
		return nil, fmt.Errorf("encode inner: %d bytes (max %d): %w", len(b), MaxInnerSize, ErrTooLarge)
	}
	return b, nil
}

// SigningMessage returns the bytes a device signs for in: SignatureDomain
// followed by the canonical encoding of in without its signature field.
func SigningMessage(in Inner) ([]byte, error) {
	if err := checkInner(&in, false); err != nil {
		return nil, fmt.Errorf("signing message: %w", err)
	}
	enc, err := cbc.enc.Marshal(toWireInner(&in, false))
	if err != nil {
		return nil, fmt.Errorf("signing message: %w", err)
	}
	msg := make([]byte, 0, len(SignatureDomain)+len(enc))
	return append(append(msg, SignatureDomain...), enc...), nil
}

// DecodeInner decodes untrusted inner-block bytes (the plaintext from an
// Opener). It accepts only the canonical encoding and checks structure
// (see checkInner) but not the signature; use VerifySignature.
func DecodeInner(b []byte) (Inner, error) {
	if in, ok := fastDecodeInner(b); ok {
		return in, nil
	}
	return decodeInnerCBOR(b)
}

// decodeInnerCBOR is DecodeInner through the general CBOR decoder and the
// re-encoding check; it explains what the fast path refuses.
func decodeInnerCBOR(b []byte) (Inner, error) {
	if len(b) > MaxInnerSize {
		return Inner{}, fmt.Errorf("decode inner: %d bytes (max %d): %w", len(b), MaxInnerSize, ErrTooLarge)
	}
	var w wireInner
	if err := cbc.dec.Unmarshal(b, &w); err != nil {
		return Inner{}, classify("decode inner", err)
	}
	if len(w.Author) != len(DeviceID{}) {
		return Inner{}, fmt.Errorf("decode inner: %w: author has %d bytes, want 32", ErrMalformed, len(w.Author))
	}
	in := Inner{
		Seq:     w.Seq,
		Height:  w.Height,
		Lamport: w.Lamport,
		Time:    w.Time,
		Cert:    w.Cert,
		Body:    w.Body,
		Sig:     w.Sig,
		Parents: make([]cid.Cid, len(w.Parents)),
	}
	copy(in.Author[:], w.Author)
	var err error
	for i, l := range w.Parents {
		if in.Parents[i], err = fromLink(l); err != nil {
			return Inner{}, fmt.Errorf("decode inner: parent %d: %w", i, err)
		}
	}
	if w.Prev != nil {
		if in.Prev, err = fromLink(w.Prev); err != nil {
			return Inner{}, fmt.Errorf("decode inner: prev: %w", err)
		}
	}
	if err := checkInner(&in, true); err != nil {
		return Inner{}, fmt.Errorf("decode inner: %w", err)
	}
	re, err := cbc.enc.Marshal(w)
	if err != nil {
		return Inner{}, fmt.Errorf("decode inner: re-encode: %w", err)
	}
	if !bytes.Equal(re, b) {
		return Inner{}, fmt.Errorf("decode inner: %w: %w", ErrMalformed, ErrNonCanonical)
	}
	return in, nil
}

// VerifySignature checks in.Sig against in.Author over SigningMessage(in).
func VerifySignature(in Inner) error {
	msg, err := SigningMessage(in)
	if err != nil {
		return err
	}
	if !ed25519.Verify(in.Author[:], msg, in.Sig) {
		return fmt.Errorf("block by %s seq %d: %w", in.Author, in.Seq, ErrBadSignature)
	}
	return nil
}

// OpenBlock decodes untrusted envelope bytes, computes the CID, opens the
// ciphertext with o and decodes the inner block. It does not verify the
// signature: call VerifySignature, or PlanVerification for a batch.
func OpenBlock(envelope []byte, o Opener) (Block, error) {
	env, err := DecodeEnvelope(envelope)
	if err != nil {
		return Block{}, err
	}
	c := EnvelopeCID(envelope)
	plain, err := o.Open(env.Sealed())
	if err != nil {
		return Block{}, fmt.Errorf("open block %s: %w", c, err)
	}
	in, err := DecodeInner(plain)
	if err != nil {
		return Block{}, fmt.Errorf("block %s: %w", c, err)
	}
	return Block{CID: c, Envelope: env, Inner: in, envBytes: envelope, innerBytes: plain}, nil
}
