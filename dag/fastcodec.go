package dag

import (
	"encoding/binary"
	"math"

	"github.com/ipfs/go-cid"
)

// Fast decoders. Every block a node receives goes through DecodeEnvelope
// and DecodeInner, and the general CBOR decoder plus the canonical
// re-encoding check cost a few microseconds per block. The functions here
// accept exactly the canonical encodings, byte by byte (one fixed key
// order, shortest-form heads, the only link form this format allows), so
// whatever they accept is what the general path accepts and re-encodes
// identically. Anything else, including every malformed input, falls back
// to the general path, which produces the precise error. The fuzz targets
// check that both paths agree.

// fastReader reads canonical CBOR heads from a byte slice.
type fastReader struct {
	b  []byte
	ok bool
}

func (r *fastReader) fail() { r.ok = false }

// lit consumes the literal bytes s.
func (r *fastReader) lit(s string) {
	if !r.ok || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		r.fail()
		return
	}
	r.b = r.b[len(s):]
}

// head reads a head of major type major in shortest form and returns its
// argument.
func (r *fastReader) head(major byte) uint64 {
	if !r.ok || len(r.b) == 0 || r.b[0]>>5 != major {
		r.fail()
		return 0
	}
	info := r.b[0] & 0x1f
	var v uint64
	var n int
	switch {
	case info < 24:
		v, n = uint64(info), 1
	case info == 24 && len(r.b) >= 2:
		v, n = uint64(r.b[1]), 2
		if v < 24 {
			r.fail()
		}
	case info == 25 && len(r.b) >= 3:
		v, n = uint64(binary.BigEndian.Uint16(r.b[1:])), 3
		if v <= math.MaxUint8 {
			r.fail()
		}
	case info == 26 && len(r.b) >= 5:
		v, n = uint64(binary.BigEndian.Uint32(r.b[1:])), 5
		if v <= math.MaxUint16 {
			r.fail()
		}
	case info == 27 && len(r.b) >= 9:
		v, n = binary.BigEndian.Uint64(r.b[1:]), 9
		if v <= math.MaxUint32 {
			r.fail()
		}
	default:
		r.fail()
	}
	if !r.ok {
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes reads a byte string and returns it aliasing the input.
func (r *fastReader) bytes() []byte {
	n := r.head(2)
	if !r.ok || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

// link reads a tag-42 link: 0x00 followed by a CIDv1 dag-cbor sha2-256.
func (r *fastReader) link() cid.Cid {
	r.lit("\xd8\x2a\x58\x25\x00\x01\x71\x12\x20")
	if !r.ok || len(r.b) < 32 {
		r.fail()
		return cid.Undef
	}
	var raw [cidLen]byte
	copy(raw[:], cidPrefix[:])
	copy(raw[len(cidPrefix):], r.b[:32])
	r.b = r.b[32:]
	c, err := cid.Cast(raw[:])
	if err != nil {
		r.fail()
	}
	return c
}

// fastDecodeEnvelope decodes the canonical encoding of a version-1
// envelope; ok is false for anything else.
func fastDecodeEnvelope(b []byte) (e Envelope, ok bool) {
	r := fastReader{b: b, ok: true}
	r.lit("\xa4\x61c")
	ct := r.bytes()
	r.lit("\x61e\x50")
	if !r.ok || len(r.b) < EpochIDSize {
		return Envelope{}, false
	}
	epoch := r.b[:EpochIDSize]
	r.b = r.b[EpochIDSize:]
	r.lit("\x61n\x58\x18")
	if !r.ok || len(r.b) < NonceSize {
		return Envelope{}, false
	}
	nonce := r.b[:NonceSize]
	r.b = r.b[NonceSize:]
	r.lit("\x61v\x01")
	if !r.ok || len(r.b) != 0 || len(ct) == 0 || len(ct) > MaxCiphertextSize {
		return Envelope{}, false
	}
	// One allocation for the three copies (the general decoder copies
	// too: the envelope does not alias the caller's buffer).
	buf := make([]byte, EpochIDSize+NonceSize+len(ct))
	copy(buf, epoch)
	copy(buf[EpochIDSize:], nonce)
	copy(buf[EpochIDSize+NonceSize:], ct)
	return Envelope{
		Version:    EnvelopeVersion,
		Epoch:      buf[:EpochIDSize:EpochIDSize],
		Nonce:      buf[EpochIDSize : EpochIDSize+NonceSize : EpochIDSize+NonceSize],
		Ciphertext: buf[EpochIDSize+NonceSize:],
	}, true
}

// fastDecodeInner decodes the canonical encoding of a signed inner block
// and checks it (checkInner); ok is false for anything else.
func fastDecodeInner(b []byte) (in Inner, ok bool) {
	if len(b) > MaxInnerSize {
		return Inner{}, false
	}
	r := fastReader{b: b, ok: true}
	pairs := r.head(5)
	r.lit("\x61a\x58\x20")
	if !r.ok || len(r.b) < 32 {
		return Inner{}, false
	}
	copy(in.Author[:], r.b[:32])
	r.b = r.b[32:]
	r.lit("\x61b")
	body := r.bytes()
	want := uint64(8)
	var cert []byte
	if r.ok && len(r.b) > 1 && r.b[0] == 0x61 && r.b[1] == 'c' {
		r.b = r.b[2:]
		if cert = r.bytes(); len(cert) == 0 {
			return Inner{}, false // empty optional fields are omitted
		}
		want++
	}
	r.lit("\x61h")
	in.Height = r.head(0)
	r.lit("\x61l")
	in.Lamport = r.head(0)
	r.lit("\x61p")
	np := r.head(4)
	if !r.ok || np > MaxParents {
		return Inner{}, false
	}
	in.Parents = make([]cid.Cid, np)
	for i := range in.Parents {
		in.Parents[i] = r.link()
	}
	r.lit("\x61s")
	in.Seq = r.head(0)
	r.lit("\x61t")
	if !r.ok || len(r.b) == 0 {
		return Inner{}, false
	}
	if r.b[0]>>5 == 1 {
		n := r.head(1)
		if n > math.MaxInt64 {
			return Inner{}, false
		}
		in.Time = -1 - int64(n)
	} else {
		n := r.head(0)
		if n > math.MaxInt64 {
			return Inner{}, false
		}
		in.Time = int64(n)
	}
	if r.ok && len(r.b) > 2 && r.b[0] == 0x62 && r.b[1] == 'p' && r.b[2] == 'v' {
		r.b = r.b[3:]
		in.Prev = r.link()
		want++
	}
	r.lit("\x63sig\x58\x40")
	if !r.ok || len(r.b) != ed25519SigLen || pairs != want {
		return Inner{}, false
	}
	// Copies, as the general decoder makes: one allocation for all three.
	buf := make([]byte, len(body)+len(cert)+ed25519SigLen)
	n := copy(buf, body)
	in.Body = buf[:n:n]
	m := copy(buf[n:], cert)
	if m > 0 {
		in.Cert = buf[n : n+m : n+m]
	}
	copy(buf[n+m:], r.b)
	in.Sig = buf[n+m:]
	if checkInner(&in, true) != nil {
		return Inner{}, false
	}
	return in, true
}

const ed25519SigLen = 64
