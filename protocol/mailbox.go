package protocol

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// MailboxProtocol is the stream protocol of blind mailboxes on relays
// (docs/mailbox.md): a client opens a stream and sends requests (Deposit,
// Drain, Ack), each answered before the next is read. A Drain is answered
// by Items frames and one End; every other request by one Result.
const MailboxProtocol protocol.ID = "/glitr/mailbox/1.0.0"

// MailboxPeriod is the life of one set of mailbox identifiers: every
// party derives the period's keys from the UTC day (docs/mailbox.md §2).
const MailboxPeriod = 24 * time.Hour

// Mailbox wire limits. A receiver refuses a frame above MaxMailboxFrame on
// its length prefix, before reading the body.
const (
	MaxMailboxFrame = 1 << 20
	// MaxMailboxEnvelope caps one deposited envelope: a dag envelope of
	// the largest block (64 KiB inner + 384 bytes) fits with room left.
	MaxMailboxEnvelope = 66 << 10
	// MaxDepositEnvelopes caps the envelopes of one Deposit request.
	MaxDepositEnvelopes = 256
	// MaxDrainMailboxes caps the mailboxes one Drain names: a 30-day
	// retention plus both neighbouring days.
	MaxDrainMailboxes = 34
	// MaxAckDigests caps the digests of one Ack request.
	MaxAckDigests = 2048
	// MaxItemsPerFrame caps the envelopes of one Items frame.
	MaxItemsPerFrame = 1024
	// MailboxIDSize, MailboxKeySize, MailboxSigSize and MailboxDigestSize
	// are the exact sizes of identifiers, public keys, signatures and
	// envelope digests (SHA-256) on the wire.
	MailboxIDSize     = 32
	MailboxKeySize    = 32
	MailboxSigSize    = 64
	MailboxDigestSize = 32
	maxMailboxCode    = 32
)

// Mailbox frame kinds.
const (
	MailboxKindDeposit = 1
	MailboxKindDrain   = 2
	MailboxKindAck     = 3
	MailboxKindResult  = 4
	MailboxKindItems   = 5
	MailboxKindEnd     = 6
)

// Result codes of the mailbox protocol. A Result with MailboxOK is
// success; every other code is a refusal that changed nothing.
const (
	MailboxOK = "ok"
	// MailboxFull: the mailbox holds its quota of bytes or envelopes.
	MailboxFull = "mailbox-full"
	// MailboxDepositorLimit: this peer or its IP address deposited its
	// quota for the current window.
	MailboxDepositorLimit = "depositor-limit"
	// MailboxRelayFull: the relay's global quota (bytes or mailboxes).
	MailboxRelayFull = "relay-full"
	// MailboxExpired: the period is outside the relay's retention, or
	// the request is for a period whose deposits are closed.
	MailboxExpired = "expired"
	// MailboxBadTime: the request's timestamp is too far from the
	// relay's clock (a replay, or a wrong clock).
	MailboxBadTime = "bad-time"
	// MailboxBadCapability: the keys do not name the mailbox, or a
	// signature does not verify.
	MailboxBadCapability = "bad-capability"
	// MailboxTooLarge: an envelope or the request exceeds a limit.
	MailboxTooLarge = "too-large"
	// MailboxRateLimited: too many requests from this peer; retry later.
	MailboxRateLimited = "rate-limited"
	// MailboxBusy: too many streams, from this peer or overall.
	MailboxBusy = "busy"
	// MailboxMalformed: the request could not be decoded or is out of
	// order; the relay closes the stream after it.
	MailboxMalformed = "malformed"
	// MailboxUnavailable: a local failure at the relay (storage).
	MailboxUnavailable = "unavailable"
)

// ErrBadMailboxFrame marks a malformed or oversized mailbox frame.
var ErrBadMailboxFrame = errors.New("mailbox: bad frame")

// MailboxDeposit stores envelopes in one mailbox. The deposit key and the
// drain key name the mailbox (ID = H(period, DepositKey, DrainKey)), and
// Sig, by the deposit key, proves the depositor holds the deposit secret.
type MailboxDeposit struct {
	ID         []byte   `cbor:"1,keyasint"`
	Period     uint64   `cbor:"2,keyasint"`
	DepositKey []byte   `cbor:"3,keyasint"` // Ed25519 public key of the period
	DrainKey   []byte   `cbor:"4,keyasint"` // Ed25519 (blinded) public key of the period
	Time       int64    `cbor:"5,keyasint"` // unix milliseconds, signed
	Sig        []byte   `cbor:"6,keyasint"`
	Envelopes  [][]byte `cbor:"7,keyasint"`
}

// MailboxDrainReq asks for one mailbox's envelopes after a cursor, signed
// by the period's drain key.
type MailboxDrainReq struct {
	_     struct{} `cbor:",toarray"`
	ID    []byte
	After uint64 // sequence number already drained (0: from the start)
	Time  int64  // unix milliseconds, signed
	Sig   []byte
}

