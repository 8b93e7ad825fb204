// Package catchup is the catch-up sync engine: it brings one DAG up to date
// between two peers in one round trip (docs/sync.md), over
// /glitr/sync/1.0.0 and 1.1.0 streams, within the bounds of §4 and with the
// penalties of §5. It knows nothing of blocks, keys or conversations: the
// caller's Source summarises and enumerates a DAG by its sync id, and its
// Sink decodes, verifies and commits what a peer sends.
package catchup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/protocol"
)

// Catch-up sync engine: one session per (peer, DAG) over a SyncProtocol
// stream. The wire protocol is specified in docs/sync.md; in short, the
// initiator sends its Hello, the responder answers with its own, and from
// then on both sides are symmetric: each streams, in Blocks frames of up to
// 1 MiB, every envelope the other lacks according to its Hello, ends with
// Done{Sent} and closes its write side, while concurrently reading and
// ingesting what the other sends. One round trip, whatever the DAG's depth.
//
// The engine knows nothing about blocks, keys or CRDTs: a Source
// summarises and enumerates, a Sink decodes, verifies and commits.
//
// Version 1.1.0 adds a fallback for stores the vectors cannot describe:
// when the initiator still lacks some of the responder's heads after the
// exchange, it opens range-based set reconciliation on the same stream
// (dag.Reconciler), and then each side ships the blocks the other lacks.

// Source answers for the DAGs this node holds.
type Source interface {
	// Summary returns this node's Hello for the DAG named by syncID.
	// ok is false when the node does not hold that DAG.
	Summary(ctx context.Context, syncID []byte) (h protocol.Hello, ok bool, err error)
	// Missing calls fn with every envelope the peer lacks given its Hello,
	// in topological order (parents first). fn copies env, so the source
	// may reuse its buffer after fn returns. An error from fn must be
	// returned (possibly wrapped): it is how the engine stops the scan.
	Missing(ctx context.Context, syncID []byte, theirs protocol.Hello, fn func(env []byte) error) error
}

// Reconciler is what a Source needs for the reconciliation
// fallback (protocol 1.1.0). A source without it still serves 1.1.0
// sessions but never starts reconciliation, and answers a peer that does
// with Error "unavailable".
type Reconciler interface {
	// ReconSet returns the blocks held for syncID as a reconciliation set
	// (a snapshot, which the engine does not modify).
	ReconSet(ctx context.Context, syncID []byte) (*dag.ReconSet, error)
	// Lacking returns how many of cids (raw CID bytes, from a peer's
	// Hello) are not held.
	Lacking(ctx context.Context, syncID []byte, cids [][]byte) (int, error)
	// Envelopes calls fn with the envelope of each item in the order
	// given (the engine passes key order, which is topological), skipping
	// items no longer held. Buffer and error rules are Missing's.
	Envelopes(ctx context.Context, syncID []byte, items []dag.ReconItem, fn func(env []byte) error) error
}

// Sink takes in what a peer sends. Ingest decodes, opens, verifies,
// commits and applies one batch; an error means the peer sent something bad
// (the session aborts and the peer is penalised) — wrap ErrBadPeer for that,
// other errors are local failures (abort without penalty).
//
// Ingest is called from one goroutine per session, but sessions with
// different peers (or for different DAGs) run concurrently. The sink may
// keep the envelope slices: they are not reused by the engine.
type Sink interface {
	Ingest(ctx context.Context, from peer.ID, syncID []byte, envelopes [][]byte) error
}

// Catch-up errors. Sync wraps them, so test with errors.Is.
var (
	// ErrBadPeer marks a peer that broke the protocol or sent bad data.
	ErrBadPeer = errors.New("catch-up: peer misbehaved")
	// ErrUnknown: the peer does not hold the DAG (or will not say).
	ErrUnknown = errors.New("catch-up: peer does not hold this conversation")
	// ErrBusy: too many sessions, ours or the peer's; retry later.
	ErrBusy = errors.New("catch-up: too many sessions")
	// ErrTimeout: the peer was idle too long or the session ran
	// past its deadline.
	ErrTimeout = errors.New("catch-up: timed out")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("catch-up: engine closed")
	// ErrTruncated: the stream ended before the peer's Done. Not
	// an offence: a relay ends a used-up circuit the same way.
	ErrTruncated = errors.New("catch-up: stream ended before done")
)

