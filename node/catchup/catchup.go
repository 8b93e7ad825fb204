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
	// Summary returns this node's Hello for the DAG named by syncID, for
	// a session with p. ok is false when the node does not hold that DAG
	// or will not sync it with p (not a current member device): the
	// responder then answers exactly as for a DAG it does not hold.
	Summary(ctx context.Context, p peer.ID, syncID []byte) (h protocol.Hello, ok bool, err error)
	// Missing calls fn with every envelope the peer lacks given its Hello,
	// in topological order (parents first). fn copies env, so the source
	// may reuse its buffer after fn returns. An error from fn must be
	// returned (possibly wrapped): it is how the engine stops the scan.
	//
	// p is the session's peer: a source may show it only part of the DAG
	// (what a former member device can read), the same part in Summary.
	Missing(ctx context.Context, p peer.ID, syncID []byte, theirs protocol.Hello, fn func(env []byte) error) error
}

// Reconciler is what a Source needs for the reconciliation
// fallback (protocol 1.1.0). A source without it still serves 1.1.0
// sessions but never starts reconciliation, and answers a peer that does
// with Error "unavailable".
type Reconciler interface {
	// ReconSet returns the blocks held for syncID as a reconciliation set
	// (a snapshot, which the engine does not modify).
	ReconSet(ctx context.Context, p peer.ID, syncID []byte) (*dag.ReconSet, error)
	// Lacking returns how many of cids (raw CID bytes, from a peer's
	// Hello) are not held.
	Lacking(ctx context.Context, syncID []byte, cids [][]byte) (int, error)
	// Envelopes calls fn with the envelope of each item in the order
	// given (the engine passes key order, which is topological), skipping
	// items no longer held. Buffer and error rules are Missing's.
	Envelopes(ctx context.Context, p peer.ID, syncID []byte, items []dag.ReconItem, fn func(env []byte) error) error
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
	// ErrBadPeer marks a peer that broke the protocol or sent bad data
	// (protocol.ErrBadPeer, which every service uses).
	ErrBadPeer = protocol.ErrBadPeer
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

	mine, have, err := c.src.Summary(ctx, p, syncID)
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
	mine, ok, err := c.src.Summary(ss.ctx, p, theirs.SyncID)
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