// MailboxDrain asks for the envelopes of several mailboxes in one round
// trip: the owner's current and earlier periods.
type MailboxDrain struct {
	Mailboxes []MailboxDrainReq `cbor:"1,keyasint"`
	// Limit caps the envelopes the relay sends in this drain (0: the
	// relay's own cap).
	Limit uint64 `cbor:"2,keyasint,omitempty"`
}

// MailboxAck deletes drained envelopes of one mailbox, by digest, signed by
// the period's drain key.
type MailboxAck struct {
	ID      []byte   `cbor:"1,keyasint"`
	Time    int64    `cbor:"2,keyasint"`
	Digests [][]byte `cbor:"3,keyasint"`
	Sig     []byte   `cbor:"4,keyasint"`
}

// MailboxResult answers a Deposit or an Ack (or refuses a Drain).
type MailboxResult struct {
	Code      string `cbor:"1,keyasint"`
	Stored    uint64 `cbor:"2,keyasint,omitempty"` // Deposit: envelopes newly stored
	Duplicate uint64 `cbor:"3,keyasint,omitempty"` // Deposit: envelopes already held (or already acked)
	Acked     uint64 `cbor:"4,keyasint,omitempty"` // Ack: envelopes deleted
	// RetryAfter, in seconds, accompanies rate-limited and busy.
	RetryAfter uint64 `cbor:"5,keyasint,omitempty"`
}

// MailboxItem is one stored envelope and its sequence number in its
// mailbox (the cursor for the next drain).
type MailboxItem struct {
	_        struct{} `cbor:",toarray"`
	Seq      uint64
	Envelope []byte
}

// MailboxItems carries envelopes of one mailbox, in sequence order.
type MailboxItems struct {
	ID    []byte        `cbor:"1,keyasint"`
	Items []MailboxItem `cbor:"2,keyasint"`
}

// MailboxEnd closes a drain's answer.
type MailboxEnd struct {
	Sent uint64 `cbor:"1,keyasint,omitempty"` // envelopes sent in Items frames
	// More is true when the relay stopped at its cap: drain again from
	// the last sequence numbers received.
	More bool `cbor:"2,keyasint,omitempty"`
	// Code is MailboxOK; MailboxBadTime when every request's time was
	// stale; MailboxRateLimited when the address's drain budget let
	// nothing through; MailboxUnavailable on a local failure.
	Code string `cbor:"3,keyasint,omitempty"`
	// Refused lists the positions, in the Drain, of mailboxes the relay
	// sent nothing for because they are unknown or expired or their
	// request did not verify (all alike, so that a drain does not tell
	// whether an id exists).
	Refused []uint64 `cbor:"4,keyasint,omitempty"`
	// RetryAfter, in seconds, accompanies the code rate-limited.
	RetryAfter uint64 `cbor:"5,keyasint,omitempty"`
}

// MailboxFrame is one message of the mailbox protocol.
type MailboxFrame struct {
	Kind    int             `cbor:"1,keyasint"`
	Deposit *MailboxDeposit `cbor:"2,keyasint,omitempty"`
	Drain   *MailboxDrain   `cbor:"3,keyasint,omitempty"`
	Ack     *MailboxAck     `cbor:"4,keyasint,omitempty"`
	Result  *MailboxResult  `cbor:"5,keyasint,omitempty"`
	Items   *MailboxItems   `cbor:"6,keyasint,omitempty"`
	End     *MailboxEnd     `cbor:"7,keyasint,omitempty"`
}

var (
	mailboxEnc = func() cbor.EncMode {
		em, err := cbor.CanonicalEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return em
	}()
	mailboxDec = MustDecMode(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   6,
		MaxArrayElements:  MaxAckDigests,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
)

// EncodeMailboxFrame encodes f canonically, refusing a frame the receiver
// would refuse.
func EncodeMailboxFrame(f MailboxFrame) ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	b, err := mailboxEnc.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode mailbox frame: %w", err)
	}
	if len(b) > MaxMailboxFrame {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrBadMailboxFrame, len(b), MaxMailboxFrame)
	}
	return b, nil
}

// DecodeMailboxFrame parses and checks an untrusted frame: the body its
// kind requires, exact sizes of ids, keys, signatures and digests, and
// every count limit. Signatures are the service's business.
func DecodeMailboxFrame(b []byte) (MailboxFrame, error) {
	var f MailboxFrame
	if len(b) > MaxMailboxFrame {
		return f, fmt.Errorf("%w: %d bytes > %d", ErrBadMailboxFrame, len(b), MaxMailboxFrame)
	}
	if err := mailboxDec.Unmarshal(b, &f); err != nil {
		return MailboxFrame{}, fmt.Errorf("%w: %w", ErrBadMailboxFrame, err)
	}
	if err := f.check(); err != nil {
		return MailboxFrame{}, err
	}
	return f, nil
}

func badMailbox(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadMailboxFrame}, args...)...)
}

func exact(what string, b []byte, n int) error {
	if len(b) != n {
		return badMailbox("%s of %d bytes, want %d", what, len(b), n)
	}
	return nil
}