// Protocol limits every implementation must honour (docs/sync.md §4). A
// sender never sends more blocks in a session than the receiver's bound,
// min(MaxBlocks, expected+Slack), where expected follows
// from the two Hellos; a receiver accepts at least that much.
const (
	// Slack is how many blocks beyond what the Hellos imply a
	// sender may send: blocks committed between its Summary and its scan.
	Slack = 256
	// MaxBlocks caps the blocks sent in one session; the rest
	// follows in the next session.
	MaxBlocks = 1 << 20
)

// Stats describes one session from one side.
type Stats struct {
	// RoundTrips counts the times this side waited for the peer before
	// data could flow: 1 for the fast path, plus one per reconciliation
	// message it sent that needed an answer.
	RoundTrips             int
	FramesSent, FramesRecv int   // all frames, Hello and Done included
	BlocksSent, BlocksRecv int   // envelopes
	BytesSent, BytesRecv   int64 // on the wire, including length prefixes
	Duration               time.Duration
	// Partial is true when this side stopped sending before the end
	// (limited-connection budget or the per-session cap) or the peer
	// sent fewer blocks than its Hello implied: run another session.
	Partial bool
	// Limited is true when the session ran over a limited (relayed)
	// connection.
	Limited bool
	// Reconciled is true when the session ran the reconciliation
	// fallback; ReconMessages counts its messages, both directions. Its
	// frames and blocks are included in the counters above.
	Reconciled    bool
	ReconMessages int
}

// Options tune the engine. Zero values take the defaults noted.
type Options struct {
	// Penalize is called when a peer misbehaves (the node wires it to
	// Node.Penalize). Nil: no penalties.
	Penalize func(p peer.ID, amount float64, reason string)
	// Penalty is the amount passed to Penalize (default 20).
	Penalty float64
	// IdleTimeout aborts a session when no frame arrives, or no frame
	// can be written, for this long (default 20 s).
	IdleTimeout time.Duration
	// SessionTimeout caps a whole session (default 5 min).
	SessionTimeout time.Duration
	// MaxSessions caps concurrent sessions in each direction, inbound
	// and outbound separately (default 8).
	MaxSessions int
	// MaxSessionsPerPeer caps concurrent sessions with one peer in each
	// direction (default 2).
	MaxSessionsPerPeer int
	// MaxBlocksPerSession caps the blocks accepted from a peer in one
	// session (default MaxBlocks). Lowering it below the protocol
	// value makes well-behaved peers look hostile; tests only.
	MaxBlocksPerSession uint64
	// FrameBytes is the target size of a Blocks frame (default and
	// maximum protocol.MaxSyncFrame).
	FrameBytes int
	// LimitedBudget is how many bytes the engine sends over one limited
	// (relayed) connection, across all its sessions on it, before a
	// session ends early with Done (default 64 KiB: relay v2 allows
	// 128 KiB per direction per circuit by default, shared with every
	// other protocol on it). Hello, Done and Error frames are always
	// sent; only Blocks frames are held back.
	LimitedBudget int64
	// OnSession, if set, is called after every session, inbound and
	// outbound, with its stats and outcome (for metrics and logs).
	OnSession func(p peer.ID, initiator bool, st Stats, err error)
	// Logger receives debug and warning logs (nil: discard).
	Logger *slog.Logger
	// ReconTimeout caps the reconciliation rounds of a session, before
	// the blocks they found are shipped (default 60 s).
	ReconTimeout time.Duration
	// Recon tunes the reconciler (dag defaults).
	Recon dag.ReconConfig

	// forceLimited treats every connection as limited (tests).
	forceLimited bool
}

