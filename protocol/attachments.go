package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// ChunkProtocol is the stream protocol that moves attachment chunks between
// members (docs/attachments.md §4). The fetcher opens the stream and sends
// Want frames, each naming a file root and a batch of chunk CIDs; the
// server answers every CID of a Want, in order, with a Chunk or a Missing
// frame, and reads the next Want. One stream carries many Wants, so a
// fetcher keeps several chunks in flight on one stream.
const ChunkProtocol protocol.ID = "/glitr/chunk/1.0.0"

// Attachment limits that are part of the protocol: every implementation
// must accept what they allow and refuse what they do not.
const (
	// MaxFileSize is the largest attachment, in plaintext bytes (256 MiB).
	MaxFileSize = 256 << 20
	// MinChunkSize and MaxChunkSize bound a file's chunk size (a power of
	// two); DefaultChunkSize is what Glitr picks (docs/attachments.md §7).
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 1 << 20
	DefaultChunkSize = 256 << 10
	// ChunkOverhead is what sealing adds to a chunk (the AEAD tag).
	ChunkOverhead = 16
	// MaxChunkFrame caps a chunk-protocol frame: the largest sealed chunk
	// (a data chunk of MaxChunkSize, or the chunk index of a file at
	// MinChunkSize, which is smaller) plus the frame's own fields.
	MaxChunkFrame = MaxChunkSize + ChunkOverhead + 256
	// MaxWantChunks caps the CIDs of one Want frame.
	MaxWantChunks = 64
	// ChunkCIDLen is the length of a chunk CID in bytes: CIDv1, raw
	// codec, sha2-256 (0x01 0x55 0x12 0x20 and a 32-byte digest).
	ChunkCIDLen = 36
)

// chunkCIDPrefix is the fixed prefix of every chunk CID.
var chunkCIDPrefix = [4]byte{0x01, 0x55, 0x12, 0x20}

// Chunk frame kinds.
const (
	// ChunkWant (fetcher → server): Root and 1..MaxWantChunks CIDs.
	ChunkWant = 1
	// ChunkData (server → fetcher): CID and its sealed bytes.
	ChunkData = 2
	// ChunkMissing (server → fetcher): the server does not hold CID.
	ChunkMissing = 3
	// ChunkError (server → fetcher): the server gives up; Error says why.
	ChunkError = 4
)

// Chunk error reasons.
const (
	// ChunkReasonUnknown: the server holds no file by that root, or will
	// not serve it to this peer; it says no more, so that a non-member
	// learns nothing of which files it holds.
	ChunkReasonUnknown = "unknown"
	// ChunkReasonBusy: too many streams; retry later.
	ChunkReasonBusy = "busy"
)

// ErrBadChunkFrame marks a malformed or oversized chunk-protocol frame.
var ErrBadChunkFrame = errors.New("chunk: bad frame")

// ChunkFrame is one chunk-protocol message. Absent fields are zero.
type ChunkFrame struct {
	Kind  int      `cbor:"1,keyasint"`
	Root  []byte   `cbor:"2,keyasint,omitempty"` // Want: the file's root CID
	CIDs  [][]byte `cbor:"3,keyasint,omitempty"` // Want: chunk CIDs
	CID   []byte   `cbor:"4,keyasint,omitempty"` // Data, Missing
	Data  []byte   `cbor:"5,keyasint,omitempty"` // Data: the sealed chunk
	Error string   `cbor:"6,keyasint,omitempty"` // Error
}

var (
	chunkEnc = mustEncMode(cbor.CanonicalEncOptions())
	chunkDec = MustDecMode(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxWantChunks,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
)

func mustEncMode(o cbor.EncOptions) cbor.EncMode {
	em, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}

// ValidChunkCID reports whether b is a chunk CID: CIDv1, raw codec,
// sha2-256 with a 32-byte digest, nothing else.
func ValidChunkCID(b []byte) bool {
	return len(b) == ChunkCIDLen && [4]byte(b[:4]) == chunkCIDPrefix
}

// ChunkCID returns the chunk CID bytes of a sha2-256 digest.
func ChunkCID(digest [32]byte) []byte {
	b := make([]byte, 0, ChunkCIDLen)
	b = append(b, chunkCIDPrefix[:]...)
	return append(b, digest[:]...)
}

// EncodeChunkFrame encodes f, refusing one over MaxChunkFrame.
func EncodeChunkFrame(f ChunkFrame) ([]byte, error) {
	b, err := chunkEnc.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode chunk frame: %w", err)
	}
	if len(b) > MaxChunkFrame {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrBadChunkFrame, len(b), MaxChunkFrame)
	}
	return b, nil
}

