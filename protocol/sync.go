package protocol

import (
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// SyncProtocolRecon is version 1.1.0 of catch-up sync: 1.0.0 plus the
// reconciliation fallback. After both Done frames the initiator either
// closes or opens range-based set reconciliation with a Reconcile frame;
// neither side half-closes after its first Done. Nodes serve both
// versions and initiators prefer this one (docs/sync.md §9).
const SyncProtocolRecon protocol.ID = "/glitr/sync/1.1.0"

// Catch-up sync runs over SyncProtocol streams as a sequence of
// length-prefixed (unsigned varint) CBOR frames. Both sides send a Hello at
// once, then each streams Blocks frames with everything the other lacks and
// ends with Done: one round trip, however deep the DAG. See docs/protocol.md.

// Frame size limits. A Blocks frame holds many envelopes (each ≤ 64 KiB plus
// header); 1 MiB frames keep per-frame overhead low without letting a peer
// make us buffer more than a few MiB.
const (
	MaxSyncFrame      = 1 << 20
	MaxFrameEnvelopes = 4096
	MaxHelloHeads     = 256
	MaxHelloAuthors   = 4096
	MaxSyncIDLen      = 64
)

// Frame kinds.
const (
	FrameHello  = 1
	FrameBlocks = 2
	FrameDone   = 3
	FrameError  = 4
	// FrameReconcile carries one reconciliation message (version 1.1.0
	// only), in the binary format of dag.EncodeReconMessage.
	FrameReconcile = 5
)

// Error frame reasons (docs/sync.md §3).
const (
	// SyncReasonUnknown: the responder holds no DAG by that sync id (or
	// will not say).
	SyncReasonUnknown = "unknown"
	// SyncReasonBusy: too many sessions; retry later.
	SyncReasonBusy = "busy"
	// SyncReasonUnavailable: the responder cannot serve the DAG now (a
	// local failure).
	SyncReasonUnavailable = "unavailable"
)

// ErrBadFrame marks a malformed or oversized sync frame.
var ErrBadFrame = errors.New("sync: bad frame")

// Hello opens a sync session for one DAG. SyncID is derived from the
// conversation secret, so only members can name a conversation; Heads and
// Vector describe the sender's store (which, being downward-closed and made
// of per-author chains, the vector summarises exactly).
type Hello struct {
	SyncID []byte            `cbor:"1,keyasint"`
	Heads  [][]byte          `cbor:"2,keyasint"` // CID bytes
	Vector map[string]uint64 `cbor:"3,keyasint"` // device id (32 raw bytes as string) -> highest seq
	Count  uint64            `cbor:"4,keyasint"` // blocks the sender holds, for progress
}

// Frame is one sync message.
type Frame struct {
	Kind      int      `cbor:"1,keyasint"`
	Hello     *Hello   `cbor:"2,keyasint,omitempty"`
	Envelopes [][]byte `cbor:"3,keyasint,omitempty"` // Blocks: encoded envelopes in topological order
	Sent      uint64   `cbor:"4,keyasint,omitempty"` // Done: number of envelopes streamed
	Error     string   `cbor:"5,keyasint,omitempty"` // Error: why the peer gave up
	Recon     []byte   `cbor:"6,keyasint,omitempty"` // Reconcile: the message
}

var (
	frameEnc cbor.EncMode
	frameDec cbor.DecMode
)

func init() {
	var err error
	// Vector keys are raw device ids, not text: Go strings go on the wire
	// as CBOR byte strings (text strings must be valid UTF-8).
	encOpts := cbor.CanonicalEncOptions()
	encOpts.String = cbor.StringToByteString
	if frameEnc, err = encOpts.EncMode(); err != nil {
		panic(err)
	}
	if frameDec, err = (cbor.DecOptions{
		DupMapKey:          cbor.DupMapKeyEnforcedAPF,
		IndefLength:        cbor.IndefLengthForbidden,
		MaxNestedLevels:    6,
		MaxArrayElements:   MaxFrameEnvelopes,
		MaxMapPairs:        MaxHelloAuthors,
		ByteStringToString: cbor.ByteStringToStringAllowed,
		ExtraReturnErrors:  cbor.ExtraDecErrorUnknownField,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// EncodeFrame encodes f.
func EncodeFrame(f Frame) ([]byte, error) {
	b, err := frameEnc.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode sync frame: %w", err)
	}
	if len(b) > MaxSyncFrame {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrBadFrame, len(b), MaxSyncFrame)
	}
	return b, nil
}

// DecodeFrame parses and checks an untrusted frame.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if len(b) > MaxSyncFrame {
		return f, fmt.Errorf("%w: %d bytes > %d", ErrBadFrame, len(b), MaxSyncFrame)
	}
	if err := frameDec.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	switch f.Kind {
	case FrameHello:
		h := f.Hello
		if h == nil {
			return f, fmt.Errorf("%w: hello without body", ErrBadFrame)
		}
		if len(h.SyncID) == 0 || len(h.SyncID) > MaxSyncIDLen {
			return f, fmt.Errorf("%w: sync id of %d bytes", ErrBadFrame, len(h.SyncID))
		}
		if len(h.Heads) > MaxHelloHeads {
			return f, fmt.Errorf("%w: %d heads > %d", ErrBadFrame, len(h.Heads), MaxHelloHeads)
		}
		for k := range h.Vector {
			if len(k) != 32 {
				return f, fmt.Errorf("%w: vector key of %d bytes", ErrBadFrame, len(k))
			}
		}
	case FrameBlocks:
		if len(f.Envelopes) == 0 {
			return f, fmt.Errorf("%w: empty blocks frame", ErrBadFrame)
		}
	case FrameReconcile:
		// The message itself is checked by its own decoder; an empty
		// one is not a message (the shortest encodes as three bytes).
		if len(f.Recon) == 0 {
			return f, fmt.Errorf("%w: empty reconcile frame", ErrBadFrame)
		}
	case FrameDone, FrameError:
	default:
		return f, fmt.Errorf("%w: unknown kind %d", ErrBadFrame, f.Kind)
	}
	return f, nil
}

// FrameWriter writes length-prefixed frames; the caller buffers and flushes.
type FrameWriter struct{ w msgio.WriteCloser }

// NewFrameWriter wraps w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: msgio.NewVarintWriter(w)} }

// Write encodes and writes one frame.
func (fw *FrameWriter) Write(f Frame) (int, error) {
	b, err := EncodeFrame(f)
	if err != nil {
		return 0, err
	}
	return len(b), fw.w.WriteMsg(b)
}

// FrameReader reads length-prefixed frames, refusing any longer than
// MaxSyncFrame before allocating for it.
type FrameReader struct{ r msgio.ReadCloser }

// NewFrameReader wraps r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: msgio.NewVarintReaderSize(r, MaxSyncFrame)}
}

// Read reads and decodes one frame, returning its wire size too.
func (fr *FrameReader) Read() (Frame, int, error) {
	b, err := fr.r.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return Frame{}, 0, fmt.Errorf("%w: %w", ErrBadFrame, err)
		}
		return Frame{}, 0, err
	}
	// The decoder copies byte strings out, so the pooled buffer can go
	// back at once (TestFrameReaderDoesNotAlias checks this).
	defer fr.r.ReleaseMsg(b)
	f, err := DecodeFrame(b)
	return f, len(b), err
}