func (o *Options) defaults() {
	if o.Penalty == 0 {
		o.Penalty = 20
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 20 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 5 * time.Minute
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 8
	}
	if o.MaxSessionsPerPeer <= 0 {
		o.MaxSessionsPerPeer = 2
	}
	if o.MaxBlocksPerSession == 0 {
		o.MaxBlocksPerSession = MaxBlocks
	}
	if o.FrameBytes <= 0 || o.FrameBytes > protocol.MaxSyncFrame {
		o.FrameBytes = protocol.MaxSyncFrame
	}
	if o.LimitedBudget <= 0 {
		o.LimitedBudget = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReconTimeout <= 0 {
		o.ReconTimeout = time.Minute
	}
}

// Engine is the catch-up session engine. It serves SyncProtocol streams
// and runs sessions it initiates with Sync.
type Engine struct {
	h    host.Host
	src  Source
	sink Sink
	opts Options
	log  *slog.Logger

	in, out *sessionLimiter

	// Bytes sent per limited connection, by connection id.
	budgetMu sync.Mutex
	spent    map[string]int64
	notifiee *network.NotifyBundle

	base   context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// New registers the stream handler on h (protocol.SyncProtocol) and returns the engine; Close unregisters.
func New(h host.Host, src Source, sink Sink, opts Options) *Engine {
	opts.defaults()
	base, cancel := context.WithCancel(context.Background())
	c := &Engine{
		h: h, src: src, sink: sink, opts: opts, log: opts.Logger,
		in:   newSessionLimiter(opts.MaxSessions, opts.MaxSessionsPerPeer),
		out:  newSessionLimiter(opts.MaxSessions, opts.MaxSessionsPerPeer),
		base: base, cancel: cancel,
		spent: map[string]int64{},
	}
	c.notifiee = &network.NotifyBundle{DisconnectedF: func(_ network.Network, conn network.Conn) {
		c.budgetMu.Lock()
		delete(c.spent, conn.ID())
		c.budgetMu.Unlock()
	}}
	h.Network().Notify(c.notifiee)
	h.SetStreamHandler(protocol.SyncProtocol, c.Handle)
	h.SetStreamHandler(protocol.SyncProtocolRecon, c.Handle)
	return c
}

// Close unregisters the stream handler, aborts running sessions and waits
// for them to end.
func (c *Engine) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.h.RemoveStreamHandler(protocol.SyncProtocol)
	c.h.RemoveStreamHandler(protocol.SyncProtocolRecon)
	c.h.Network().StopNotify(c.notifiee)
	c.cancel()
	c.wg.Wait()
	return nil
}

// begin registers a session with the wait group unless the engine is
// closed.
func (c *Engine) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// Sync runs one session as the initiator with peer p for syncID.
func (c *Engine) Sync(ctx context.Context, p peer.ID, syncID []byte) (st Stats, err error) {
	if len(syncID) == 0 || len(syncID) > protocol.MaxSyncIDLen {
		return st, fmt.Errorf("catch-up: sync id of %d bytes", len(syncID))
	}
	if !c.begin() {
		return st, ErrClosed
	}
	defer c.wg.Done()
	if !c.out.acquire(p) {
		return st, ErrBusy
	}
	defer c.out.release(p)

	start := time.Now()
	defer func() {
		st.Duration = time.Since(start)
		c.report(p, true, st, err)
	}()

	mine, have, err := c.src.Summary(ctx, syncID)
	if err != nil {
		return st, fmt.Errorf("catch-up: summary: %w", err)
	}
	if !have {
		// Joining: ask for everything, offer nothing.
		mine = protocol.Hello{}
	}
	mine.SyncID = syncID

	s, err := c.h.NewStream(network.WithAllowLimitedConn(ctx, "glitr-sync"), p, protocol.SyncProtocolRecon, protocol.SyncProtocol)
	if err != nil {
		return st, fmt.Errorf("catch-up: open stream to %s: %w", p, err)
	}
	ss := c.newSession(ctx, s, syncID, true)
	defer ss.end()

	if err := ss.write(protocol.Frame{Kind: protocol.FrameHello, Hello: &mine}, true); err != nil {
		return ss.stats(), ss.failed(err)
	}
	f, err := ss.read()
	if err != nil {
		return ss.stats(), ss.failed(err)
	}
	switch f.Kind {
	case protocol.FrameHello:
	case protocol.FrameError:
		return ss.stats(), ss.failed(remoteError(f.Error))
	default:
		return ss.stats(), ss.failed(fmt.Errorf("%w: frame kind %d instead of hello", ErrBadPeer, f.Kind))
	}
	if string(f.Hello.SyncID) != string(syncID) {
		return ss.stats(), ss.failed(fmt.Errorf("%w: hello for another sync id", ErrBadPeer))
	}
	// The only wait before data flows: the responder's Hello.
	ss.st.RoundTrips = 1
	theirs := *f.Hello
	if err = ss.run(mine, theirs, have); err != nil || !ss.v11 {
		return ss.stats(), err
	}
	if ss.gap(theirs) {
		err = ss.reconcile(nil)
	}
	return ss.stats(), err
}

// gap reports whether the vector exchange left the initiator short: some
// of the responder's heads are still not held (blocks out of sequence
// order, an equivocation, heads the vectors could not tell apart), or
// the responder sent fewer blocks than its vector claims. Limited
// connections never reconcile: their byte budget is for blocks.
func (ss *session) gap(theirs protocol.Hello) bool {
	rec, ok := ss.c.src.(Reconciler)
	if !ok || ss.limited {
		return false
	}
	lacking, err := rec.Lacking(ss.ctx, ss.syncID, theirs.Heads)
	if err != nil {
		ss.c.log.Warn("catch-up: heads lookup failed", "peer", ss.p.String(), "err", err)
		return false
	}
	return lacking > 0 || ss.shortfall
}

// InboundSessions is how many sessions p opened that are still being
// served.
func (c *Engine) InboundSessions(p peer.ID) int {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return c.in.byPeer[p]
}

// Handle serves one inbound session as the responder: the stream handler
// New sets for both protocol versions.
func (c *Engine) Handle(s network.Stream) {
	p := s.Conn().RemotePeer()
	if !c.begin() {
		_ = s.Reset()
		return
	}
	defer c.wg.Done()
	if !c.in.acquire(p) {
		// Say so briefly, so the initiator can retry later.
		_ = s.SetWriteDeadline(time.Now().Add(time.Second))
		bw := bufio.NewWriterSize(s, 64)
		if _, err := protocol.NewFrameWriter(bw).Write(protocol.Frame{Kind: protocol.FrameError, Error: protocol.SyncReasonBusy}); err == nil && bw.Flush() == nil {
			_ = s.Close()
		} else {
			_ = s.Reset()
		}
		return
	}
	defer c.in.release(p)

	start := time.Now()
	ss := c.newSession(c.base, s, nil, false)
	defer ss.end()
	var err error
	defer func() {
		st := ss.stats()
		st.Duration = time.Since(start)
		c.report(p, false, st, err)
	}()

	f, err := ss.read()
	if err != nil {
		err = ss.failed(err)
		return
	}
	if f.Kind != protocol.FrameHello {
		err = ss.failed(fmt.Errorf("%w: frame kind %d instead of hello", ErrBadPeer, f.Kind))
		return
	}
	theirs := *f.Hello
	ss.syncID = theirs.SyncID
	mine, ok, err := c.src.Summary(ss.ctx, theirs.SyncID)
	if err != nil || !ok {
		reason := protocol.SyncReasonUnknown
		if err != nil {
			c.log.Warn("catch-up: summary failed", "peer", p.String(), "err", err)
			reason = protocol.SyncReasonUnavailable
		}
		if werr := ss.write(protocol.Frame{Kind: protocol.FrameError, Error: reason}, true); werr == nil {
			ss.closeOnEnd = true
		}
		if err == nil {
			err = ErrUnknown
		}
		return
	}
	mine.SyncID = theirs.SyncID
	if err = ss.write(protocol.Frame{Kind: protocol.FrameHello, Hello: &mine}, true); err != nil {
		err = ss.failed(err)
		return
	}
	ss.st.RoundTrips = 1
	if err = ss.run(mine, theirs, true); err != nil || !ss.v11 {
		return
	}
	// 1.1.0: the initiator closes, or opens reconciliation.
	f, err = ss.read()
	switch {
	case errors.Is(err, io.EOF):
		err = nil
	case err != nil:
		err = ss.failed(err)
	case f.Kind == protocol.FrameReconcile:
		err = ss.reconcile(&f)
	case f.Kind == protocol.FrameError:
		err = ss.failed(remoteError(f.Error))
	default:
		err = ss.failed(fmt.Errorf("%w: frame kind %d after done", ErrBadPeer, f.Kind))
	}
}

// charge counts n bytes sent on limited connection conn.
func (c *Engine) charge(conn string, n int64) {
	c.budgetMu.Lock()
	c.spent[conn] += n
	c.budgetMu.Unlock()
}

// tryCharge charges n bytes to conn if that leaves keep bytes of the
// budget (for the Done frame).
func (c *Engine) tryCharge(conn string, n, keep int64) bool {
	c.budgetMu.Lock()
	defer c.budgetMu.Unlock()
	if c.spent[conn]+n+keep > c.opts.LimitedBudget {
		return false
	}
	c.spent[conn] += n
	return true
}

func (c *Engine) report(p peer.ID, initiator bool, st Stats, err error) {
	if err != nil {
		c.log.Debug("catch-up session failed", "peer", p.String(), "initiator", initiator, "err", err)
	}
	if c.opts.OnSession != nil {
		c.opts.OnSession(p, initiator, st, err)
	}
}

func remoteError(reason string) error {
	switch reason {
	case protocol.SyncReasonUnknown:
		return ErrUnknown
	case protocol.SyncReasonBusy:
		return ErrBusy
	default:
		return fmt.Errorf("catch-up: peer gave up: %q", reason)
	}
}

// session is one catch-up exchange on one stream, from one side.
type session struct {
	c         *Engine
	s         network.Stream
	p         peer.ID
	syncID    []byte
	initiator bool
	limited   bool
	connID    string
	v11       bool // protocol 1.1.0: no half-close after Done, reconciliation may follow
	// shortfall: the peer sent fewer blocks than its Hello implied.
	shortfall bool

	ctx       context.Context
	cancel    context.CancelCauseFunc
	stopTimer *time.Timer
	stopReset func() bool

	br *bufio.Reader
	fr *protocol.FrameReader
	bw *bufio.Writer
	fw *protocol.FrameWriter

	// st's send-side fields belong to whoever writes (the handshake, then
	// the sender goroutine), the receive side to whoever reads; stats()
	// reads them once both have ended.
	st         Stats
	closeOnEnd bool

	// Sender state: the Blocks frame being filled. The arena holds copies
	// of the envelopes (the source may reuse its buffers).
	pending     [][]byte
	pendingSize int
	arena       []byte
	sent        uint64

	mu        sync.Mutex
	penalized bool
}

func (c *Engine) newSession(parent context.Context, s network.Stream, syncID []byte, initiator bool) *session {
	ctx, cancel := context.WithCancelCause(parent)
	ss := &session{
		c: c, s: s, p: s.Conn().RemotePeer(), syncID: syncID, initiator: initiator,
		limited: s.Conn().Stat().Limited || c.opts.forceLimited,
		connID:  s.Conn().ID(),
		v11:     s.Protocol() == protocol.SyncProtocolRecon,
		ctx:     ctx, cancel: cancel,
	}
	ss.st.Limited = ss.limited
	d := c.opts.SessionTimeout
	ss.stopTimer = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w: session ran over %s", ErrTimeout, d)) })
	base := context.AfterFunc(c.base, func() { cancel(ErrClosed) })
	// Cancelling the session (any failure, the deadline, Close) resets
	// the stream, which unblocks every read and write at once.
	reset := context.AfterFunc(ctx, func() { _ = s.Reset() })
	ss.stopReset = func() bool { base(); return reset() }
	ss.br = bufio.NewReaderSize(s, 64<<10)
	ss.fr = protocol.NewFrameReader(ss.br)
	ss.bw = bufio.NewWriterSize(s, 128<<10)
	ss.fw = protocol.NewFrameWriter(ss.bw)
	return ss
}

// end releases the session's stream: Close when the session completed
// (or ended with an Error frame), Reset otherwise.
func (ss *session) end() {
	ss.stopTimer.Stop()
	if ss.stopReset() && ss.ctx.Err() == nil && ss.closeOnEnd {
		_ = ss.s.Close()
	} else {
		_ = ss.s.Reset()
	}
	ss.cancel(nil)
}

// failed records err as the session's outcome (the first one wins),
// penalises a misbehaving peer and returns the outcome.
func (ss *session) failed(err error) error {
	ss.cancel(ss.classify(err))
	cause := context.Cause(ss.ctx)
	if errors.Is(cause, ErrBadPeer) {
		ss.penalize(cause)
	}
	return cause
}

func (ss *session) penalize(err error) {
	ss.mu.Lock()
	already := ss.penalized
	ss.penalized = true
	ss.mu.Unlock()
	if already {
		return
	}
	ss.c.log.Warn("catch-up: peer misbehaved", "peer", ss.p.String(), "err", err)
	if ss.c.opts.Penalize != nil {
		ss.c.opts.Penalize(ss.p, ss.c.opts.Penalty, err.Error())
	}
}

// classify maps transport and framing errors onto the engine's errors.
func (ss *session) classify(err error) error {
	var te interface{ Timeout() bool }
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrBadPeer), errors.Is(err, ErrTimeout):
		return err
	case errors.Is(err, protocol.ErrBadFrame):
		return fmt.Errorf("%w: %w", ErrBadPeer, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTruncated
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &te) && te.Timeout():
		return fmt.Errorf("%w: peer idle for %s", ErrTimeout, ss.c.opts.IdleTimeout)
	}
	return err
}

