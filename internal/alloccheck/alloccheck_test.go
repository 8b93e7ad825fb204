package alloccheck

import "testing"

var sink []byte

// The check catches a decoder that sizes a buffer from a claimed length,
// and lets one that allocates in proportion to its input pass.
func TestCheck(t *testing.T) {
	claimed := 1 << 24
	if n := Allocated(func() { sink = make([]byte, claimed) }); n <= Bound(16, 8) {
		t.Fatalf("a %d-byte allocation measured as %d bytes", claimed, n)
	}
	input := make([]byte, 4096)
	Check(t, "a proportional decoder", input, 8, func() { sink = make([]byte, 2*len(input)) })
}
