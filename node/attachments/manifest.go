package attachments

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/glitr-chat/glitr/protocol"
)

// Manifest limits (docs/attachments.md §1).
const (
	// MaxManifestSize caps an encoded manifest: the largest valid one
	// (every field at its cap, with a thumbnail) is about 1 KiB.
	MaxManifestSize = 2 << 10
	// MaxNameLen caps the file name, in bytes of UTF-8.
	MaxNameLen = 255
	// MaxTypeLen caps the media type.
	MaxTypeLen = 127
	// MaxWaveform caps a voice note's waveform: one byte per sample.
	MaxWaveform = 256
	// MaxDimension caps a width or height in pixels.
	MaxDimension = 1 << 16
	// MaxDurationMS caps a duration: 24 hours.
	MaxDurationMS = 24 * 3600 * 1000
	// MaxThumbSize caps a thumbnail's exact size; a thumbnail is one
	// chunk, fetched eagerly.
	MaxThumbSize = protocol.MinChunkSize
)

// Manifest is what a message carries about an attachment, inside the
// message's encrypted block: everything needed to fetch, check and open
// the file, and what the UI shows before it is fetched. Nothing in it
// leaves the conversation.
type Manifest struct {
	// Root is the sealed chunk index: the list of the data chunks' refs,
	// sealed under Key. Fetching starts there.
	Root Ref
	// Key is the file key, random per file.
	Key [KeySize]byte
	// ChunkSize is the plaintext size of every data chunk but the last.
	ChunkSize uint32
	// Size is the exact size of the file; Padded (= PaddedSize(Size)) is
	// what is stored and sent.
	Size, Padded uint64
	// Name is the file name (no directories); Type its media type
	// ("image/jpeg"). Both may be empty.
	Name, Type string
	// Width and Height are an image's or video's size in pixels (0:
	// unknown or not a picture).
	Width, Height uint32
	// DurationMS is a voice note's, audio's or video's length (0:
	// unknown).
	DurationMS uint32
	// Waveform is a voice note's loudness, one byte per sample (≤ 256).
	Waveform []byte
	// Thumb is the sender-made thumbnail of an image or video, itself a
	// small sealed file.
	Thumb *Thumb
}

// Thumb is a thumbnail: a one-chunk file of its own (own root and key),
// fetched eagerly while the file it shows is fetched on demand.
type Thumb struct {
	Root          Ref
	Key           [KeySize]byte
	ChunkSize     uint32
	Size, Padded  uint64
	Type          string
	Width, Height uint32
}

// Manifest returns the thumbnail as a file manifest, to fetch or open it.
func (t Thumb) Manifest() Manifest {
	return Manifest{Root: t.Root, Key: t.Key, ChunkSize: t.ChunkSize, Size: t.Size, Padded: t.Padded, Type: t.Type, Width: t.Width, Height: t.Height}
}