func (ss *session) stats() Stats { return ss.st }

// read reads one frame, giving the peer IdleTimeout to send it.
func (ss *session) read() (protocol.Frame, error) {
	_ = ss.s.SetReadDeadline(time.Now().Add(ss.c.opts.IdleTimeout))
	f, n, err := ss.fr.Read()
	if n > 0 {
		ss.st.FramesRecv++
		ss.st.BytesRecv += int64(n + uvarintLen(n))
	}
	return f, err
}

// write writes one frame, flushing if asked, giving the peer IdleTimeout
// to take it.
func (ss *session) write(f protocol.Frame, flush bool) error {
	_ = ss.s.SetWriteDeadline(time.Now().Add(ss.c.opts.IdleTimeout))
	n, err := ss.fw.Write(f)
	if err != nil {
		return err
	}
	ss.st.FramesSent++
	ss.st.BytesSent += int64(n + uvarintLen(n))
	if ss.limited && f.Kind != protocol.FrameBlocks {
		ss.c.charge(ss.connID, int64(n+uvarintLen(n))) // Blocks were charged envelope by envelope
	}
	if flush {
		return ss.bw.Flush()
	}
	return nil
}

// run is the symmetric part of a session, after the Hellos: send what the
// peer lacks while reading and ingesting what it sends.
func (ss *session) run(mine, theirs protocol.Hello, have bool) error {
	// What we accept from the peer, and what the peer will accept from us.
	bound := blockBound(mine, theirs, Slack, ss.c.opts.MaxBlocksPerSession)
	sendCap := blockBound(theirs, mine, Slack, MaxBlocks)
	expected := expectedBlocks(mine, theirs)
	scan := func(fn func(env []byte) error) error {
		if !have {
			return nil
		}
		return ss.c.src.Missing(ss.ctx, ss.syncID, theirs, fn)
	}
	stopped, got, err := ss.exchange(scan, bound, sendCap, !ss.v11)
	if err != nil {
		return err
	}
	// Only a vector's claim counts: Count alone is a progress hint.
	ss.shortfall = len(theirs.Vector) > 0 && got < expected && expected < ss.c.opts.MaxBlocksPerSession
	ss.st.Partial = stopped || got < expected
	return nil
}

