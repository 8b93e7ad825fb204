package dag

import (
	"encoding/binary"

	ds "github.com/ipfs/go-datastore"
)

// Key layout. go-datastore keys are '/'-separated strings, and query
// prefixes are cleaned as paths, so binary fields are packed seven bits
// per byte with the high bit set (pack7): the packed bytes never contain
// '/' or '.', keys stay binary and compact, and packing preserves byte
// order, so range scans follow the numeric and CID order.
//
//	/m/d/<pack7(dagID)>                      → dag number (uvarint)
//	/c/<dag>/<pack7(cid)>                    → height, lamport (uvarints)
//	/o/<dag>/<bucket>/<pack7(low,cid)>       → block record (see record.go)
//	/h/<dag>/<pack7(cid)>                    → head: height, lamport
//	/v/<dag>/<pack7(author)>                 → author tip: seq, height, lamport, cid
//	/e/<dag>/<pack7(author,seq)>             → equivocation evidence
//	/n/<dag>                                 → committed block count (uvarint)
//	/a/<dag>/<pack7(key)>                    → CID of the own block appended under an idempotency key
//
// <dag> is the DAG's local number packed into 4 bytes (28 bits), <bucket>
// is height>>bucketBits packed into 8 bytes (56 bits) and low is the low
// bucketBits of the height as 2 big-endian bytes. A committed block thus
// costs two keys: /c for lookups by CID and /o, the ordered index that
// holds the record itself, so ordered scans (sync, display) read records
// without a second lookup.
const (
	bucketBits = 10
	dagNumLen  = 4
	bucketLen  = 8
)

// pack7 appends src to dst seven bits per output byte, high bit set.
func pack7[S ~string | ~[]byte](dst []byte, src S) []byte {
	// Seven input bytes are exactly eight output bytes: whole groups in
	// one step, then the tail bit by bit.
	i := 0
	for ; i+7 <= len(src); i += 7 {
		v := uint64(src[i])<<48 | uint64(src[i+1])<<40 | uint64(src[i+2])<<32 | uint64(src[i+3])<<24 |
			uint64(src[i+4])<<16 | uint64(src[i+5])<<8 | uint64(src[i+6])
		dst = append(dst, 0x80|byte(v>>49), 0x80|byte(v>>42)&0x7f, 0x80|byte(v>>35)&0x7f, 0x80|byte(v>>28)&0x7f,
			0x80|byte(v>>21)&0x7f, 0x80|byte(v>>14)&0x7f, 0x80|byte(v>>7)&0x7f, 0x80|byte(v)&0x7f)
	}
	var acc uint32
	var n uint
	for ; i < len(src); i++ {
		acc = acc<<8 | uint32(src[i])
		n += 8
		for n >= 7 {
			n -= 7
			dst = append(dst, 0x80|byte(acc>>n)&0x7f)
		}
	}
	if n > 0 {
		dst = append(dst, 0x80|byte(acc<<(7-n))&0x7f)
	}
	return dst
}

// packedLen is the length of pack7 output for n input bytes.
func packedLen(n int) int { return (n*8 + 6) / 7 }

// unpack7 reverses pack7 for an output of n bytes; ok is false when src is
// not a packing of n bytes.
func unpack7(src []byte, n int) (out []byte, ok bool) {
	if len(src) != packedLen(n) {
		return nil, false
	}
	out = make([]byte, 0, n)
	var acc uint32
	var bits uint
	for _, b := range src {
		if b&0x80 == 0 {
			return nil, false
		}
		acc = acc<<7 | uint32(b&0x7f)
		bits += 7
		if bits >= 8 && len(out) < n {
			bits -= 8
			out = append(out, byte(acc>>bits))
		}
	}
	return out, true
}

// packUint appends v as width bytes of seven bits each, most significant
// first, so byte order equals numeric order for values below 2^(7*width).
func packUint(dst []byte, v uint64, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, 0x80|byte(v>>(7*uint(i)))&0x7f)
	}
	return dst
}

// Key builders append to dst (which may be nil) and return the key.

func appendDAGPrefix(dst []byte, kind byte, num uint32) []byte {
	dst = append(dst, '/', kind, '/')
	return packUint(dst, uint64(num), dagNumLen)
}

func dagPrefix(kind byte, num uint32) []byte {
	return appendDAGPrefix(make([]byte, 0, 64), kind, num)
}

func mkKey(b []byte) ds.Key { return ds.RawKey(string(b)) }

func dagNameKey(dst []byte, id DAGID) []byte {
	return pack7(append(dst, "/m/d/"...), id)
}

func cidKey[S ~string | ~[]byte](dst []byte, num uint32, c S) []byte {
	dst = append(appendDAGPrefix(dst, 'c', num), '/')
	return pack7(dst, c)
}

func appendBucketPrefix(dst []byte, num uint32, bucket uint64) []byte {
	dst = append(appendDAGPrefix(dst, 'o', num), '/')
	return packUint(dst, bucket, bucketLen)
}

func bucketPrefix(num uint32, bucket uint64) []byte {
	return appendBucketPrefix(make([]byte, 0, 64), num, bucket)
}

func orderKey[S ~string | ~[]byte](dst []byte, num uint32, height uint64, c S) []byte {
	dst = append(appendBucketPrefix(dst, num, height>>bucketBits), '/')
	var tmp [2 + cidLen]byte
	binary.BigEndian.PutUint16(tmp[:2], uint16(height&(1<<bucketBits-1)))
	n := copy(tmp[2:], c)
	return pack7(dst, tmp[:2+n])
}

func headKey[S ~string | ~[]byte](dst []byte, num uint32, c S) []byte {
	dst = append(appendDAGPrefix(dst, 'h', num), '/')
	return pack7(dst, c)
}

func vectorKey(dst []byte, num uint32, a DeviceID) []byte {
	dst = append(appendDAGPrefix(dst, 'v', num), '/')
	return pack7(dst, a[:])
}

func evidenceKey(dst []byte, num uint32, a DeviceID, seq uint64) []byte {
	dst = append(appendDAGPrefix(dst, 'e', num), '/')
	var tmp [40]byte
	copy(tmp[:], a[:])
	binary.BigEndian.PutUint64(tmp[32:], seq)
	return pack7(dst, tmp[:])
}

func countKey(dst []byte, num uint32) []byte { return appendDAGPrefix(dst, 'n', num) }

func onceKey(dst []byte, num uint32, key []byte) []byte {
	dst = append(appendDAGPrefix(dst, 'a', num), '/')
	return pack7(dst, key)
}

// lastComponent returns the part of a key after its last '/'.
func lastComponent(k []byte) []byte {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '/' {
			return k[i+1:]
		}
	}
	return k
}
