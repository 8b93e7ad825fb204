package protocol

import (
	"bufio"
	"bytes"
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
	for _, fr := range []Frame{{Kind: FrameHello, Hello: &h}, {Kind: FrameBlocks, Envelopes: [][]byte{{1}}}, {Kind: FrameDone, Sent: 3}} {
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