// exchange streams what scan yields to the peer (at most sendCap blocks)
// while reading and ingesting what the peer sends (at most bound blocks),
// until both Done frames. closeWrite half-closes after our Done (1.0.0).
// got is the number of blocks received.
func (ss *session) exchange(scan func(fn func(env []byte) error) error, bound, sendCap uint64, closeWrite bool) (stopped bool, got uint64, err error) {
	var wg sync.WaitGroup
	ss.sent = 0
	wg.Go(func() {
		var err error
		if stopped, err = ss.send(scan, sendCap, closeWrite); err != nil {
			ss.failed(err)
		}
	})
	// A small queue lets the reader decode frame k+1 while frame k is
	// ingested, and bounds memory at a few frames.
	frames := make(chan [][]byte, 1)
	wg.Go(func() {
		defer close(frames)
		var err error
		if got, err = ss.receive(bound, frames); err != nil {
			ss.failed(err)
		}
	})
	for envs := range frames {
		if ss.ctx.Err() != nil {
			continue // drain until the reader stops
		}
		if err := ss.c.sink.Ingest(ss.ctx, ss.p, ss.syncID, envs); err != nil {
			if !errors.Is(err, ErrBadPeer) {
				err = fmt.Errorf("catch-up: ingest: %w", err)
			}
			ss.failed(err)
		}
	}
	wg.Wait()
	if ss.ctx.Err() != nil {
		return false, got, ss.failed(context.Cause(ss.ctx))
	}
	ss.closeOnEnd = true
	return stopped, got, nil
}

