package mailbox

// The client side (docs/mailbox.md §4): what a personal node calls to
// deposit into a contact's mailbox and to drain and ack its own.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/glitr-chat/glitr/protocol"
)

// Errors a relay's refusals map to (test with errors.Is; a *RefusedError
// carries the code and the retry hint). ErrMailboxFull, ErrRelayFull,
// ErrExpired, ErrDepositorLimit and ErrBadCapability are shared with the
// store and the key schedule.
var (
	ErrBadTime     = errors.New("mailbox: request time too far from the relay's clock")
	ErrTooLarge    = errors.New("mailbox: envelope or request too large")
	ErrRateLimited = errors.New("mailbox: rate limited")
	ErrBusy        = errors.New("mailbox: relay busy")
	ErrMalformed   = errors.New("mailbox: relay found the request malformed")
	ErrUnavailable = errors.New("mailbox: relay storage unavailable")
	// ErrBadRelay: the relay broke the protocol (a frame out of place,
	// envelopes of a mailbox not asked for, wrong counts).
	ErrBadRelay = errors.New("mailbox: relay misbehaved")
)

// RefusedError is a relay's refusal.
type RefusedError struct {
	Code       string        // protocol.Mailbox* code
	RetryAfter time.Duration // zero when the relay gave none
}

func (e *RefusedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("mailbox: relay refused: %s (retry after %s)", e.Code, e.RetryAfter)
	}
	return "mailbox: relay refused: " + e.Code
}

// Unwrap maps the code to its sentinel error.
func (e *RefusedError) Unwrap() error {
	switch e.Code {
	case protocol.MailboxFull:
		return ErrMailboxFull
	case protocol.MailboxDepositorLimit:
		return ErrDepositorLimit
	case protocol.MailboxRelayFull:
		return ErrRelayFull
	case protocol.MailboxExpired:
		return ErrExpired
	case protocol.MailboxBadTime:
		return ErrBadTime
	case protocol.MailboxBadCapability:
		return ErrBadCapability
	case protocol.MailboxTooLarge:
		return ErrTooLarge
	case protocol.MailboxRateLimited:
		return ErrRateLimited
	case protocol.MailboxBusy:
		return ErrBusy
	case protocol.MailboxMalformed:
		return ErrMalformed
	case protocol.MailboxUnavailable:
		return ErrUnavailable
	default:
		return ErrBadRelay
	}
}

func refusal(r *protocol.MailboxResult) error {
	if r.Code == protocol.MailboxOK {
		return nil
	}
	return &RefusedError{Code: r.Code, RetryAfter: time.Duration(r.RetryAfter) * time.Second}
}

// ClientOptions tune a client. Zero values take the defaults noted.
type ClientOptions struct {
	// Timeout caps one call when ctx has no earlier deadline (default 60 s).
	Timeout time.Duration
	// Logger receives debug logs (nil: discard).
	Logger *slog.Logger
	// Now is the clock requests are signed with (nil: time.Now).
	Now func() time.Time
}

// Client deposits, drains and acks at relays over h. It holds no state:
// the node may use its own host, or a throwaway one per period so that
// the relay cannot link its drains by peer id (docs/mailbox.md §6).
type Client struct {
	h    host.Host
	opts ClientOptions
}

// NewClient returns a client over h.
func NewClient(h host.Host, opts ClientOptions) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{h: h, opts: opts}
}

// stream is one client stream.
type stream struct {
	st network.Stream
	bw *bufio.Writer
	w  *protocol.MailboxWriter
	r  *protocol.MailboxReader
}

