package attachments

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
	"golang.org/x/time/rate"

	"github.com/glitr-chat/glitr/protocol"
)

// Access is what the server asks the node before it serves a file: the
// node knows which conversations carry which attachment and which peers
// are their members' devices. A file it does not allow is answered as one
// the server does not hold.
type Access interface {
	// MayFetch reports whether peer p may fetch the file whose root is
	// root. It is called once per Want frame whose root differs from the
	// previous one on the stream, so it should be cheap.
	MayFetch(p peer.ID, root Ref) bool
}

// AccessFunc adapts a function to Access.
type AccessFunc func(p peer.ID, root Ref) bool

// MayFetch calls f.
func (f AccessFunc) MayFetch(p peer.ID, root Ref) bool { return f(p, root) }

// ServerOptions tune a Server. Zero values take the defaults noted.
type ServerOptions struct {
	// Penalize is called once per stream when a peer breaks the protocol
	// (the node wires it to Node.Penalize, as for catch-up). Nil: none.
	Penalize func(p peer.ID, amount float64, reason string)
	// Penalty is the amount passed to Penalize (default 20).
	Penalty float64
	// IdleTimeout ends a stream that sends no Want for this long, and
	// one whose frame cannot be written for this long (default 30 s; no
	// penalty).
	IdleTimeout time.Duration
	// MaxStreams and MaxStreamsPerPeer cap concurrent streams served
	// (defaults 16 and 2); past them the peer gets Error "busy".
	MaxStreams, MaxStreamsPerPeer int
	// Rate caps the sealed bytes served to one peer per second, across
	// its streams (default 64 MiB/s), with bursts of Burst bytes (default
	// 8 MiB, at least one frame). A token bucket is a quota that
	// refills: a member that downloads the same file in a loop gets the
	// rate, not the link.
	Rate  float64
	Burst int
	// OnServed, if set, is called after each chunk sent, with the peer,
	// the file and the chunk's sealed size: the sender's upload progress
	// (members pull; the node sums per peer and file). It runs on the
	// stream's writer and must not block.
	OnServed func(p peer.ID, root Ref, bytes int)
	// Logger receives debug and warning logs (nil: discard).
	Logger *slog.Logger
}

func (o *ServerOptions) defaults() {
	if o.Penalty == 0 {
		o.Penalty = 20
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 16
	}
	if o.MaxStreamsPerPeer <= 0 {
		o.MaxStreamsPerPeer = 2
	}
	if o.Rate <= 0 {
		o.Rate = 64 << 20
	}
	if o.Burst < protocol.MaxChunkFrame {
		o.Burst = max(8<<20, protocol.MaxChunkFrame)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server answers chunk requests over protocol.ChunkProtocol from the
// store, for the files Access allows.
type Server struct {
	h    host.Host
	st   *Store
	acc  Access
	opts ServerOptions
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	streams  int
	byPeer   map[peer.ID]int
	limiters map[peer.ID]*peerRate
	wg       sync.WaitGroup
	base     context.Context
	cancel   context.CancelFunc
}

type peerRate struct {
	lim  *rate.Limiter
	last time.Time
}

// NewServer registers the stream handler on h; Close removes it.
func NewServer(h host.Host, st *Store, acc Access, opts ServerOptions) *Server {
	opts.defaults()
	base, cancel := context.WithCancel(context.Background())
	s := &Server{h: h, st: st, acc: acc, opts: opts, log: opts.Logger, byPeer: map[peer.ID]int{}, limiters: map[peer.ID]*peerRate{}, base: base, cancel: cancel}
	h.SetStreamHandler(protocol.ChunkProtocol, s.Handle)
	return s
}

// Close removes the stream handler, resets the streams being served and
// waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.h.RemoveStreamHandler(protocol.ChunkProtocol)
	s.cancel()
	s.wg.Wait()
	return nil
}

// acquire admits a stream of p and returns its rate limiter, or nil when
// over the limits (or closed).
func (s *Server) acquire(p peer.ID) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.streams >= s.opts.MaxStreams || s.byPeer[p] >= s.opts.MaxStreamsPerPeer {
		return nil
	}
	s.streams++
	s.byPeer[p]++
	s.wg.Add(1)
	now := time.Now()
	pr := s.limiters[p]
	if pr == nil {
		// Forget the buckets of peers idle long enough for theirs to be
		// full again: keeping them would change nothing.
		full := time.Duration(float64(s.opts.Burst)/s.opts.Rate*float64(time.Second)) + time.Second
		for q, r := range s.limiters {
			if s.byPeer[q] == 0 && now.Sub(r.last) > full {
				delete(s.limiters, q)
			}
		}
		pr = &peerRate{lim: rate.NewLimiter(rate.Limit(s.opts.Rate), s.opts.Burst)}
		s.limiters[p] = pr
	}
	pr.last = now
	return pr.lim
}

func (s *Server) release(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams--
	if s.byPeer[p]--; s.byPeer[p] <= 0 {
		delete(s.byPeer, p)
	}
	if pr := s.limiters[p]; pr != nil {
		pr.last = time.Now()
	}
	s.wg.Done()
}

// Handle serves one stream: the handler NewServer sets.
func (s *Server) Handle(st network.Stream) {
	p := st.Conn().RemotePeer()
	lim := s.acquire(p)
	if lim == nil {
		_ = st.SetWriteDeadline(time.Now().Add(time.Second))
		bw := bufio.NewWriterSize(st, 64)
		if _, err := protocol.NewChunkFrameWriter(bw).Write(protocol.ChunkFrame{Kind: protocol.ChunkError, Error: protocol.ChunkReasonBusy}); err == nil && bw.Flush() == nil {
			_ = st.Close()
		} else {
			_ = st.Reset()
		}
		return
	}
	defer s.release(p)
	ctx, cancel := context.WithCancel(s.base)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	err := s.serve(ctx, st, p, lim)
	if stop() && err == nil {
		_ = st.Close()
	} else {
		_ = st.Reset()
	}
	if errors.Is(err, errServeBadPeer) {
		s.log.Warn("attachments: peer misbehaved", "peer", p.String(), "err", err)
		if s.opts.Penalize != nil {
			s.opts.Penalize(p, s.opts.Penalty, err.Error())
		}
	} else if err != nil {
		s.log.Debug("attachments: chunk stream ended", "peer", p.String(), "err", err)
	}
}