// reconcile runs the reconciliation fallback and then ships, both ways,
// the blocks it found missing. The initiator calls it with nil and opens;
// the responder passes the Reconcile frame that opened it.
func (ss *session) reconcile(first *protocol.Frame) error {
	ss.st.Reconciled = true
	rec, ok := ss.c.src.(Reconciler)
	if !ok {
		if err := ss.write(protocol.Frame{Kind: protocol.FrameError, Error: protocol.SyncReasonUnavailable}, true); err != nil {
			return ss.failed(err)
		}
		return nil
	}
	d := ss.c.opts.ReconTimeout
	timer := time.AfterFunc(d, func() { ss.cancel(fmt.Errorf("%w: reconciliation ran over %s", ErrTimeout, d)) })
	defer timer.Stop()
	set, err := rec.ReconSet(ss.ctx, ss.syncID)
	if err != nil {
		err = fmt.Errorf("catch-up: reconciliation set: %w", err)
		if first != nil {
			_ = ss.write(protocol.Frame{Kind: protocol.FrameError, Error: protocol.SyncReasonUnavailable}, true)
		}
		return ss.failed(err)
	}
	r := dag.NewReconciler(set, ss.c.opts.Recon)
	if first == nil {
		if err := ss.writeRecon(r.Initiate()); err != nil {
			return ss.failed(err)
		}
	}
	for {
		var f protocol.Frame
		if first != nil {
			f, first = *first, nil
		} else if f, err = ss.read(); err != nil {
			return ss.failed(err)
		}
		switch f.Kind {
		case protocol.FrameReconcile:
		case protocol.FrameError:
			return ss.failed(remoteError(f.Error))
		default:
			return ss.failed(fmt.Errorf("%w: frame kind %d during reconciliation", ErrBadPeer, f.Kind))
		}
		ss.st.ReconMessages++
		in, err := dag.DecodeReconMessage(f.Recon)
		if err != nil {
			return ss.failed(fmt.Errorf("%w: %w", ErrBadPeer, err))
		}
		out, reply, err := r.Receive(in)
		if err != nil {
			return ss.failed(fmt.Errorf("%w: %w", ErrBadPeer, err))
		}
		if !reply {
			break
		}
		if err := ss.writeRecon(out); err != nil {
			return ss.failed(err)
		}
		if !out.NeedsReply() {
			break
		}
	}
	timer.Stop()
	idx := r.Sending()
	items := make([]dag.ReconItem, len(idx))
	for k, i := range idx {
		items[k] = set.Item(i)
	}
	ss.c.log.Debug("catch-up: reconciled", "peer", ss.p.String(), "messages", ss.st.ReconMessages,
		"send", len(items), "receive", r.Expected(), "incomplete", r.Incomplete())
	scan := func(fn func(env []byte) error) error { return rec.Envelopes(ss.ctx, ss.syncID, items, fn) }
	bound := min(satAdd(r.Expected(), Slack), ss.c.opts.MaxBlocksPerSession)
	stopped, got, err := ss.exchange(scan, bound, MaxBlocks, true)
	if err != nil {
		return err
	}
	// Reconciliation covers whatever the vector exchange left out.
	ss.st.Partial = stopped || r.Incomplete() || got < r.Expected()
	return nil
}

