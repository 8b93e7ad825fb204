package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
)

// DeviceID is the Ed25519 public key of the device that authored an event.
type DeviceID [32]byte

// AccountID is the Ed25519 public key of an account root.
type AccountID [32]byte

// Event is one DAG block as seen by the CRDT layer. The dag store verifies
// the signature, the height and the device certificate before handing the
// event over; crdt re-checks the structural invariants it relies on.
type Event struct {
	ID      cid.Cid   // block (envelope) CID
	Parents []cid.Cid // at most MaxParents, all applied before this event
	Device  DeviceID  // authoring device
	Account AccountID // resolved by the caller from the verified device certificate
	Seq     uint64    // per-device sequence number in this DAG: 1, 2, 3, ...
	Height  uint64    // 1 + max parent height
	Lamport uint64    // > every parent's Lamport
	Time    int64     // author's wall clock, unix ms; display only
	Ops     []Op
}

// MsgID identifies a message: the CID of the event that carries it and the
// index of the message op among that event's ops. It is stable on every
// replica and needs no extra wire field.
type MsgID struct {
	Event cid.Cid
	Index uint16
}

// String renders the id as "<cid>/<index>".
func (m MsgID) String() string { return fmt.Sprintf("%s/%d", m.Event, m.Index) }

// ParseMsgID reads what String writes: "<event cid>/<op index>".
func ParseMsgID(s string) (MsgID, error) {
	cs, idx, found := strings.Cut(s, "/")
	if !found {
		return MsgID{}, fmt.Errorf("message id %q: want <cid>/<index>", s)
	}
	c, err := cid.Decode(cs)
	if err != nil {
		return MsgID{}, fmt.Errorf("message id %q: %w", s, err)
	}
	i, err := strconv.ParseUint(idx, 10, 16)
	if err != nil {
		return MsgID{}, fmt.Errorf("message id %q: index: %w", s, err)
	}
	return MsgID{Event: c, Index: uint16(i)}, nil
}

// DevSeq is one entry of a Position: every event of Device with a sequence
// number ≤ Seq is covered.
type DevSeq struct {
	_      struct{} `cbor:",toarray"`
	Device DeviceID
	Seq    uint64
}

// Position is a causal position in one conversation DAG: a version vector,
// sorted by device, without zero entries. An event (d, s) is covered by a
// position p when p's entry for d is ≥ s. Positions form a join
// semilattice under Merge, which is what makes receipts and read marks
// max registers.
type Position []DevSeq

// Covers reports whether the event with the given device and sequence
// number lies within p.
func (p Position) Covers(d DeviceID, seq uint64) bool {
	i, ok := slices.BinarySearchFunc(p, d, func(e DevSeq, t DeviceID) int { return bytes.Compare(e.Device[:], t[:]) })
	return ok && p[i].Seq >= seq
}

// Get returns p's entry for d (0 if absent).
func (p Position) Get(d DeviceID) uint64 {
	i, ok := slices.BinarySearchFunc(p, d, func(e DevSeq, t DeviceID) int { return bytes.Compare(e.Device[:], t[:]) })
	if !ok {
		return 0
	}
	return p[i].Seq
}

// Merge returns the pointwise maximum of p and q. Neither input is modified.
func (p Position) Merge(q Position) Position {
	out := make(Position, 0, max(len(p), len(q)))
	i, j := 0, 0
	for i < len(p) && j < len(q) {
		switch c := bytes.Compare(p[i].Device[:], q[j].Device[:]); {
		case c < 0:
			out = append(out, p[i])
			i++
		case c > 0:
			out = append(out, q[j])
			j++
		default:
			out = append(out, DevSeq{Device: p[i].Device, Seq: max(p[i].Seq, q[j].Seq)})
			i++
			j++
		}
	}
	out = append(out, p[i:]...)
	return append(out, q[j:]...)
}

// valid reports whether p is sorted by device, without duplicates or zero
// entries — the only form accepted on the wire.
func (p Position) valid() bool {
	for i, e := range p {
		if e.Seq == 0 {
			return false
		}
		if i > 0 && bytes.Compare(p[i-1].Device[:], e.Device[:]) >= 0 {
			return false
		}
	}
	return true
}

// Limits. They bound memory per event; the dag layer caps a block at 64 KiB.
const (
	// MaxParents caps an event's causal links: a block's 16 parents plus
	// its author's previous block, which dag keeps as a separate link.
	MaxParents       = 17
	MaxOpsPerEvent   = 256      // ops per event
	MaxBodySize      = 64 << 10 // encoded ops
	MaxTextLen       = 16 << 10 // message or edit text, bytes of UTF-8
	MaxAttachmentLen = 2 << 10  // a message's encoded attachment manifest
	MaxTitleLen      = 256      // conversation title, contact or device name
	MaxBlobLen       = 32 << 10 // avatar bytes
	MaxMimeLen       = 64       // avatar media type
	MaxEmojiLen      = 64       // one reaction
	MaxPayloadLen    = 48 << 10 // opaque keyring payload (rotation)
	MaxCertLen       = 4 << 10  // device certificate
	MaxPeerLen       = 128      // a device's libp2p peer id
	MaxMailboxLen    = 4 << 10  // a device's mailbox address
	MaxRecipients    = 1024     // recipients of one rotation
	MaxKeyLen        = 64       // preference key, conversation id
	MaxValueLen      = 1 << 10  // preference value
	MaxPositionLen   = 1024     // entries in a Position on the wire
)

// Errors returned by Apply. Callers act on them: ErrMissingParents means
// "deliver the parents first", the others mean "this event is invalid and
// must not be stored or forwarded".
var (
	ErrMissingParents = errors.New("crdt: parent not applied")
	ErrInvalidEvent   = errors.New("crdt: invalid event")
	ErrEquivocation   = errors.New("crdt: device reused a sequence number")
	ErrMultipleRoots  = errors.New("crdt: second parentless event")
	ErrMalformedOps   = errors.New("crdt: malformed ops")
	ErrUnsupported    = errors.New("crdt: unsupported body version")
)
