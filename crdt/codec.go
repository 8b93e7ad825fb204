package crdt

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
)

// BodyVersion is the version of the body encoding. New op kinds do not
// need a new version (unknown kinds are ignored); a change of the framing
// or of an existing kind's meaning does.
const BodyVersion = 1

// codec holds the CBOR modes. They are immutable after construction, so a
// package-level value is safe: it is configuration, not mutable state.
var codec = newCodec()

type codecModes struct {
	enc    cbor.EncMode
	dec    cbor.DecMode // framing and unknown payloads
	strict cbor.DecMode // known payloads: unknown fields are errors
}

func newCodec() codecModes {
	eo := cbor.CanonicalEncOptions() // length-first key order, as DAG-CBOR
	eo.ByteArray = cbor.ByteArrayToByteSlice
	eo.NilContainers = cbor.NilContainerAsEmpty
	enc, err := eo.EncMode()
	if err != nil {
		panic(err) // static options; unreachable
	}
	do := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: MaxRecipients + MaxPositionLen, // every list is re-checked per kind
		MaxMapPairs:      16,
		UTF8:             cbor.UTF8RejectInvalid,
	}
	dec, err := do.DecMode()
	if err != nil {
		panic(err)
	}
	do.ExtraReturnErrors = cbor.ExtraDecErrorUnknownField
	strict, err := do.DecMode()
	if err != nil {
		panic(err)
	}
	return codecModes{enc: enc, dec: dec, strict: strict}
}

type wireBody struct {
	_   struct{} `cbor:",toarray"`
	V   uint64
	Ops []wireOp
}

type wireOp struct {
	_ struct{} `cbor:",toarray"`
	K uint64
	P cbor.RawMessage
}

type wireMsgID struct {
	_ struct{} `cbor:",toarray"`
	C []byte
	I uint16
}

// MarshalCBOR encodes the id as [cid bytes, op index].
func (m MsgID) MarshalCBOR() ([]byte, error) {
	if !m.Event.Defined() {
		return nil, fmt.Errorf("message id: undefined event")
	}
	return codec.enc.Marshal(wireMsgID{C: m.Event.Bytes(), I: m.Index})
}

// UnmarshalCBOR decodes [cid bytes, op index].
func (m *MsgID) UnmarshalCBOR(b []byte) error {
	var w wireMsgID
	if err := codec.strict.Unmarshal(b, &w); err != nil {
		return err
	}
	c, err := castCID(w.C)
	if err != nil {
		return err
	}
	*m = MsgID{Event: c, Index: w.I}
	return nil
}

func castCID(b []byte) (cid.Cid, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("cid: %w", err)
	}
	return c, nil
}

func decodeAs[T Op](raw []byte) (Op, bool, error) {
	var v T
	if err := codec.strict.Unmarshal(raw, &v); err != nil {
		return nil, true, err
	}
	return v, true, nil
}

// EncodeOps encodes ops as a canonical CBOR body: [version, [[kind, payload], ...]].
// Every op is validated first, so an encoder never emits what DecodeOps rejects.
func EncodeOps(ops []Op) ([]byte, error) {
	if len(ops) > MaxOpsPerEvent {
		return nil, fmt.Errorf("encode ops: %d ops > %d: %w", len(ops), MaxOpsPerEvent, ErrMalformedOps)
	}
	body := wireBody{V: BodyVersion, Ops: make([]wireOp, len(ops))}
	for i, op := range ops {
		if op == nil {
			return nil, fmt.Errorf("encode ops: op %d is nil: %w", i, ErrMalformedOps)
		}
		if err := op.validate(); err != nil {
			return nil, fmt.Errorf("encode ops: op %d: %w: %w", i, ErrMalformedOps, err)
		}
		var raw []byte
		if u, ok := op.(Unknown); ok {
			raw = u.Raw
		} else {
			var err error
			if raw, err = codec.enc.Marshal(op); err != nil {
				return nil, fmt.Errorf("encode ops: op %d: %w", i, err)
			}
		}
		body.Ops[i] = wireOp{K: uint64(op.Kind()), P: raw}
	}
	b, err := codec.enc.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode ops: %w", err)
	}
	if len(b) > MaxBodySize {
		return nil, fmt.Errorf("encode ops: %d bytes > %d: %w", len(b), MaxBodySize, ErrMalformedOps)
	}
	return b, nil
}

// DecodeOps decodes a body produced by EncodeOps. It reads untrusted bytes:
// it never panics, allocates at most a small multiple of len(b), and
// accepts only the canonical encoding (re-encoding yields b exactly), so a
// body has one byte form and one CID. Unknown op kinds are returned as
// Unknown; a known kind with a malformed payload is an error.
//
// Bodies made only of the hot kinds (messages, edits, deletes, reactions,
// receipts) in their exact canonical form take a hand-written fast path
// (fastdecode.go); everything else, including every rejected input, goes
// through decodeOpsRef, which decides acceptance and the error. The fast
// path accepts a subset of what decodeOpsRef accepts and returns the same
// ops (checked by FuzzDecodeOps), so DecodeOps accepts exactly what
// decodeOpsRef accepts.
func DecodeOps(b []byte) ([]Op, error) {
	if ops, ok := decodeOpsFast(b); ok {
		return ops, nil
	}
	return decodeOpsRef(b)
}

// decodeOpsRef is the reference decoder: a strict generic CBOR decode, then
// a full canonical re-encode that must reproduce b byte for byte.
func decodeOpsRef(b []byte) ([]Op, error) {
	if len(b) > MaxBodySize {
		return nil, fmt.Errorf("decode ops: %d bytes > %d: %w", len(b), MaxBodySize, ErrMalformedOps)
	}
	var body wireBody
	if err := codec.dec.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("decode ops: %w: %w", ErrMalformedOps, err)
	}
	if body.V != BodyVersion {
		return nil, fmt.Errorf("decode ops: version %d: %w", body.V, ErrUnsupported)
	}
	if len(body.Ops) > MaxOpsPerEvent {
		return nil, fmt.Errorf("decode ops: %d ops > %d: %w", len(body.Ops), MaxOpsPerEvent, ErrMalformedOps)
	}
	ops := make([]Op, len(body.Ops))
	for i, w := range body.Ops {
		k := OpKind(w.K)
		op, known, err := decodeKnown(k, w.P)
		if err != nil {
			return nil, fmt.Errorf("decode ops: op %d (kind %d): %w: %w", i, k, ErrMalformedOps, err)
		}
		if !known {
			// The payload must still be one well-formed canonical item, so
			// the whole body keeps a single byte form.
			var v any
			if err := codec.dec.Unmarshal(w.P, &v); err != nil {
				return nil, fmt.Errorf("decode ops: op %d (kind %d): %w: %w", i, k, ErrMalformedOps, err)
			}
			re, err := codec.enc.Marshal(v)
			if err != nil || !bytes.Equal(re, w.P) {
				return nil, fmt.Errorf("decode ops: op %d (kind %d): non-canonical payload: %w", i, k, ErrMalformedOps)
			}
			op = Unknown{K: k, Raw: bytes.Clone(w.P)}
		}
		if err := op.validate(); err != nil {
			return nil, fmt.Errorf("decode ops: op %d (kind %d): %w: %w", i, k, ErrMalformedOps, err)
		}
		ops[i] = op
	}
	re, err := EncodeOps(ops)
	if err != nil {
		return nil, fmt.Errorf("decode ops: %w", err)
	}
	if !bytes.Equal(re, b) {
		return nil, fmt.Errorf("decode ops: non-canonical encoding: %w", ErrMalformedOps)
	}
	return ops, nil
}
