package catchup

// One session from one side: the exchange of §3, the reconciliation of §9,
// and the bounds of §4 as the session applies them (docs/sync.md).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/protocol"
)

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
		return ss.c.src.Missing(ss.ctx, ss.p, ss.syncID, theirs, fn)
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
	set, err := rec.ReconSet(ss.ctx, ss.p, ss.syncID)
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
	scan := func(fn func(env []byte) error) error { return rec.Envelopes(ss.ctx, ss.p, ss.syncID, items, fn) }
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
	if closeWrite {
		// The Done is written; the half-close only says that nothing
		// follows. A peer that has read our Done and ended its side before
		// it came (go-libp2p's Close of a QUIC stream cancels its reading:
		// "close called for canceled stream" here) lost nothing, and a
		// peer that lost our Done reports the session truncated itself.
		if err := ss.s.CloseWrite(); err != nil {
			ss.c.log.Debug("catch-up: half-close after done", "peer", ss.p.String(), "err", err)
		}
	}
	return stopped, nil
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