// check enforces the per-kind shape: exactly the body of its kind.
func (f MailboxFrame) check() error {
	bodies := 0
	for _, set := range []bool{f.Deposit != nil, f.Drain != nil, f.Ack != nil, f.Result != nil, f.Items != nil, f.End != nil} {
		if set {
			bodies++
		}
	}
	if bodies != 1 {
		return badMailbox("kind %d with %d bodies", f.Kind, bodies)
	}
	switch f.Kind {
	case MailboxKindDeposit:
		d := f.Deposit
		if d == nil {
			return badMailbox("deposit without body")
		}
		if err := errors.Join(exact("id", d.ID, MailboxIDSize), exact("deposit key", d.DepositKey, MailboxKeySize),
			exact("drain key", d.DrainKey, MailboxKeySize), exact("signature", d.Sig, MailboxSigSize)); err != nil {
			return err
		}
		if len(d.Envelopes) == 0 || len(d.Envelopes) > MaxDepositEnvelopes {
			return badMailbox("deposit of %d envelopes", len(d.Envelopes))
		}
		for i, e := range d.Envelopes {
			if len(e) == 0 || len(e) > MaxMailboxEnvelope {
				return badMailbox("envelope %d of %d bytes", i, len(e))
			}
		}
	case MailboxKindDrain:
		d := f.Drain
		if d == nil {
			return badMailbox("drain without body")
		}
		if len(d.Mailboxes) == 0 || len(d.Mailboxes) > MaxDrainMailboxes {
			return badMailbox("drain of %d mailboxes", len(d.Mailboxes))
		}
		for _, m := range d.Mailboxes {
			if err := errors.Join(exact("id", m.ID, MailboxIDSize), exact("signature", m.Sig, MailboxSigSize)); err != nil {
				return err
			}
		}
	case MailboxKindAck:
		a := f.Ack
		if a == nil {
			return badMailbox("ack without body")
		}
		if err := errors.Join(exact("id", a.ID, MailboxIDSize), exact("signature", a.Sig, MailboxSigSize)); err != nil {
			return err
		}
		if len(a.Digests) == 0 || len(a.Digests) > MaxAckDigests {
			return badMailbox("ack of %d digests", len(a.Digests))
		}
		for _, d := range a.Digests {
			if err := exact("digest", d, MailboxDigestSize); err != nil {
				return err
			}
		}
	case MailboxKindResult:
		if f.Result == nil {
			return badMailbox("result without body")
		}
		if c := f.Result.Code; c == "" || len(c) > maxMailboxCode {
			return badMailbox("result code of %d bytes", len(c))
		}
	case MailboxKindItems:
		it := f.Items
		if it == nil {
			return badMailbox("items without body")
		}
		if err := exact("id", it.ID, MailboxIDSize); err != nil {
			return err
		}
		if len(it.Items) == 0 || len(it.Items) > MaxItemsPerFrame {
			return badMailbox("items frame of %d envelopes", len(it.Items))
		}
		for i, e := range it.Items {
			if len(e.Envelope) == 0 || len(e.Envelope) > MaxMailboxEnvelope {
				return badMailbox("item %d of %d bytes", i, len(e.Envelope))
			}
		}
	case MailboxKindEnd:
		e := f.End
		if e == nil {
			return badMailbox("end without body")
		}
		if len(e.Code) > maxMailboxCode {
			return badMailbox("end code of %d bytes", len(e.Code))
		}
		if len(e.Refused) > MaxDrainMailboxes {
			return badMailbox("end with %d refusals", len(e.Refused))
		}
	default:
		return badMailbox("unknown kind %d", f.Kind)
	}
	return nil
}

// MailboxWriter writes length-prefixed mailbox frames; the caller buffers
// and flushes.
type MailboxWriter struct{ w msgio.WriteCloser }

// NewMailboxWriter wraps w.
func NewMailboxWriter(w io.Writer) *MailboxWriter {
	return &MailboxWriter{w: msgio.NewVarintWriter(w)}
}

// Write encodes and writes one frame, returning its encoded size.
func (mw *MailboxWriter) Write(f MailboxFrame) (int, error) {
	b, err := EncodeMailboxFrame(f)
	if err != nil {
		return 0, err
	}
	return len(b), mw.w.WriteMsg(b)
}

// MailboxReader reads length-prefixed mailbox frames, refusing one longer
// than MaxMailboxFrame before allocating for it.
type MailboxReader struct{ r msgio.ReadCloser }

// NewMailboxReader wraps r.
func NewMailboxReader(r io.Reader) *MailboxReader {
	return &MailboxReader{r: msgio.NewVarintReaderSize(r, MaxMailboxFrame)}
}

// Read reads and decodes one frame, returning its wire size too. io.EOF
// means the peer closed its side between frames.
func (mr *MailboxReader) Read() (MailboxFrame, int, error) {
	b, err := mr.r.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return MailboxFrame{}, 0, fmt.Errorf("%w: %w", ErrBadMailboxFrame, err)
		}
		return MailboxFrame{}, 0, err
	}
	// The decoder copies byte strings, so the buffer goes back at once.
	defer mr.r.ReleaseMsg(b)
	f, err := DecodeMailboxFrame(b)
	return f, len(b), err
}