// DecodeChunkFrame parses and checks an untrusted frame: the kind, the
// fields that kind requires and no others, and every CID's form.
func DecodeChunkFrame(b []byte) (ChunkFrame, error) {
	var f ChunkFrame
	if len(b) > MaxChunkFrame {
		return f, fmt.Errorf("%w: %d bytes > %d", ErrBadChunkFrame, len(b), MaxChunkFrame)
	}
	if err := chunkDec.Unmarshal(b, &f); err != nil {
		return ChunkFrame{}, fmt.Errorf("%w: %w", ErrBadChunkFrame, err)
	}
	if err := checkChunkFrame(f); err != nil {
		return ChunkFrame{}, err
	}
	return f, nil
}

func checkChunkFrame(f ChunkFrame) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: kind %d: %s", ErrBadChunkFrame, f.Kind, fmt.Sprintf(format, args...))
	}
	switch f.Kind {
	case ChunkWant:
		if !ValidChunkCID(f.Root) {
			return bad("root is not a chunk CID (%d bytes)", len(f.Root))
		}
		if len(f.CIDs) == 0 || len(f.CIDs) > MaxWantChunks {
			return bad("%d CIDs, want 1..%d", len(f.CIDs), MaxWantChunks)
		}
		for i, c := range f.CIDs {
			if !ValidChunkCID(c) {
				return bad("CID %d is not a chunk CID (%d bytes)", i, len(c))
			}
		}
		if f.CID != nil || f.Data != nil || f.Error != "" {
			return bad("fields of another kind")
		}
	case ChunkData, ChunkMissing:
		if !ValidChunkCID(f.CID) {
			return bad("not a chunk CID (%d bytes)", len(f.CID))
		}
		if f.Kind == ChunkData && len(f.Data) < ChunkOverhead {
			return bad("%d data bytes, less than a sealed chunk", len(f.Data))
		}
		if f.Kind == ChunkMissing && f.Data != nil {
			return bad("data in a missing frame")
		}
		if f.Root != nil || f.CIDs != nil || f.Error != "" {
			return bad("fields of another kind")
		}
	case ChunkError:
		if len(f.Error) == 0 || len(f.Error) > 64 {
			return bad("reason of %d bytes", len(f.Error))
		}
		if f.Root != nil || f.CIDs != nil || f.CID != nil || f.Data != nil {
			return bad("fields of another kind")
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrBadChunkFrame, f.Kind)
	}
	return nil
}

// ChunkFrameWriter writes length-prefixed chunk frames; the caller buffers
// and flushes.
type ChunkFrameWriter struct{ w msgio.WriteCloser }

// NewChunkFrameWriter wraps w.
func NewChunkFrameWriter(w io.Writer) *ChunkFrameWriter {
	return &ChunkFrameWriter{w: msgio.NewVarintWriter(w)}
}

// Write encodes and writes one frame, returning its size without the
// length prefix.
func (fw *ChunkFrameWriter) Write(f ChunkFrame) (int, error) {
	b, err := EncodeChunkFrame(f)
	if err != nil {
		return 0, err
	}
	return len(b), fw.w.WriteMsg(b)
}

// ChunkFrameReader reads length-prefixed chunk frames, refusing one longer
// than MaxChunkFrame on its length prefix, before reading or allocating
// its body.
type ChunkFrameReader struct {
	r    msgio.ReadCloser
	held []byte // the buffer the last ReadView frame aliases
}

// NewChunkFrameReader wraps r.
func NewChunkFrameReader(r io.Reader) *ChunkFrameReader {
	return &ChunkFrameReader{r: msgio.NewVarintReaderSize(r, MaxChunkFrame)}
}

// Read reads and decodes one frame and returns its size too. The frame's
// byte slices are its own (the decoder copies them out of the pooled
// read buffer).
func (fr *ChunkFrameReader) Read() (ChunkFrame, int, error) {
	if fr.held != nil {
		fr.r.ReleaseMsg(fr.held)
		fr.held = nil
	}
	b, err := fr.r.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return ChunkFrame{}, 0, fmt.Errorf("%w: %w", ErrBadChunkFrame, err)
		}
		return ChunkFrame{}, 0, err
	}
	defer fr.r.ReleaseMsg(b)
	f, err := DecodeChunkFrame(b)
	return f, len(b), err
}

