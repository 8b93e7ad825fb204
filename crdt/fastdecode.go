package crdt

import (
	"encoding/binary"

	"github.com/ipfs/go-cid"
)

// decodeOpsFast decodes bodies whose ops are all of the hot kinds (Message
// without an attachment, Edit, Delete, ReactionAdd, ReactionRemove,
// Receipt) without reflection or
// re-encoding. It matches the bytes against the one canonical form
// EncodeOps produces for such ops — shortest heads, definite lengths, the
// fixed key sets in length-first order, omitempty fields absent when zero,
// no trailing bytes — and validates each op as EncodeOps does. Anything
// else (another kind, any deviation, any invalid value) returns ok=false
// and the caller falls back to decodeOpsRef, so this function only has to
// be sound: ok=true implies decodeOpsRef(b) returns the same ops. It never
// needs to report an error itself.
func decodeOpsFast(b []byte) (ops []Op, ok bool) {
	if len(b) > MaxBodySize {
		return nil, false
	}
	r := reader{b: b}
	// [1, [op, ...]]
	if !r.lit2(0x82, BodyVersion) {
		return nil, false
	}
	n, ok := r.head(majorArray)
	// Every op takes at least 3 bytes ([kind, {}]), which bounds the
	// allocation below by the input size.
	if !ok || n > MaxOpsPerEvent || n > uint64(r.left())/3 {
		return nil, false
	}
	ops = make([]Op, n)
	for i := range ops {
		if !r.lit(0x82) {
			return nil, false
		}
		k, ok := r.head(majorUint)
		if !ok {
			return nil, false
		}
		var op Op
		switch OpKind(k) {
		case KindMessage:
			op, ok = r.message()
		case KindEdit:
			op, ok = r.edit()
		case KindDelete:
			op, ok = r.delete()
		case KindReactionAdd:
			var o ReactionAdd
			o.Emoji, o.Target, ok = r.reaction()
			op = o
		case KindReactionRemove:
			var o ReactionRemove
			o.Emoji, o.Target, ok = r.reaction()
			op = o
		case KindReceipt:
			op, ok = r.receipt()
		default:
			return nil, false
		}
		if !ok || op.validate() != nil {
			return nil, false
		}
		ops[i] = op
	}
	if r.left() != 0 {
		return nil, false
	}
	return ops, true
}

// CBOR major types (RFC 8949 §3.1), pre-shifted.
const (
	majorUint  = 0 << 5
	majorBytes = 2 << 5
	majorText  = 3 << 5
	majorArray = 4 << 5
	majorMap   = 5 << 5
)

// Canonical encodings of the single-letter map keys and of true.
const (
	keyD     = 0x64 // "d" after 0x61
	keyE     = 0x65
	keyM     = 0x6d
	keyR     = 0x72
	keyT     = 0x74
	keyU     = 0x75
	cborTrue = 0xf5
)

// reader walks a byte slice. Every method checks bounds and reports ok=false
// instead of panicking; after a false result the reader is not used again.
type reader struct {
	b []byte
	i int
}

func (r *reader) left() int { return len(r.b) - r.i }

func (r *reader) lit(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *reader) lit2(c0, c1 byte) bool {
	if r.left() >= 2 && r.b[r.i] == c0 && r.b[r.i+1] == c1 {
		r.i += 2
		return true
	}
	return false
}

// key consumes a one-letter text-string map key: 0x61, c.
func (r *reader) key(c byte) bool { return r.lit2(0x61, c) }

// head reads a data item head of the given major type and returns its
// argument. Only the shortest form is accepted; indefinite lengths,
// reserved values and other major types are not.
func (r *reader) head(major byte) (uint64, bool) {
	if r.i >= len(r.b) || r.b[r.i]&0xe0 != major {
		return 0, false
	}
	ai := r.b[r.i] & 0x1f
	r.i++
	var v, min uint64
	switch {
	case ai < 24:
		return uint64(ai), true
	case ai == 24 && r.left() >= 1:
		v, min = uint64(r.b[r.i]), 24
		r.i++
	case ai == 25 && r.left() >= 2:
		v, min = uint64(binary.BigEndian.Uint16(r.b[r.i:])), 1<<8
		r.i += 2
	case ai == 26 && r.left() >= 4:
		v, min = uint64(binary.BigEndian.Uint32(r.b[r.i:])), 1<<16
		r.i += 4
	case ai == 27 && r.left() >= 8:
		v, min = binary.BigEndian.Uint64(r.b[r.i:]), 1<<32
		r.i += 8
	default:
		return 0, false
	}
	return v, v >= min
}

