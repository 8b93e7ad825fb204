package protocol

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func testHello() Hello {
	return Hello{
		SyncID: bytes.Repeat([]byte{7}, 32),
		Heads:  [][]byte{{1, 2, 3}},
		Vector: map[string]uint64{strings.Repeat("a", 31) + "\xff": 9}, // raw bytes, not UTF-8
		Count:  9,
	}
}

func TestFramesRoundTrip(t *testing.T) {
	h := testHello()
	frames := []Frame{
		{Kind: FrameHello, Hello: &h},
		{Kind: FrameBlocks, Envelopes: [][]byte{[]byte("env1"), []byte("env2")}},
		{Kind: FrameDone, Sent: 2},
		{Kind: FrameError, Error: "busy"},
		{Kind: FrameReconcile, Recon: []byte{1, 0, 0, 1, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0}},
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := NewFrameWriter(bw)
	for _, f := range frames {
		if _, err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	bw.Flush()
	wire := buf.Bytes()
	r := NewFrameReader(bytes.NewReader(wire))
	var blocks Frame
	for i, want := range frames {
		got, _, err := r.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		a, _ := EncodeFrame(want)
		b, _ := EncodeFrame(got)
		if !bytes.Equal(a, b) {
			t.Fatalf("frame %d changed in transit", i)
		}
		if got.Kind == FrameBlocks {
			blocks = got
		}
	}
	if _, _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last frame: %v", err)
	}
	// Returned envelopes must not alias the wire or the reader's buffers.
	for i := range wire {
		wire[i] = 0
	}
	if string(blocks.Envelopes[0]) != "env1" {
		t.Fatal("envelope aliases the read buffer")
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	enc := func(f Frame) []byte { b, _ := frameEnc.Marshal(f); return b }
	bigVec := testHello()
	bigVec.Vector = map[string]uint64{"short": 1}
	noID := testHello()
	noID.SyncID = nil
	manyHeads := testHello()
	manyHeads.Heads = make([][]byte, MaxHelloHeads+1)
	cases := map[string][]byte{
		"garbage":            {0xff},
		"unknown kind":       enc(Frame{Kind: 99}),
		"hello without body": enc(Frame{Kind: FrameHello}),
		"bad vector key":     enc(Frame{Kind: FrameHello, Hello: &bigVec}),
		"no sync id":         enc(Frame{Kind: FrameHello, Hello: &noID}),
		"too many heads":     enc(Frame{Kind: FrameHello, Hello: &manyHeads}),
		"empty blocks":       enc(Frame{Kind: FrameBlocks}),
		"empty reconcile":    enc(Frame{Kind: FrameReconcile}),
		"oversized":          make([]byte, MaxSyncFrame+1),
		"unknown field":      {0xa1, 0x18, 0x63, 0x01},
		"text key":           {0xa1, 0x01, 0x61, 0x61}, // kind must be an integer
	}
	for name, b := range cases {
		if _, err := DecodeFrame(b); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
}

func TestFrameReaderRefusesHugeLengthBeforeAllocating(t *testing.T) {
	// A varint length of 1 GiB followed by nothing: the reader must refuse
	// from the prefix alone.
	wire := []byte{0x80, 0x80, 0x80, 0x80, 0x04}
	_, _, err := NewFrameReader(bytes.NewReader(wire)).Read()
	if !errors.Is(err, ErrBadFrame) {
		t.Fatalf("Read = %v, want ErrBadFrame", err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	h := testHello()
	for _, fr := range []Frame{{Kind: FrameHello, Hello: &h}, {Kind: FrameBlocks, Envelopes: [][]byte{{1}}}, {Kind: FrameDone, Sent: 3}, {Kind: FrameReconcile, Recon: []byte{0, 0, 0}}} {
		b, _ := EncodeFrame(fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if _, err := EncodeFrame(fr); err != nil && !errors.Is(err, ErrBadFrame) {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
	})
}

// TestExistingFramesUnchanged pins the encodings of docs/sync.md §2: the
// reconciliation field must not change any 1.0.0 frame.
func TestExistingFramesUnchanged(t *testing.T) {
	h := Hello{SyncID: []byte{0xaa, 0xbb}, Vector: map[string]uint64{strings.Repeat("\x01", 32): 7}, Count: 7}
	cases := []struct {
		f    Frame
		want string
	}{
		{Frame{Kind: FrameDone, Sent: 2}, "a2010304 02"},
		{Frame{Kind: FrameDone}, "a10103"},
		{Frame{Kind: FrameError, Error: "unknown"}, "a2010405 47756e6b6e6f776e"},
		{Frame{Kind: FrameBlocks, Envelopes: [][]byte{{1, 2, 3}, {4, 5}}}, "a2010203 82 43010203 420405"},
		{Frame{Kind: FrameHello, Hello: &h}, "a20101 02 a4 0142aabb 02f6 03a15820" + strings.Repeat("01", 32) + "07 0407"},
		{Frame{Kind: FrameReconcile, Recon: []byte{0, 0, 0}}, "a20105 0643000000"},
	}
	for _, tc := range cases {
		b, err := EncodeFrame(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := hex.EncodeToString(b), strings.ReplaceAll(tc.want, " ", ""); got != want {
			t.Errorf("kind %d: %s, want %s", tc.f.Kind, got, want)
		}
	}
}
