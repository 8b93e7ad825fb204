package dag

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// A block record is the value under a block's /o key:
//
//	byte     recordVersion
//	uvarint  seq
//	[32]byte author
//	uvarint  lamport
//	uvarint  height of Prev (0 without Prev)
//	byte     0 or 1: Prev present; if 1, the 36 CID bytes follow
//	uvarint  envelope length, envelope bytes
//	rest     inner block bytes (canonical, signed); in a version 2
//	         record sealed at rest (Options.Records), bound to the
//	         envelope
//
// The fixed header lets sync filter by (author, seq) and walk an author's
// chain backwards without decoding CBOR.
const (
	recordVersion       = 1
	recordVersionSealed = 2
)

var errBadRecord = errors.New("dag: corrupt block record")

type recordHeader struct {
	seq        uint64
	author     DeviceID
	lamport    uint64
	prevHeight uint64
	prev       []byte // CID bytes, nil without Prev
}

// recordLen is the length of the record appendRecord writes.
func recordLen(in *Inner, prevHeight uint64, env, inner []byte) int {
	n := 1 + uvarintLen(in.Seq) + len(in.Author) + uvarintLen(in.Lamport) + uvarintLen(prevHeight) + 1
	if in.Prev.Defined() {
		n += len(in.Prev.KeyString())
	}
	return n + uvarintLen(uint64(len(env))) + len(env) + len(inner)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendRecord(dst []byte, in *Inner, prevHeight uint64, env, inner []byte, version byte) []byte {
	dst = append(dst, version)
	dst = binary.AppendUvarint(dst, in.Seq)
	dst = append(dst, in.Author[:]...)
	dst = binary.AppendUvarint(dst, in.Lamport)
	dst = binary.AppendUvarint(dst, prevHeight)
	if in.Prev.Defined() {
		dst = append(dst, 1)
		dst = append(dst, in.Prev.KeyString()...)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(env)))
	dst = append(dst, env...)
	return append(dst, inner...)
}

// parseRecord splits a record into its header, envelope and inner bytes.
// The returned slices alias rec.
func parseRecord(rec []byte) (h recordHeader, env, inner []byte, err error) {
	bad := func(what string) (recordHeader, []byte, []byte, error) {
		return recordHeader{}, nil, nil, fmt.Errorf("%w: %s", errBadRecord, what)
	}
	if len(rec) < 1 || (rec[0] != recordVersion && rec[0] != recordVersionSealed) {
		return bad("version")
	}
	p := rec[1:]
	var n int
	if h.seq, n = binary.Uvarint(p); n <= 0 {
		return bad("seq")
	}
	p = p[n:]
	if len(p) < 32 {
		return bad("author")
	}
	copy(h.author[:], p)
	p = p[32:]
	if h.lamport, n = binary.Uvarint(p); n <= 0 {
		return bad("lamport")
	}
	p = p[n:]
	if h.prevHeight, n = binary.Uvarint(p); n <= 0 {
		return bad("prev height")
	}
	p = p[n:]
	if len(p) < 1 {
		return bad("prev flag")
	}
	if p[0] == 1 {
		if len(p) < 1+cidLen {
			return bad("prev")
		}
		h.prev = p[1 : 1+cidLen]
		p = p[1+cidLen:]
	} else {
		p = p[1:]
	}
	envLen, n := binary.Uvarint(p)
	if n <= 0 || envLen > uint64(len(p)-n) {
		return bad("envelope")
	}
	p = p[n:]
	return h, p[:envLen], p[envLen:], nil
}

// blockFromRecord rebuilds a Block from a stored record, opening a sealed
// inner block with rc. Records were validated before they were written,
// but they are decoded strictly anyway: a corrupt disk must not turn into
// a wrong block.
func blockFromRecord(rec []byte, rc RecordCipher) (Block, error) {
	_, envB, innerB, err := parseRecord(rec)
	if err != nil {
		return Block{}, err
	}
	if rec[0] == recordVersionSealed {
		if rc == nil {
			return Block{}, fmt.Errorf("%w: sealed record and no record cipher", errBadRecord)
		}
		if innerB, err = rc.OpenInner(envB, innerB); err != nil {
			return Block{}, fmt.Errorf("%w: inner block does not open: %w", errBadRecord, err)
		}
	}
	env, err := DecodeEnvelope(envB)
	if err != nil {
		return Block{}, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	in, err := DecodeInner(innerB)
	if err != nil {
		return Block{}, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	return Block{CID: EnvelopeCID(envB), Envelope: env, Inner: in, envBytes: envB, innerBytes: innerB}, nil
}

func appendMeta(dst []byte, height, lamport uint64) []byte {
	dst = binary.AppendUvarint(dst, height)
	return binary.AppendUvarint(dst, lamport)
}

func parseMeta(b []byte) (height, lamport uint64, err error) {
	var n, m int
	height, n = binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: meta height", errBadRecord)
	}
	lamport, m = binary.Uvarint(b[n:])
	if m <= 0 {
		return 0, 0, fmt.Errorf("%w: meta lamport", errBadRecord)
	}
	return height, lamport, nil
}

// vector record: seq, height, lamport (uvarints), CID bytes.
func appendTip(dst []byte, t ChainState) []byte {
	dst = binary.AppendUvarint(dst, t.Seq)
	dst = appendMeta(dst, t.Last.Height, t.Last.Lamport)
	return append(dst, t.Last.CID.Bytes()...)
}

func parseTip(b []byte) (ChainState, error) {
	var t ChainState
	seq, n := binary.Uvarint(b)
	if n <= 0 {
		return t, fmt.Errorf("%w: tip seq", errBadRecord)
	}
	b = b[n:]
	h, n1 := binary.Uvarint(b)
	if n1 <= 0 {
		return t, fmt.Errorf("%w: tip height", errBadRecord)
	}
	b = b[n1:]
	l, n2 := binary.Uvarint(b)
	if n2 <= 0 {
		return t, fmt.Errorf("%w: tip lamport", errBadRecord)
	}
	c, err := cid.Cast(b[n2:])
	if err != nil {
		return t, fmt.Errorf("%w: tip cid: %w", errBadRecord, err)
	}
	return ChainState{Seq: seq, Last: Ref{CID: c, Height: h, Lamport: l}}, nil
}