// ThumbOf makes a thumbnail reference from the manifest of an imported
// thumbnail file, checking that it can serve as one.
func ThumbOf(m Manifest) (*Thumb, error) {
	t := &Thumb{Root: m.Root, Key: m.Key, ChunkSize: m.ChunkSize, Size: m.Size, Padded: m.Padded, Type: m.Type, Width: m.Width, Height: m.Height}
	if err := t.validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// Chunks is the number of data chunks.
func (m Manifest) Chunks() int { return chunkCount(m.Padded, m.ChunkSize) }

// SealedSize is what the file takes in a store and on the wire: the
// sealed data chunks and the sealed index.
func (m Manifest) SealedSize() uint64 {
	return m.Padded + uint64(m.Chunks())*protocol.ChunkOverhead + uint64(indexSealedLen(m.Padded, m.ChunkSize))
}

// The wire form: a CBOR map with small integer keys (canonical encoding),
// refs as CID bytes.
type manifestWire struct {
	Root      []byte     `cbor:"1,keyasint"`
	Key       []byte     `cbor:"2,keyasint"`
	ChunkSize uint32     `cbor:"3,keyasint"`
	Size      uint64     `cbor:"4,keyasint"`
	Padded    uint64     `cbor:"5,keyasint"`
	Name      string     `cbor:"6,keyasint,omitempty"`
	Type      string     `cbor:"7,keyasint,omitempty"`
	Width     uint32     `cbor:"8,keyasint,omitempty"`
	Height    uint32     `cbor:"9,keyasint,omitempty"`
	Duration  uint32     `cbor:"10,keyasint,omitempty"`
	Waveform  []byte     `cbor:"11,keyasint,omitempty"`
	Thumb     *thumbWire `cbor:"12,keyasint,omitempty"`
}

type thumbWire struct {
	Root      []byte `cbor:"1,keyasint"`
	Key       []byte `cbor:"2,keyasint"`
	ChunkSize uint32 `cbor:"3,keyasint"`
	Size      uint64 `cbor:"4,keyasint"`
	Padded    uint64 `cbor:"5,keyasint"`
	Type      string `cbor:"7,keyasint,omitempty"`
	Width     uint32 `cbor:"8,keyasint,omitempty"`
	Height    uint32 `cbor:"9,keyasint,omitempty"`
}

var (
	manifestEnc = func() cbor.EncMode {
		em, err := cbor.CanonicalEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return em
	}()
	manifestDec = protocol.MustDecMode(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	})
)

// EncodeManifest validates and encodes m.
func EncodeManifest(m Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	w := manifestWire{
		Root: m.Root.Bytes(), Key: m.Key[:], ChunkSize: m.ChunkSize, Size: m.Size, Padded: m.Padded,
		Name: m.Name, Type: m.Type, Width: m.Width, Height: m.Height, Duration: m.DurationMS, Waveform: m.Waveform,
	}
	if t := m.Thumb; t != nil {
		w.Thumb = &thumbWire{Root: t.Root.Bytes(), Key: t.Key[:], ChunkSize: t.ChunkSize, Size: t.Size, Padded: t.Padded, Type: t.Type, Width: t.Width, Height: t.Height}
	}
	b, err := manifestEnc.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("attachments: encode manifest: %w", err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes encoded > %d", ErrBadManifest, len(b), MaxManifestSize)
	}
	return b, nil
}