var errServeBadPeer = errors.New("attachments: chunk request broke the protocol")

// serve answers Wants until the peer closes its side (nil), breaks the
// protocol (errServeBadPeer) or something fails. The calling goroutine
// reads Wants and loads their chunks; a writer goroutine sends them, so
// that reading the next chunk from the store overlaps sending this one.
func (s *Server) serve(ctx context.Context, st network.Stream, p peer.ID, lim *rate.Limiter) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	answers := make(chan answer, 2)
	free := make(chan []byte, 4)
	werr := make(chan error, 1)
	// A failure on either side resets the stream at once, which
	// unblocks the other side's read or write (they wait on the peer,
	// not on ctx).
	go func() {
		err := s.write(ctx, st, p, lim, answers, free)
		if err != nil {
			cancel(err)
			_ = st.Reset()
		}
		werr <- err
	}()
	err := s.read(ctx, st, p, answers, free)
	close(answers)
	if err != nil {
		cancel(err)
		_ = st.Reset()
	}
	if wErr := <-werr; err == nil {
		err = wErr
	}
	return err
}

// answer is one frame to send: a chunk, Missing (data nil), or Error
// "unknown" (unknown set).
type answer struct {
	root    Ref
	cid     []byte
	data    []byte
	unknown bool
}

func (s *Server) read(ctx context.Context, st network.Stream, p peer.ID, answers chan<- answer, free <-chan []byte) error {
	fr := protocol.NewChunkFrameReader(bufio.NewReaderSize(st, 4<<10))
	var (
		root    Ref
		allowed bool
		checked bool
	)
	send := func(a answer) error {
		select {
		case answers <- a:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	for {
		_ = st.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		f, _, err := fr.Read()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, protocol.ErrBadChunkFrame):
			return fmt.Errorf("%w: %w", errServeBadPeer, err)
		case err != nil:
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("attachments: read request: %w", err)
		case f.Kind != protocol.ChunkWant:
			return fmt.Errorf("%w: frame kind %d instead of a want", errServeBadPeer, f.Kind)
		}
		r, _ := ParseRef(f.Root) // the decoder checked its form
		if !checked || r != root {
			root, checked = r, true
			allowed = s.acc.MayFetch(p, root)
			if allowed {
				if allowed, err = s.st.HasFile(ctx, root); err != nil {
					return err
				}
			}
		}
		if !allowed {
			// Say no more than "unknown": neither whether the file
			// exists nor whether the peer is refused.
			return send(answer{unknown: true})
		}
		for _, cb := range f.CIDs {
			c, _ := ParseRef(cb)
			var buf []byte
			select {
			case buf = <-free:
			default:
			}
			data, err := s.chunkOf(ctx, root, c, buf)
			if err != nil {
				return err
			}
			if err := send(answer{root: root, cid: cb, data: data}); err != nil {
				return err
			}
		}
	}
}

// write sends the answers, flushing whenever none is waiting, and hands
// chunk buffers back through free.
func (s *Server) write(ctx context.Context, st network.Stream, p peer.ID, lim *rate.Limiter, answers <-chan answer, free chan<- []byte) error {
	bw := bufio.NewWriterSize(st, 256<<10)
	fw := protocol.NewChunkFrameWriter(bw)
	flush := func() error {
		if bw.Buffered() == 0 {
			return nil
		}
		_ = st.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("attachments: write: %w", err)
		}
		return nil
	}
	for {
		var a answer
		var more bool
		select {
		case a, more = <-answers:
		default:
			if err := flush(); err != nil {
				return err
			}
			a, more = <-answers
		}
		if !more {
			return flush()
		}
		_ = st.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
		switch {
		case a.unknown:
			if _, err := fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkError, Error: protocol.ChunkReasonUnknown}); err != nil {
				return fmt.Errorf("attachments: write: %w", err)
			}
		case a.data == nil:
			if _, err := fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkMissing, CID: a.cid}); err != nil {
				return fmt.Errorf("attachments: write: %w", err)
			}
		default:
			if lim.Tokens() < float64(len(a.data)) {
				// What is buffered goes out before we wait.
				if err := flush(); err != nil {
					return err
				}
			}
			if err := lim.WaitN(ctx, len(a.data)); err != nil {
				return fmt.Errorf("attachments: rate: %w", err)
			}
			_ = st.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
			if _, err := protocol.WriteChunkData(bw, a.cid, a.data); err != nil {
				return fmt.Errorf("attachments: write: %w", err)
			}
			if s.opts.OnServed != nil {
				s.opts.OnServed(p, a.root, len(a.data))
			}
			select {
			case free <- a.data[:0]:
			default:
			}
		}
	}
}

// chunkOf returns chunk c of file root, or nil when it is not one of the
// file's or not stored.
func (s *Server) chunkOf(ctx context.Context, root, c Ref, buf []byte) ([]byte, error) {
	ok, err := s.st.Uses(ctx, root, c)
	if err != nil || !ok {
		return nil, err
	}
	data, err := s.st.chunkInto(ctx, c, buf)
	if errors.Is(err, ErrMissing) {
		return nil, nil
	}
	return data, err
}
