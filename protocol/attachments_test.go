package protocol

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func testChunkCID(s string) []byte { return ChunkCID(sha256.Sum256([]byte(s))) }

// The fixed prefix is what go-cid makes of a raw sha2-256 CIDv1.
func TestChunkCIDMatchesGoCID(t *testing.T) {
	data := []byte("sealed chunk")
	want, err := cid.V1Builder{Codec: cid.Raw, MhType: mh.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	got := ChunkCID(sha256.Sum256(data))
	if !bytes.Equal(got, want.Bytes()) || !ValidChunkCID(got) {
		t.Fatalf("ChunkCID = %x, go-cid %x", got, want.Bytes())
	}
	dagcbor, _ := cid.V1Builder{Codec: cid.DagCBOR, MhType: mh.SHA2_256}.Sum(data)
	if ValidChunkCID(dagcbor.Bytes()) {
		t.Fatal("a dag-cbor CID passed as a chunk CID")
	}
}

func TestChunkFramesRoundTrip(t *testing.T) {
	frames := []ChunkFrame{
		{Kind: ChunkWant, Root: testChunkCID("root"), CIDs: [][]byte{testChunkCID("a"), testChunkCID("b")}},
		{Kind: ChunkData, CID: testChunkCID("a"), Data: bytes.Repeat([]byte{9}, 1000)},
		{Kind: ChunkMissing, CID: testChunkCID("b")},
		{Kind: ChunkError, Error: ChunkReasonBusy},
	}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := NewChunkFrameWriter(bw)
	for _, f := range frames {
		if _, err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	bw.Flush()
	wire := buf.Bytes()
	r := NewChunkFrameReader(bytes.NewReader(wire))
	var data ChunkFrame
	for i, want := range frames {
		got, _, err := r.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		a, _ := EncodeChunkFrame(want)
		b, _ := EncodeChunkFrame(got)
		if !bytes.Equal(a, b) {
			t.Fatalf("frame %d changed in transit", i)
		}
		if got.Kind == ChunkData {
			data = got
		}
	}
	if _, _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v", err)
	}
	// The chunk must not alias the wire (the reader's buffer is pooled).
	for i := range wire {
		wire[i] = 0
	}
	if data.Data[0] != 9 {
		t.Fatal("chunk data aliases the read buffer")
	}
}

func TestChunkFrameRefused(t *testing.T) {
	tooMany := make([][]byte, MaxWantChunks+1)
	for i := range tooMany {
		tooMany[i] = testChunkCID("x")
	}
	cases := map[string]ChunkFrame{
		"unknown kind":      {Kind: 9},
		"want without root": {Kind: ChunkWant, CIDs: [][]byte{testChunkCID("a")}},
		"want of nothing":   {Kind: ChunkWant, Root: testChunkCID("r")},
		"want too many":     {Kind: ChunkWant, Root: testChunkCID("r"), CIDs: tooMany},
		"want bad cid":      {Kind: ChunkWant, Root: testChunkCID("r"), CIDs: [][]byte{{1, 2, 3}}},
		"want with data":    {Kind: ChunkWant, Root: testChunkCID("r"), CIDs: [][]byte{testChunkCID("a")}, Data: []byte{1}},
		"data short":        {Kind: ChunkData, CID: testChunkCID("a"), Data: []byte{1}},
		"data bad cid":      {Kind: ChunkData, CID: testChunkCID("a")[:35], Data: make([]byte, 32)},
		"missing with data": {Kind: ChunkMissing, CID: testChunkCID("a"), Data: make([]byte, 32)},
		"error empty":       {Kind: ChunkError},
	}
	for name, f := range cases {
		b, err := chunkEnc.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeChunkFrame(b); !errors.Is(err, ErrBadChunkFrame) {
			t.Errorf("%s: %v, want ErrBadChunkFrame", name, err)
		}
	}
	// An oversized length prefix is refused before the body is read.
	wire := []byte{0x80, 0x80, 0x80, 0x08}
	if _, _, err := NewChunkFrameReader(bytes.NewReader(wire)).Read(); !errors.Is(err, ErrBadChunkFrame) {
		t.Fatalf("oversized prefix: %v", err)
	}
	// A chunk over the largest sealed chunk is refused by the encoder.
	if _, err := EncodeChunkFrame(ChunkFrame{Kind: ChunkData, CID: testChunkCID("a"), Data: make([]byte, MaxChunkFrame)}); !errors.Is(err, ErrBadChunkFrame) {
		t.Fatalf("oversized chunk encoded: %v", err)
	}
}

func FuzzDecodeChunkFrame(f *testing.F) {
	for _, fr := range []ChunkFrame{
		{Kind: ChunkWant, Root: testChunkCID("r"), CIDs: [][]byte{testChunkCID("a")}},
		{Kind: ChunkData, CID: testChunkCID("a"), Data: make([]byte, 40)},
		{Kind: ChunkMissing, CID: testChunkCID("a")},
		{Kind: ChunkError, Error: "unknown"},
	} {
		b, _ := EncodeChunkFrame(fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeChunkFrame(b)
		if err != nil {
			return
		}
		out, err := EncodeChunkFrame(fr)
		if err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
		if _, err := DecodeChunkFrame(out); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
	})
}

// WriteChunkData writes what the general encoder and writer would.
func TestWriteChunkDataMatchesEncoder(t *testing.T) {
	for _, n := range []int{16, 23, 24, 255, 256, 65535, 65536, DefaultChunkSize + ChunkOverhead, MaxChunkSize + ChunkOverhead} {
		data := bytes.Repeat([]byte{0xab}, n)
		var want, got bytes.Buffer
		if _, err := NewChunkFrameWriter(&want).Write(ChunkFrame{Kind: ChunkData, CID: testChunkCID("a"), Data: data}); err != nil {
			t.Fatal(err)
		}
		if _, err := WriteChunkData(&got, testChunkCID("a"), data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%d bytes: WriteChunkData differs from the encoder", n)
		}
	}
	if _, err := WriteChunkData(io.Discard, testChunkCID("a"), make([]byte, MaxChunkFrame)); !errors.Is(err, ErrBadChunkFrame) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestReadViewDataInPlace(t *testing.T) {
	var buf bytes.Buffer
	data := bytes.Repeat([]byte{5}, DefaultChunkSize+ChunkOverhead)
	if _, err := WriteChunkData(&buf, testChunkCID("a"), data); err != nil {
		t.Fatal(err)
	}
	NewChunkFrameWriter(&buf).Write(ChunkFrame{Kind: ChunkMissing, CID: testChunkCID("b")})
	WriteChunkData(&buf, testChunkCID("c"), data[:100])
	r := NewChunkFrameReader(&buf)
	f, _, err := r.ReadView()
	if err != nil || f.Kind != ChunkData || !bytes.Equal(f.CID, testChunkCID("a")) || !bytes.Equal(f.Data, data) {
		t.Fatalf("data frame: kind %d, %v", f.Kind, err)
	}
	f, _, err = r.ReadView()
	if err != nil || f.Kind != ChunkMissing || !bytes.Equal(f.CID, testChunkCID("b")) {
		t.Fatalf("missing frame: kind %d, %v", f.Kind, err)
	}
	f, _, err = r.ReadView()
	if err != nil || f.Kind != ChunkData || len(f.Data) != 100 {
		t.Fatalf("short data frame: kind %d, %v", f.Kind, err)
	}
}

// ReadView's fast path never accepts what the strict decoder refuses, and
// never reads it differently.
func FuzzChunkFrameViewAgrees(f *testing.F) {
	for _, n := range []int{16, 24, 300, 70000} {
		var buf bytes.Buffer
		WriteChunkData(&buf, testChunkCID("a"), make([]byte, n))
		b := buf.Bytes()
		_, k := binaryUvarint(b)
		f.Add(b[k:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, ok := viewData(b)
		if !ok {
			return
		}
		d, err := DecodeChunkFrame(b)
		if err != nil {
			t.Fatalf("view accepted what the decoder refuses: %v", err)
		}
		if d.Kind != v.Kind || !bytes.Equal(d.CID, v.CID) || !bytes.Equal(d.Data, v.Data) || d.Root != nil || d.CIDs != nil || d.Error != "" {
			t.Fatal("view and decoder disagree")
		}
	})
}

func binaryUvarint(b []byte) (uint64, int) {
	var x uint64
	for i, c := range b {
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}