// WriteChunkData writes a Data frame for cid and sealed without copying sealed
// into an encoded frame first: the bytes are exactly EncodeChunkFrame's
// (canonical CBOR {1: 2, 4: cid, 5: sealed}) behind a varint length, and
// a server writes 256 KiB chunks at the speed of its buffer.
func WriteChunkData(w io.Writer, cid, sealed []byte) (int, error) {
	if !ValidChunkCID(cid) || len(sealed) < ChunkOverhead {
		return 0, fmt.Errorf("%w: data frame for a %d-byte CID, %d bytes", ErrBadChunkFrame, len(cid), len(sealed))
	}
	hdr := make([]byte, 0, 64)
	hdr = append(hdr, 0xa3, 0x01, ChunkData, 0x04, 0x58, ChunkCIDLen)
	hdr = append(hdr, cid...)
	hdr = append(hdr, 0x05)
	hdr = appendCBORBytesHead(hdr, len(sealed))
	n := len(hdr) + len(sealed)
	if n > MaxChunkFrame {
		return 0, fmt.Errorf("%w: %d bytes > %d", ErrBadChunkFrame, n, MaxChunkFrame)
	}
	prefix := binary.AppendUvarint(nil, uint64(n))
	for _, b := range [][]byte{prefix, hdr, sealed} {
		if _, err := w.Write(b); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// appendCBORBytesHead appends the head of a CBOR byte string of n bytes.
func appendCBORBytesHead(b []byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, 0x40|byte(n))
	case n <= 0xff:
		return append(b, 0x58, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0x59), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0x5a), uint32(n))
	}
}

// ReadView is Read for the hot path of a fetcher: a Data frame in the
// canonical encoding WriteChunkData produces is parsed in place, and its
// CID and Data alias the reader's buffer, valid until the next call to
// ReadView or Read (no 256 KiB copy into fresh memory per chunk, which
// cost more than hashing it). Any other frame is decoded as Read does.
// What ReadView accepts, DecodeChunkFrame accepts with the same fields
// (FuzzChunkFrameViewAgrees).
func (fr *ChunkFrameReader) ReadView() (ChunkFrame, int, error) {
	if fr.held != nil {
		fr.r.ReleaseMsg(fr.held)
		fr.held = nil
	}
	b, err := fr.r.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return ChunkFrame{}, 0, fmt.Errorf("%w: %w", ErrBadChunkFrame, err)
		}
		return ChunkFrame{}, 0, err
	}
	if f, ok := viewData(b); ok {
		fr.held = b
		return f, len(b), nil
	}
	defer fr.r.ReleaseMsg(b)
	f, err := DecodeChunkFrame(b)
	return f, len(b), err
}

// viewData parses b as a canonical Data frame, without copying.
func viewData(b []byte) (ChunkFrame, bool) {
	const hdr = 6 + ChunkCIDLen + 1 // map, kind, CID key and head, CID, data key
	if len(b) < hdr+1 || len(b) > MaxChunkFrame {
		return ChunkFrame{}, false
	}
	if [6]byte(b[:6]) != [6]byte{0xa3, 0x01, ChunkData, 0x04, 0x58, ChunkCIDLen} || b[hdr-1] != 0x05 {
		return ChunkFrame{}, false
	}
	cid := b[6 : 6+ChunkCIDLen]
	if !ValidChunkCID(cid) {
		return ChunkFrame{}, false
	}
	rest := b[hdr:]
	var n, head int
	switch {
	case rest[0] >= 0x40 && rest[0] < 0x58:
		n, head = int(rest[0]-0x40), 1
	case rest[0] == 0x58 && len(rest) >= 2:
		n, head = int(rest[1]), 2
	case rest[0] == 0x59 && len(rest) >= 3:
		n, head = int(binary.BigEndian.Uint16(rest[1:])), 3
	case rest[0] == 0x5a && len(rest) >= 5:
		n, head = int(binary.BigEndian.Uint32(rest[1:])), 5
	default:
		return ChunkFrame{}, false
	}
	// Canonical: the shortest head for n, and nothing after the data.
	if len(rest) != head+n || len(appendCBORBytesHead(nil, n)) != head || n < ChunkOverhead {
		return ChunkFrame{}, false
	}
	return ChunkFrame{Kind: ChunkData, CID: cid, Data: rest[head:]}, true
}
