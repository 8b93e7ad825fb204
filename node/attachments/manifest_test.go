package attachments

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/glitr-chat/glitr/internal/alloccheck"
	"github.com/glitr-chat/glitr/protocol"
)

func fullManifest() Manifest {
	var k, tk [KeySize]byte
	for i := range k {
		k[i], tk[i] = byte(i), byte(255-i)
	}
	size := uint64(5_000_000)
	return Manifest{
		Root: RefOf([]byte("index")), Key: k, ChunkSize: protocol.DefaultChunkSize,
		Size: size, Padded: PaddedSize(size), Name: "Sommer in Nizza — 2026.jpg", Type: "image/jpeg",
		Width: 4032, Height: 3024, DurationMS: 0, Waveform: nil,
		Thumb: &Thumb{Root: RefOf([]byte("thumb")), Key: tk, ChunkSize: protocol.MinChunkSize, Size: 21_000, Padded: PaddedSize(21_000), Type: "image/webp", Width: 320, Height: 240},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	voice := Manifest{Root: RefOf([]byte("v")), ChunkSize: protocol.MinChunkSize, Size: 30_000, Padded: PaddedSize(30_000), Type: "audio/ogg", DurationMS: 12_345, Waveform: bytes.Repeat([]byte{7, 200}, MaxWaveform/2)}
	biggest := fullManifest()
	biggest.Name = strings.Repeat("é", MaxNameLen/2)
	biggest.Type = "application/" + strings.Repeat("x", 63)
	biggest.Waveform = bytes.Repeat([]byte{1}, MaxWaveform)
	biggest.DurationMS = MaxDurationMS
	for name, m := range map[string]Manifest{"photo": fullManifest(), "voice": voice, "bare": {Root: RefOf(nil), ChunkSize: protocol.MaxChunkSize, Padded: MinPadded}, "biggest": biggest} {
		b, err := EncodeManifest(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := DecodeManifest(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: round trip changed the manifest:\n%+v\n%+v", name, got, m)
		}
		if name == "biggest" && len(b) > MaxManifestSize/2 {
			t.Fatalf("the largest manifest takes %d bytes", len(b))
		}
	}
}

func TestManifestRefused(t *testing.T) {
	cases := map[string]func(m *Manifest){
		"chunk size not a power of two": func(m *Manifest) { m.ChunkSize = 300_000 },
		"chunk size too small":          func(m *Manifest) { m.ChunkSize = 32 << 10 },
		"chunk size too large":          func(m *Manifest) { m.ChunkSize = 2 << 20 },
		"too large":                     func(m *Manifest) { m.Size = protocol.MaxFileSize + 1; m.Padded = PaddedSize(m.Size) },
		"padding not the bucket":        func(m *Manifest) { m.Padded = m.Size },
		"name with a slash":             func(m *Manifest) { m.Name = "../etc/passwd" },
		"name with a backslash":         func(m *Manifest) { m.Name = `a\b` },
		"name dot dot":                  func(m *Manifest) { m.Name = ".." },
		"name with a control":           func(m *Manifest) { m.Name = "a\x00b" },
		"name with a bidi override":     func(m *Manifest) { m.Name = "gpj.\u202eexe" },
		"name too long":                 func(m *Manifest) { m.Name = strings.Repeat("a", MaxNameLen+1) },
		"type without subtype":          func(m *Manifest) { m.Type = "image" },
		"type upper case":               func(m *Manifest) { m.Type = "Image/JPEG" },
		"type with parameters":          func(m *Manifest) { m.Type = "text/plain; charset=utf-8" },
		"width too large":               func(m *Manifest) { m.Width = MaxDimension + 1 },
		"duration too long":             func(m *Manifest) { m.DurationMS = MaxDurationMS + 1 },
		"waveform too long":             func(m *Manifest) { m.Waveform = make([]byte, MaxWaveform+1) },
		"thumbnail too large":           func(m *Manifest) { m.Thumb.Size = MaxThumbSize + 1; m.Thumb.Padded = PaddedSize(m.Thumb.Size) },
		"thumbnail not an image":        func(m *Manifest) { m.Thumb.Type = "text/html" },
		"thumbnail bad padding":         func(m *Manifest) { m.Thumb.Padded++ },
		"thumbnail is the file":         func(m *Manifest) { m.Thumb.Root = m.Root },
	}
	for name, mutate := range cases {
		m := fullManifest()
		mutate(&m)
		if err := m.Validate(); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: Validate = %v", name, err)
		}
		if _, err := EncodeManifest(m); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: encoded: %v", name, err)
		}
		// The decoder refuses the same manifest (encoded without checks).
		w := manifestWire{Root: m.Root.Bytes(), Key: m.Key[:], ChunkSize: m.ChunkSize, Size: m.Size, Padded: m.Padded, Name: m.Name, Type: m.Type, Width: m.Width, Height: m.Height, Duration: m.DurationMS, Waveform: m.Waveform,
			Thumb: &thumbWire{Root: m.Thumb.Root.Bytes(), Key: m.Thumb.Key[:], ChunkSize: m.Thumb.ChunkSize, Size: m.Thumb.Size, Padded: m.Thumb.Padded, Type: m.Thumb.Type}}
		b, _ := manifestEnc.Marshal(w)
		if _, err := DecodeManifest(b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: decoded: %v", name, err)
		}
	}
	// Wire-level faults.
	good, _ := EncodeManifest(fullManifest())
	wire := map[string][]byte{
		"oversized":     append(bytes.Repeat([]byte{0}, MaxManifestSize), good...),
		"truncated":     good[:len(good)-1],
		"trailing data": append(append([]byte(nil), good...), 0),
		"unknown field": mustCBOR(t, map[int]any{1: RefOf(nil).Bytes(), 2: make([]byte, 32), 3: protocol.MinChunkSize, 4: 0, 5: MinPadded, 99: 1}),
		"short key":     mustCBOR(t, map[int]any{1: RefOf(nil).Bytes(), 2: make([]byte, 31), 3: protocol.MinChunkSize, 4: 0, 5: MinPadded}),
		"bad root":      mustCBOR(t, map[int]any{1: []byte{1, 0x71, 0x12, 0x20}, 2: make([]byte, 32), 3: protocol.MinChunkSize, 4: 0, 5: MinPadded}),
		"bad utf-8":     mustCBOR(t, map[int]any{1: RefOf(nil).Bytes(), 2: make([]byte, 32), 3: protocol.MinChunkSize, 4: 0, 5: MinPadded, 6: cbor.RawMessage{0x62, 0xff, 0xfe}}),
		"duplicate key": {0xa2, 0x03, 0x01, 0x03, 0x02},
	}
	for name, b := range wire {
		if _, err := DecodeManifest(b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := manifestEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeIndex(t *testing.T) {
	plain := make([]byte, 3*32)
	plain[32] = 7
	refs, err := DecodeIndex(plain, 3)
	if err != nil || len(refs) != 3 || refs[1][0] != 7 {
		t.Fatalf("DecodeIndex: %v", err)
	}
	for _, tc := range []struct {
		n, want int
	}{{95, 3}, {96, 2}, {96, 4}, {0, 1}} {
		if _, err := DecodeIndex(make([]byte, tc.n), tc.want); !errors.Is(err, ErrBadIndex) {
			t.Errorf("%d bytes for %d chunks: %v", tc.n, tc.want, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good, _ := EncodeManifest(fullManifest())
	f.Add(good)
	bare, _ := EncodeManifest(Manifest{Root: RefOf(nil), ChunkSize: protocol.MinChunkSize, Padded: MinPadded})
	f.Add(bare)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Manifest
		var err error
		alloccheck.Check(t, "DecodeManifest", b, 16, func() { m, err = DecodeManifest(b) })
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error without ErrBadManifest: %v", err)
			}
			return
		}
		out, err := EncodeManifest(m)
		if err != nil {
			t.Fatalf("a decoded manifest does not encode: %v", err)
		}
		again, err := DecodeManifest(out)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoded manifest differs: %v", err)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add(make([]byte, 64), 2)
	f.Add(make([]byte, 33), 1)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		want = max(0, min(want, 1<<12))
		refs, err := DecodeIndex(b, want)
		if err != nil {
			return
		}
		if len(refs) != want || len(b) != 32*want {
			t.Fatalf("%d refs from %d bytes, want %d", len(refs), len(b), want)
		}
		for i, r := range refs {
			if !bytes.Equal(r[:], b[32*i:32*i+32]) {
				t.Fatalf("ref %d differs from its bytes", i)
			}
		}
	})
}

// A sealed chunk from the network is opened only after its CID matched,
// but the open must hold for any bytes: no panic, and only the sealed
// bytes open.
func FuzzOpenChunk(f *testing.F) {
	var key [KeySize]byte
	s := newSealer(key)
	f.Add(s.sealChunk(nil, []byte("hello"), 0), 0)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, b []byte, i int) {
		i = max(0, min(i, 1<<12))
		if len(b) > protocol.MaxChunkSize+protocol.ChunkOverhead {
			return
		}
		plain, err := s.openChunk(nil, b, i)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v", err)
			}
			return
		}
		if !bytes.Equal(s.sealChunk(nil, plain, i), b) {
			t.Fatal("opened bytes that do not re-seal to the input")
		}
	})
}
