package history

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

// FuzzReadHistoryFrame feeds history frames, which another device sends:
// none may panic, allocate past its input, or fail to round-trip.
func FuzzReadHistoryFrame(f *testing.F) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, frame{Conversation: bytes.Repeat([]byte{1}, 16), Blocks: [][2][]byte{{[]byte("cid"), []byte("envelope")}}}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		alloccheck.Check(t, "readFrame", b, 16, func() { _, _ = readFrame(bufio.NewReader(bytes.NewReader(b))) })
		r := bufio.NewReader(bytes.NewReader(b))
		for range 4 {
			fr, err := readFrame(r)
			if err != nil {
				return
			}
			var out bytes.Buffer
			if err := writeFrame(&out, fr); err != nil {
				t.Fatal(err)
			}
			again, err := readFrame(bufio.NewReader(&out))
			if err != nil || !bytes.Equal(again.Conversation, fr.Conversation) || len(again.Blocks) != len(fr.Blocks) {
				t.Fatalf("a frame does not survive re-encoding: %v", err)
			}
		}
	})
}