// DecodeManifest parses and validates an untrusted manifest (it comes
// from another member's block, and members can be hostile).
func DecodeManifest(b []byte) (Manifest, error) {
	if len(b) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: %d bytes > %d", ErrBadManifest, len(b), MaxManifestSize)
	}
	var w manifestWire
	if err := manifestDec.Unmarshal(b, &w); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	m := Manifest{
		ChunkSize: w.ChunkSize, Size: w.Size, Padded: w.Padded, Name: w.Name, Type: w.Type,
		Width: w.Width, Height: w.Height, DurationMS: w.Duration, Waveform: w.Waveform,
	}
	var err error
	if m.Root, m.Key, err = refAndKey(w.Root, w.Key); err != nil {
		return Manifest{}, err
	}
	if tw := w.Thumb; tw != nil {
		t := &Thumb{ChunkSize: tw.ChunkSize, Size: tw.Size, Padded: tw.Padded, Type: tw.Type, Width: tw.Width, Height: tw.Height}
		if t.Root, t.Key, err = refAndKey(tw.Root, tw.Key); err != nil {
			return Manifest{}, fmt.Errorf("thumbnail: %w", err)
		}
		m.Thumb = t
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func refAndKey(root, key []byte) (Ref, [KeySize]byte, error) {
	var k [KeySize]byte
	r, err := ParseRef(root)
	if err != nil {
		return Ref{}, k, fmt.Errorf("%w: root: %w", ErrBadManifest, err)
	}
	if len(key) != KeySize {
		return Ref{}, k, fmt.Errorf("%w: key of %d bytes", ErrBadManifest, len(key))
	}
	return r, [KeySize]byte(key), nil
}

// Validate checks every field against its limits and the sizes against
// each other.
func (m Manifest) Validate() error {
	if err := checkShape(m.ChunkSize, m.Size, m.Padded); err != nil {
		return err
	}
	if len(m.Name) > MaxNameLen {
		return fmt.Errorf("%w: name of %d bytes > %d", ErrBadManifest, len(m.Name), MaxNameLen)
	}
	if err := checkName(m.Name); err != nil {
		return err
	}
	if err := checkType(m.Type); err != nil {
		return err
	}
	if err := checkDims(m.Width, m.Height); err != nil {
		return err
	}
	if m.DurationMS > MaxDurationMS {
		return fmt.Errorf("%w: duration %d ms > %d", ErrBadManifest, m.DurationMS, MaxDurationMS)
	}
	if len(m.Waveform) > MaxWaveform {
		return fmt.Errorf("%w: waveform of %d samples > %d", ErrBadManifest, len(m.Waveform), MaxWaveform)
	}
	if m.Thumb != nil {
		if err := m.Thumb.validate(); err != nil {
			return err
		}
		if m.Thumb.Root == m.Root {
			return fmt.Errorf("%w: the thumbnail is the file itself", ErrBadManifest)
		}
	}
	return nil
}

func (t Thumb) validate() error {
	if err := checkShape(t.ChunkSize, t.Size, t.Padded); err != nil {
		return fmt.Errorf("thumbnail: %w", err)
	}
	if t.Size > MaxThumbSize {
		return fmt.Errorf("%w: thumbnail of %d bytes > %d", ErrBadManifest, t.Size, MaxThumbSize)
	}
	if !strings.HasPrefix(t.Type, "image/") {
		return fmt.Errorf("%w: thumbnail of type %q, not an image", ErrBadManifest, t.Type)
	}
	if err := checkType(t.Type); err != nil {
		return fmt.Errorf("thumbnail: %w", err)
	}
	return checkDims(t.Width, t.Height)
}

func checkShape(chunkSize uint32, size, padded uint64) error {
	if !validChunkSize(chunkSize) {
		return fmt.Errorf("%w: chunk size %d is not a power of two in [%d, %d]", ErrBadManifest, chunkSize, protocol.MinChunkSize, protocol.MaxChunkSize)
	}
	if size > protocol.MaxFileSize {
		return fmt.Errorf("%w: %w: %d bytes > %d", ErrBadManifest, ErrTooLarge, size, protocol.MaxFileSize)
	}
	if p := PaddedSize(size); padded != p {
		return fmt.Errorf("%w: padded size %d, want %d for %d bytes", ErrBadManifest, padded, p, size)
	}
	return nil
}

func checkDims(w, h uint32) error {
	if w > MaxDimension || h > MaxDimension {
		return fmt.Errorf("%w: %d×%d pixels, over %d", ErrBadManifest, w, h, MaxDimension)
	}
	return nil
}

// checkName: a file name to show and to save under, so no directory
// separators, no control characters (which could fake an extension in a
// UI: U+202E), no "." or "..".
func checkName(name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("%w: name %q", ErrBadManifest, name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: name is not UTF-8", ErrBadManifest)
	}
	for _, r := range name {
		switch {
		case r == '/' || r == '\\':
			return fmt.Errorf("%w: name has a directory separator", ErrBadManifest)
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r):
			return fmt.Errorf("%w: name has control character %U", ErrBadManifest, r)
		}
	}
	return nil
}

// checkType: "type/subtype" of RFC 6838 restricted-name characters, lower
// case, no parameters.
func checkType(t string) error {
	if t == "" {
		return nil
	}
	if len(t) > MaxTypeLen {
		return fmt.Errorf("%w: media type of %d bytes > %d", ErrBadManifest, len(t), MaxTypeLen)
	}
	typ, sub, ok := strings.Cut(t, "/")
	if !ok || !restrictedName(typ) || !restrictedName(sub) {
		return fmt.Errorf("%w: media type %q is not type/subtype", ErrBadManifest, t)
	}
	return nil
}

func restrictedName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && strings.IndexByte("!#$&-^_.+", c) >= 0:
		default:
			return false
		}
	}
	return true
}