func (c *Client) open(ctx context.Context, relay peer.AddrInfo) (*stream, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	if len(relay.Addrs) > 0 {
		c.h.Peerstore().AddAddrs(relay.ID, relay.Addrs, peerstore.TempAddrTTL)
	}
	st, err := c.h.NewStream(network.WithAllowLimitedConn(ctx, "glitr-mailbox"), relay.ID, protocol.MailboxProtocol)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("mailbox: open stream to %s: %w", relay.ID, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	s := &stream{st: st, bw: bufio.NewWriterSize(st, 64<<10)}
	s.w = protocol.NewMailboxWriter(s.bw)
	s.r = protocol.NewMailboxReader(bufio.NewReaderSize(st, 64<<10))
	return s, func() { stop(); cancel() }, nil
}

func (s *stream) send(f protocol.MailboxFrame) error {
	if _, err := s.w.Write(f); err != nil {
		return err
	}
	return s.bw.Flush()
}

// read reads one frame; a malformed one is the relay's fault.
func (s *stream) read() (protocol.MailboxFrame, error) {
	f, _, err := s.r.Read()
	if errors.Is(err, protocol.ErrBadMailboxFrame) {
		return f, fmt.Errorf("%w: %w", ErrBadRelay, err)
	}
	if errors.Is(err, io.EOF) {
		return f, fmt.Errorf("%w: stream ended early", ErrBadRelay)
	}
	return f, err
}

// result reads a Result frame.
func (s *stream) result() (*protocol.MailboxResult, error) {
	f, err := s.read()
	if err != nil {
		return nil, err
	}
	if f.Kind != protocol.MailboxKindResult {
		return nil, fmt.Errorf("%w: frame kind %d instead of a result", ErrBadRelay, f.Kind)
	}
	return f.Result, nil
}

func (s *stream) finish(err error) {
	if err != nil {
		_ = s.st.Reset()
		return
	}
	_ = s.st.Close()
}

// Deposited is what Client.Deposit did: envelopes newly stored and envelopes the
// relay already held.
type Deposited struct{ Stored, Duplicate int }

// depositFrameBytes is how many envelope bytes one Deposit request carries
// at most, leaving room for the request's other fields.
const depositFrameBytes = protocol.MaxMailboxFrame - 4096

// Deposit stores envs in the mailbox cap names at relay, in as many
// requests as the frame limits need, on one stream. When it returns nil
// every envelope is on the relay's disk. On a refusal (a *RefusedError:
// ErrMailboxFull, ErrDepositorLimit, ErrRelayFull, ErrExpired, ErrBadTime,
// ErrBadCapability …) the requests before it are stored and the result
// counts them.
func (c *Client) Deposit(ctx context.Context, relay peer.AddrInfo, capa *Capability, envs [][]byte) (Deposited, error) {
	var res Deposited
	for i, e := range envs {
		if len(e) == 0 || len(e) > protocol.MaxMailboxEnvelope {
			return res, fmt.Errorf("%w: envelope %d of %d bytes (max %d)", ErrTooLarge, i, len(e), protocol.MaxMailboxEnvelope)
		}
	}
	if len(envs) == 0 {
		return res, nil
	}
	s, done, err := c.open(ctx, relay)
	if err != nil {
		return res, err
	}
	defer done()
	relayID := []byte(relay.ID)
	for len(envs) > 0 {
		n, size := 0, 0
		for n < len(envs) && n < protocol.MaxDepositEnvelopes && size+len(envs[n])+8 <= depositFrameBytes {
			size += len(envs[n]) + 8
			n++
		}
		d := capa.Deposit(relayID, c.opts.Now(), envs[:n])
		if err = s.send(protocol.MailboxFrame{Kind: protocol.MailboxKindDeposit, Deposit: d}); err != nil {
			err = fmt.Errorf("mailbox: deposit: %w", err)
			break
		}
		var r *protocol.MailboxResult
		if r, err = s.result(); err != nil {
			err = fmt.Errorf("mailbox: deposit: %w", err)
			break
		}
		if err = refusal(r); err != nil {
			break
		}
		res.Stored += int(r.Stored)
		res.Duplicate += int(r.Duplicate)
		if int(r.Stored+r.Duplicate) > n {
			err = fmt.Errorf("%w: %d envelopes counted for %d sent", ErrBadRelay, r.Stored+r.Duplicate, n)
			break
		}
		envs = envs[n:]
	}
	var refused *RefusedError
	s.finish(func() error {
		if errors.As(err, &refused) {
			return nil // the relay answered; the stream is sound
		}
		return err
	}())
	return res, err
}

// Item is one drained envelope.
type Item struct {
	Mailbox  ID
	Period   Period
	Seq      uint64 // its place in the mailbox: the cursor for DrainOptions.After
	Envelope []byte // opaque; the caller decodes and verifies it
	Digest   Digest
}

// DrainOptions tune one drain.
type DrainOptions struct {
	// After holds, per mailbox, the sequence number already drained:
	// only later envelopes are sent. For a conversation mailbox, which
	// members drain without acking, this is each member's cursor.
	After map[ID]uint64
	// Keep leaves the envelopes at the relay (no ack): conversation
	// mailboxes, or a caller that acks later with Ack.
	Keep bool
	// Limit caps the envelopes asked for in one request (0: the relay's
	// cap).
	Limit uint64
}

// Drained is what one drain did.
type Drained struct {
	Received, Acked int
	// More is true when the relay stopped at its cap: drain again (the
	// acked envelopes are gone, and Last moves the cursors on).
	More bool
	// Last is the highest sequence number received per mailbox.
	Last map[ID]uint64
	// Refused lists the mailboxes the relay gave nothing for under these
	// keys: unknown (nothing was deposited), expired, or a request it
	// could not verify. It does not say which, by design.
	Refused []ID
}

// Drain fetches the envelopes of the mailboxes of keys at relay — one
// round trip plus the transfer for up to protocol.MaxDrainMailboxes
// mailboxes — and calls fn with each, in order per mailbox. Then, unless
// opts.Keep, it acks every envelope fn accepted (returned nil for) on the
// same stream, and the relay deletes them. An error from fn stops the
// drain without acking anything: the envelopes stay and come again.
func (c *Client) Drain(ctx context.Context, relay peer.AddrInfo, keys []*DrainKey, opts DrainOptions, fn func(Item) error) (Drained, error) {
	res := Drained{Last: map[ID]uint64{}}
	if len(keys) == 0 {
		return res, nil
	}
	byID := make(map[ID]*DrainKey, len(keys))
	for _, k := range keys {
		byID[k.ID] = k
	}
	s, done, err := c.open(ctx, relay)
	if err != nil {
		return res, err
	}
	defer done()
	relayID := []byte(relay.ID)
	accepted := map[ID][]Digest{}
	err = func() error {
		for start := 0; start < len(keys); start += protocol.MaxDrainMailboxes {
			chunk := keys[start:min(len(keys), start+protocol.MaxDrainMailboxes)]
			if err := c.drainChunk(s, relayID, chunk, byID, opts, &res, accepted, fn); err != nil {
				return err
			}
		}
		if opts.Keep {
			return nil
		}
		return c.ackOn(s, relayID, byID, accepted, &res)
	}()
	s.finish(err)
	return res, err
}

func (c *Client) drainChunk(s *stream, relayID []byte, keys []*DrainKey, byID map[ID]*DrainKey, opts DrainOptions,
	res *Drained, accepted map[ID][]Digest, fn func(Item) error) error {
	now := c.opts.Now()
	req := &protocol.MailboxDrain{Limit: opts.Limit}
	for _, k := range keys {
		req.Mailboxes = append(req.Mailboxes, k.DrainRequest(relayID, now, opts.After[k.ID]))
	}
	if err := s.send(protocol.MailboxFrame{Kind: protocol.MailboxKindDrain, Drain: req}); err != nil {
		return fmt.Errorf("mailbox: drain: %w", err)
	}
	asked := make(map[ID]bool, len(keys))
	for _, k := range keys {
		asked[k.ID] = true
	}
	received := 0
	for {
		f, err := s.read()
		if err != nil {
			return fmt.Errorf("mailbox: drain: %w", err)
		}
		switch f.Kind {
		case protocol.MailboxKindItems:
			var id ID
			copy(id[:], f.Items.ID)
			if !asked[id] {
				return fmt.Errorf("%w: envelopes of a mailbox not asked for", ErrBadRelay)
			}
			k := byID[id]
			last, ok := res.Last[id]
			if !ok {
				last = opts.After[id]
			}
			for _, it := range f.Items.Items {
				if it.Seq <= last {
					return fmt.Errorf("%w: sequence %d after %d", ErrBadRelay, it.Seq, last)
				}
				last = it.Seq
				received++
				if opts.Limit > 0 && uint64(received) > opts.Limit {
					return fmt.Errorf("%w: more envelopes than the limit", ErrBadRelay)
				}
				item := Item{Mailbox: id, Period: k.Period, Seq: it.Seq, Envelope: it.Envelope, Digest: DigestOf(it.Envelope)}
				if err := fn(item); err != nil {
					return err
				}
				accepted[id] = append(accepted[id], item.Digest)
				res.Received++
			}
			res.Last[id] = last
		case protocol.MailboxKindEnd:
			e := f.End
			if e.Sent != uint64(received) {
				return fmt.Errorf("%w: end says %d envelopes, %d came", ErrBadRelay, e.Sent, received)
			}
			res.More = res.More || e.More
			for _, i := range e.Refused {
				if i >= uint64(len(keys)) {
					return fmt.Errorf("%w: refusal of mailbox %d of %d", ErrBadRelay, i, len(keys))
				}
				res.Refused = append(res.Refused, keys[i].ID)
			}
			if e.Code != protocol.MailboxOK && e.Code != "" {
				return &RefusedError{Code: e.Code, RetryAfter: time.Duration(e.RetryAfter) * time.Second}
			}
			return nil
		case protocol.MailboxKindResult:
			if err := refusal(f.Result); err != nil {
				return err
			}
			return fmt.Errorf("%w: ok result in a drain", ErrBadRelay)
		default:
			return fmt.Errorf("%w: frame kind %d in a drain", ErrBadRelay, f.Kind)
		}
	}
}

// ackOn sends every Ack frame first and then reads the results, so the
// acks of many mailboxes cost one round trip.
func (c *Client) ackOn(s *stream, relayID []byte, byID map[ID]*DrainKey, accepted map[ID][]Digest, res *Drained) error {
	now := c.opts.Now()
	frames := 0
	for id, ds := range accepted {
		for start := 0; start < len(ds); start += protocol.MaxAckDigests {
			a := byID[id].Ack(relayID, now, ds[start:min(len(ds), start+protocol.MaxAckDigests)])
			if _, err := s.w.Write(protocol.MailboxFrame{Kind: protocol.MailboxKindAck, Ack: a}); err != nil {
				return fmt.Errorf("mailbox: ack: %w", err)
			}
			frames++
		}
	}
	if frames == 0 {
		return nil
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("mailbox: ack: %w", err)
	}
	for range frames {
		r, err := s.result()
		if err != nil {
			return fmt.Errorf("mailbox: ack: %w", err)
		}
		if err := refusal(r); err != nil {
			return fmt.Errorf("mailbox: ack: %w", err)
		}
		res.Acked += int(r.Acked)
	}
	return nil
}

// Ack deletes envelopes of key's mailbox at relay by digest (after a
// Drain with Keep), and returns how many the relay deleted.
func (c *Client) Ack(ctx context.Context, relay peer.AddrInfo, key *DrainKey, digests []Digest) (int, error) {
	if len(digests) == 0 {
		return 0, nil
	}
	s, done, err := c.open(ctx, relay)
	if err != nil {
		return 0, err
	}
	defer done()
	var res Drained
	err = c.ackOn(s, []byte(relay.ID), map[ID]*DrainKey{key.ID: key}, map[ID][]Digest{key.ID: digests}, &res)
	s.finish(err)
	return res.Acked, err
}

// DrainPeriods are the periods an owner drains at now when it last
// drained completely at since (the zero time: never): from the period of
// since less the skew (deposits a sender's clock put there) to the period
// of now plus the skew, at most the retention back. Newest first.
func DrainPeriods(now, since time.Time, skew, retention time.Duration) []Period {
	hi := PeriodOf(now.Add(skew))
	floor := now.Add(-retention - protocol.MailboxPeriod)
	if since.Before(floor) {
		since = floor
	}
	lo := PeriodOf(since.Add(-skew))
	var out []Period
	for p := hi; p >= lo && p <= hi; p-- {
		out = append(out, p)
		if p == 0 {
			break
		}
	}
	return out
}

// DrainKeys returns the owner's drain keys of periods.
func (k *OwnerKey) DrainKeys(periods []Period) []*DrainKey {
	out := make([]*DrainKey, len(periods))
	for i, p := range periods {
		out[i] = k.Drain(p)
	}
	return out
}
