package node

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

// Fuzz targets for the node's decoders of bytes other people send that
// live in this package: history frames (cards, invite links and link codes
// are fuzzed in node/card). None may panic.

func FuzzReadHistoryFrame(f *testing.F) {
	var buf bytes.Buffer
	if err := writeHistoryFrame(&buf, historyFrame{Conversation: bytes.Repeat([]byte{1}, 16), Blocks: [][2][]byte{{[]byte("cid"), []byte("envelope")}}}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		alloccheck.Check(t, "readHistoryFrame", b, 16, func() { _, _ = readHistoryFrame(bufio.NewReader(bytes.NewReader(b))) })
		r := bufio.NewReader(bytes.NewReader(b))
		for range 4 {
			fr, err := readHistoryFrame(r)
			if err != nil {
				return
			}
			var out bytes.Buffer
			if err := writeHistoryFrame(&out, fr); err != nil {
				t.Fatal(err)
			}
			again, err := readHistoryFrame(bufio.NewReader(&out))
			if err != nil || !bytes.Equal(again.Conversation, fr.Conversation) || len(again.Blocks) != len(fr.Blocks) {
				t.Fatalf("a frame does not survive re-encoding: %v", err)
			}
		}
	})
}
