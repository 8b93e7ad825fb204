// Package alloccheck lets fuzz targets prove that a decoder of untrusted
// bytes never sizes an allocation from a length or count the bytes claim:
// what it allocates must stay within a small multiple of its input.
package alloccheck

import (
	"runtime/metrics"
	"testing"
)

// slack covers the allocator's byte counter, which advances a span (up to
// a few KiB) at a time, and one-off costs such as a CBOR library building
// a type's decoder on first use.
const slack = 256 << 10

// Bound is what decoding n bytes may allocate when a decoded value may
// take factor times its encoding.
func Bound(n int, factor uint64) uint64 { return factor*uint64(n) + slack }

var heapAllocs = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

// Allocated returns how many heap bytes fn allocated.
func Allocated(fn func()) uint64 {
	metrics.Read(heapAllocs)
	before := heapAllocs[0].Value.Uint64()
	fn()
	metrics.Read(heapAllocs)
	return heapAllocs[0].Value.Uint64() - before
}

// Check fails t when fn, decoding input, allocates beyond Bound(len(input),
// factor). One-off costs are not the input's doing and do not repeat right
// away (a type's decoder built on first use, the allocator's per-P cache
// refilled once per size class after a GC cycle); an allocation sized by
// the input does. So the least of three measurements counts.
func Check(t testing.TB, what string, input []byte, factor uint64, fn func()) {
	t.Helper()
	limit := Bound(len(input), factor)
	n := Allocated(fn)
	for i := 0; i < 2 && n > limit; i++ {
		n = min(n, Allocated(fn))
	}
	if n > limit {
		t.Fatalf("%s allocated %d bytes for %d input bytes", what, n, len(input))
	}
}