// writeRecon sends one reconciliation message; one that needs an answer
// costs a round trip.
func (ss *session) writeRecon(m dag.ReconMessage) error {
	ss.st.ReconMessages++
	if m.NeedsReply() {
		ss.st.RoundTrips++
	}
	return ss.write(protocol.Frame{Kind: protocol.FrameReconcile, Recon: dag.EncodeReconMessage(m)}, true)
}

// errStopSending ends the source's scan early (budget or cap reached).
var errStopSending = errors.New("catch-up: stop sending")

// Encoded size of a Blocks frame around its envelopes: map header, two
// keys, the kind and the array header (at most 9 bytes; rounded up).
const blocksFrameOverhead = 16

// send streams everything the peer lacks, then Done, then closes the
// write side. stopped reports an early end (budget or cap).
func (ss *session) send(scan func(fn func(env []byte) error) error, sendCap uint64, closeWrite bool) (stopped bool, err error) {
	frameLimit := ss.c.opts.FrameBytes
	ss.arena = make([]byte, 0, min(frameLimit, 64<<10))
	err = scan(func(env []byte) error {
		if err := ss.ctx.Err(); err != nil {
			return context.Cause(ss.ctx)
		}
		if ss.sent+uint64(len(ss.pending)) >= sendCap {
			return errStopSending
		}
		size := cborHeadLen(uint64(len(env))) + len(env)
		if blocksFrameOverhead+size > frameLimit {
			return fmt.Errorf("catch-up: envelope of %d bytes does not fit a frame", len(env))
		}
		if len(ss.pending) == protocol.MaxFrameEnvelopes || blocksFrameOverhead+ss.pendingSize+size > frameLimit {
			if err := ss.flushBlocks(); err != nil {
				return err
			}
		}
		if ss.limited {
			// Charge the envelope, plus the frame's overhead and
			// length prefix if it opens one, keeping room for Done.
			need := int64(size)
			if len(ss.pending) == 0 {
				need += blocksFrameOverhead + 8
			}
			if !ss.c.tryCharge(ss.connID, need, 32) {
				return errStopSending
			}
		}
		if cap(ss.arena)-len(ss.arena) < len(env) {
			// A fresh arena: the pending slices keep the old one alive
			// until the frame is written.
			ss.arena = make([]byte, 0, max(len(env), min(frameLimit, 2*cap(ss.arena))))
		}
		off := len(ss.arena)
		ss.arena = append(ss.arena, env...)
		ss.pending = append(ss.pending, ss.arena[off:len(ss.arena):len(ss.arena)])
		ss.pendingSize += size
		return nil
	})
	if errors.Is(err, errStopSending) {
		stopped, err = true, nil
	}
	if err != nil {
		if ss.ctx.Err() != nil {
			return false, context.Cause(ss.ctx)
		}
		return false, fmt.Errorf("catch-up: scan: %w", err)
	}
	if err := ss.flushBlocks(); err != nil {
		return false, err
	}
	if err := ss.write(protocol.Frame{Kind: protocol.FrameDone, Sent: ss.sent}, true); err != nil {
		return false, err
	}
	if !closeWrite {
		return stopped, nil
	}
	return stopped, ss.s.CloseWrite()
}

