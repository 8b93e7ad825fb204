package dag

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Decoding errors. Every decoding failure wraps ErrMalformed; the more
// precise sentinels below are wrapped as well where they apply.
var (
	// ErrMalformed reports bytes that are not a valid block encoding.
	ErrMalformed = errors.New("dag: malformed block")
	// ErrNonCanonical reports a valid encoding that differs from the
	// canonical DAG-CBOR encoding of the same value; accepting it would give
	// one block two CIDs.
	ErrNonCanonical = errors.New("dag: non-canonical encoding")
	// ErrDuplicateKey reports a CBOR map with a repeated key.
	ErrDuplicateKey = errors.New("dag: duplicate map key")
	// ErrIndefiniteLength reports an indefinite-length CBOR item.
	ErrIndefiniteLength = errors.New("dag: indefinite-length item")
	// ErrUnknownField reports a map key the format does not define.
	ErrUnknownField = errors.New("dag: unknown field")
	// ErrLimit reports a CBOR nesting or container size beyond the format's.
	ErrLimit = errors.New("dag: decoding limit exceeded")
	// ErrBadLink reports a link that is not a CIDv1 dag-cbor sha2-256 link.
	ErrBadLink = errors.New("dag: bad link")
	// ErrUnsupportedVersion reports an envelope version other than
	// EnvelopeVersion.
	ErrUnsupportedVersion = errors.New("dag: unsupported envelope version")
)

// Validation errors (structure and store invariants).
var (
	// ErrTooLarge reports an envelope, ciphertext or inner block above its cap.
	ErrTooLarge = errors.New("dag: block too large")
	// ErrTooManyParents reports more than MaxParents parent links.
	ErrTooManyParents = errors.New("dag: too many parents")
	// ErrBadParents reports parents that are unsorted or repeated.
	ErrBadParents = errors.New("dag: parents not sorted and unique")
	// ErrBadHeight reports a claimed height or Lamport clock that disagrees
	// with the value computed from the block's links (invariant I2).
	ErrBadHeight = errors.New("dag: claimed height or lamport disagrees with links")
	// ErrBadSeq reports a sequence number or Prev link that does not extend
	// the author's chain by exactly one.
	ErrBadSeq = errors.New("dag: bad sequence number or prev link")
	// ErrBadSignature reports a signature that does not verify.
	ErrBadSignature = errors.New("dag: bad signature")
	// ErrCIDMismatch reports a Block whose CID is not the hash of its
	// envelope.
	ErrCIDMismatch = errors.New("dag: cid does not match envelope")
	// ErrEquivocation reports two different blocks by the same author with
	// the same sequence number. The error value is an *EquivocationError.
	ErrEquivocation = errors.New("dag: equivocation")
	// ErrNotFound reports a block or DAG the store does not hold.
	ErrNotFound = errors.New("dag: not found")
	// ErrInvalidDAGID reports an empty or oversized DAG id.
	ErrInvalidDAGID = errors.New("dag: invalid dag id")
)

// EquivocationError carries the evidence of an equivocation: the block the
// store committed first and the conflicting one it refused.
type EquivocationError struct {
	DAG         DAGID
	Author      DeviceID
	Seq         uint64
	Existing    cid.Cid
	Conflicting cid.Cid
}

func (e *EquivocationError) Error() string {
	return fmt.Sprintf("dag: equivocation by %s at seq %d: committed %s, refused %s",
		e.Author, e.Seq, e.Existing, e.Conflicting)
}

// Is makes errors.Is(err, ErrEquivocation) true.
func (e *EquivocationError) Is(target error) bool { return target == ErrEquivocation }