// span reads a byte or text string of the given major type and returns
// its content, still aliasing the input.
func (r *reader) span(major byte) ([]byte, bool) {
	n, ok := r.head(major)
	if !ok || n > uint64(r.left()) {
		return nil, false
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, true
}

// text reads a text string (copied). UTF-8 validity and length are checked
// by the op's validate method.
func (r *reader) text() (string, bool) {
	s, ok := r.span(majorText)
	return string(s), ok
}

// msgID reads [cid bytes, op index] as MsgID.MarshalCBOR writes it. The
// CID must be the one whose Bytes() are exactly these bytes.
func (r *reader) msgID() (MsgID, bool) {
	if !r.lit(0x82) {
		return MsgID{}, false
	}
	raw, ok := r.span(majorBytes)
	if !ok {
		return MsgID{}, false
	}
	idx, ok := r.head(majorUint)
	if !ok || idx > 0xffff {
		return MsgID{}, false
	}
	c, err := cid.Cast(raw)
	if err != nil || !c.Defined() || c.KeyString() != string(raw) {
		return MsgID{}, false
	}
	return MsgID{Event: c, Index: uint16(idx)}, true
}

// message: {"t": text} or {"r": msg-id, "t": text}.
func (r *reader) message() (Op, bool) {
	var o Message
	switch {
	case r.lit(majorMap | 1):
	case r.lit(majorMap | 2):
		if !r.key(keyR) {
			return nil, false
		}
		id, ok := r.msgID()
		if !ok {
			return nil, false
		}
		o.ReplyTo = &id
	default:
		return nil, false
	}
	if !r.key(keyT) {
		return nil, false
	}
	var ok bool
	o.Text, ok = r.text()
	return o, ok
}

// edit: {"m": msg-id, "t": text}.
func (r *reader) edit() (Op, bool) {
	var o Edit
	var ok bool
	if !r.lit(majorMap|2) || !r.key(keyM) {
		return nil, false
	}
	if o.Target, ok = r.msgID(); !ok || !r.key(keyT) {
		return nil, false
	}
	o.Text, ok = r.text()
	return o, ok
}

// delete: {"m": msg-id}.
func (r *reader) delete() (Op, bool) {
	if !r.lit(majorMap|1) || !r.key(keyM) {
		return nil, false
	}
	id, ok := r.msgID()
	return Delete{Target: id}, ok
}

// reaction: {"e": emoji, "m": msg-id}.
func (r *reader) reaction() (emoji string, target MsgID, ok bool) {
	if !r.lit(majorMap|2) || !r.key(keyE) {
		return "", MsgID{}, false
	}
	if emoji, ok = r.text(); !ok || !r.key(keyM) {
		return "", MsgID{}, false
	}
	target, ok = r.msgID()
	return emoji, target, ok
}

// receipt: {"u": position} or {"d": true, "u": position}; a false "d" is
// omitted by the encoder, so it is not accepted here.
func (r *reader) receipt() (Op, bool) {
	var o Receipt
	switch {
	case r.lit(majorMap | 1):
	case r.lit(majorMap|2) && r.key(keyD) && r.lit(cborTrue):
		o.Read = true
	default:
		return nil, false
	}
	if !r.key(keyU) {
		return nil, false
	}
	var ok bool
	o.Upto, ok = r.position()
	return o, ok
}

// position: [[device (32-byte string), seq], ...]. Order, zero entries and
// the length bound are checked by validate.
func (r *reader) position() (Position, bool) {
	n, ok := r.head(majorArray)
	// An entry takes at least 36 bytes (0x82, 0x58 0x20, 32 bytes, seq).
	if !ok || n == 0 || n > MaxPositionLen || n > uint64(r.left())/36 {
		return nil, false
	}
	p := make(Position, n)
	for j := range p {
		if r.left() < 35 || r.b[r.i] != 0x82 || r.b[r.i+1] != majorBytes|24 || r.b[r.i+2] != 32 {
			return nil, false
		}
		copy(p[j].Device[:], r.b[r.i+3:r.i+35])
		r.i += 35
		if p[j].Seq, ok = r.head(majorUint); !ok {
			return nil, false
		}
	}
	return p, true
}