// flushBlocks writes the pending Blocks frame, if any, and flushes: a
// frame boundary is the only place the sender flushes.
func (ss *session) flushBlocks() error {
	if len(ss.pending) == 0 {
		return nil
	}
	if err := ss.write(protocol.Frame{Kind: protocol.FrameBlocks, Envelopes: ss.pending}, true); err != nil {
		return err
	}
	ss.st.BlocksSent += len(ss.pending)
	ss.sent += uint64(len(ss.pending))
	clear(ss.pending)
	ss.pending = ss.pending[:0]
	ss.pendingSize = 0
	ss.arena = ss.arena[:0]
	return nil
}

// receive reads the peer's frames until its Done, queueing Blocks for
// ingestion and enforcing the block bound. got counts the blocks read.
func (ss *session) receive(bound uint64, frames chan<- [][]byte) (got uint64, err error) {
	for {
		f, err := ss.read()
		if err != nil {
			return got, err
		}
		switch f.Kind {
		case protocol.FrameBlocks:
			ss.st.BlocksRecv += len(f.Envelopes)
			got += uint64(len(f.Envelopes))
			if got > bound {
				return got, fmt.Errorf("%w: sent %d blocks or more, %d allowed", ErrBadPeer, got, bound)
			}
			select {
			case frames <- f.Envelopes:
			case <-ss.ctx.Done():
				return got, nil
			}
		case protocol.FrameDone:
			if f.Sent != got {
				return got, fmt.Errorf("%w: done says %d blocks, sent %d", ErrBadPeer, f.Sent, got)
			}
			return got, nil
		case protocol.FrameError:
			return got, remoteError(f.Error)
		default:
			return got, fmt.Errorf("%w: unexpected frame kind %d", ErrBadPeer, f.Kind)
		}
	}
}

// expectedBlocks is how many blocks the peer (theirs) should send us
// (mine): stores are downward-closed and made of per-author chains, so the
// vectors give the difference exactly. A Hello without a vector falls back
// on its Count.
func expectedBlocks(mine, theirs protocol.Hello) uint64 {
	if len(theirs.Vector) == 0 {
		return theirs.Count
	}
	var n uint64
	for a, seq := range theirs.Vector {
		if m := mine.Vector[a]; seq > m {
			n = satAdd(n, seq-m)
		}
	}
	return n
}

// blockBound is the most blocks we accept from the peer in a session.
func blockBound(mine, theirs protocol.Hello, slack, limit uint64) uint64 {
	return min(satAdd(expectedBlocks(mine, theirs), slack), limit)
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// uvarintLen is the length of n's unsigned varint (the frame prefix).
func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// cborHeadLen is the length of a CBOR byte string's header for n bytes.
func cborHeadLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// sessionLimiter caps concurrent sessions, overall and per peer.
type sessionLimiter struct {
	mu      sync.Mutex
	total   int
	max     int
	perPeer int
	byPeer  map[peer.ID]int
}

func newSessionLimiter(max, perPeer int) *sessionLimiter {
	return &sessionLimiter{max: max, perPeer: perPeer, byPeer: map[peer.ID]int{}}
}

func (l *sessionLimiter) acquire(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byPeer[p] >= l.perPeer {
		return false
	}
	l.total++
	l.byPeer[p]++
	return true
}

func (l *sessionLimiter) release(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byPeer[p]--; l.byPeer[p] <= 0 {
		delete(l.byPeer, p)
	}
}
