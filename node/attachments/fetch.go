package attachments

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

	"github.com/glitr-chat/glitr/protocol"
)

// Providers is where a fetch finds peers to ask: the node answers with the
// peers of the members of the conversations that carry the file, online
// ones first.
type Providers interface {
	// Providers returns peers that may hold file root, best first.
	Providers(ctx context.Context, root Ref) ([]peer.ID, error)
}

// ProvidersFunc adapts a function to Providers.
type ProvidersFunc func(ctx context.Context, root Ref) ([]peer.ID, error)

// Providers calls f.
func (f ProvidersFunc) Providers(ctx context.Context, root Ref) ([]peer.ID, error) {
	return f(ctx, root)
}

// StaticProviders always answers the same peers.
func StaticProviders(ps ...peer.ID) Providers {
	return ProvidersFunc(func(context.Context, Ref) ([]peer.ID, error) { return ps, nil })
}

// ErrUnavailable: no provider supplied some chunks of the file; what did
// arrive stays stored, and the next fetch asks only for the rest.
var ErrUnavailable = errors.New("attachments: chunks unavailable from every provider")

// FetchOptions tune a Fetcher. Zero values take the defaults noted.
type FetchOptions struct {
	// Penalize is called at most once per peer and fetch when the peer
	// sends garbage or breaks the protocol (amount Penalty, default 20)
	// or withholds: lets a request time out, answers Missing for a chunk
	// of a file it was named a provider of, or "unknown" for the file
	// (amount WithholdPenalty, default 5). Nil: no penalties.
	Penalize        func(p peer.ID, amount float64, reason string)
	Penalty         float64
	WithholdPenalty float64
	// IdleTimeout is how long a peer may leave a request unanswered, and
	// how long opening a stream may take (default 10 s).
	IdleTimeout time.Duration
	// Window is how many chunks one peer has in flight (default 16);
	// Batch how many CIDs go in one Want (default 4).
	Window, Batch int
	// MaxPeers is how many providers a fetch draws from at once (default
	// 4); the others stand by for those that fail.
	MaxPeers int
	// Logger receives debug and warning logs (nil: discard).
	Logger *slog.Logger
}

func (o *FetchOptions) defaults() {
	if o.Penalty == 0 {
		o.Penalty = 20
	}
	if o.WithholdPenalty == 0 {
		o.WithholdPenalty = 5
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 16
	}
	if o.Batch <= 0 || o.Batch > protocol.MaxWantChunks {
		o.Batch = 4
	}
	o.Batch = min(o.Batch, o.Window)
	if o.MaxPeers <= 0 {
		o.MaxPeers = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Fetcher brings files' chunks from other peers into a store.
type Fetcher struct {
	h    host.Host
	st   *Store
	opts FetchOptions
	log  *slog.Logger

	mu      sync.Mutex
	running map[Ref]chan struct{} // closed when the fetch of that root ends
}

// NewFetcher returns a fetcher that opens streams from h and stores into
// st. It holds no goroutines between fetches.
func NewFetcher(h host.Host, st *Store, opts FetchOptions) *Fetcher {
	opts.defaults()
	return &Fetcher{h: h, st: st, opts: opts, log: opts.Logger, running: map[Ref]chan struct{}{}}
}

// exclusive waits until no other fetch of root runs, then claims it: two
// fetches of one file (the auto-download and the user's click) would ask
// for every chunk twice. The second one then finds the first one's work
// in the store.
func (f *Fetcher) exclusive(ctx context.Context, root Ref) (release func(), err error) {
	for {
		f.mu.Lock()
		ch, busy := f.running[root]
		if !busy {
			ch = make(chan struct{})
			f.running[root] = ch
			f.mu.Unlock()
			return func() {
				f.mu.Lock()
				delete(f.running, root)
				f.mu.Unlock()
				close(ch)
			}, nil
		}
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("attachments: fetch %s: %w", root, ctx.Err())
		}
	}
}

// FetchStats describes one fetch.
type FetchStats struct {
	// Held is how many data chunks the store held before (a resumed
	// fetch); Chunks and Bytes count what this fetch brought (sealed
	// bytes, the index included).
	Held, Chunks int
	Bytes        int64
	// ByPeer counts the chunks each peer supplied.
	ByPeer map[peer.ID]int
	// Refused counts chunks refused on arrival (wrong CID or size).
	Refused int
	// Penalized lists the peers reported to Penalize.
	Penalized []peer.ID
	Duration  time.Duration
}

// Fetch brings every chunk of m's file that the store lacks, from the
// providers, and records the file for owner. It starts with the index
// (unless already held), then keeps Window chunks in flight on each of up
// to MaxPeers providers. Every chunk is checked on arrival, against its
// CID and under the file key, before it is stored; a peer that sends a bad
// one is penalised and dropped, and the chunk is asked of another. The
// store keeps what arrived whatever happens, so a fetch that fails
// (ErrUnavailable, ctx, a closed host) resumes where it stopped. progress,
// if set, is called after each stored chunk (from several goroutines,
// one at a time). A second Fetch of the same file waits for the first.
func (f *Fetcher) Fetch(ctx context.Context, m Manifest, owner string, provs Providers, progress func(Progress)) (FetchStats, error) {
	start := time.Now()
	st := FetchStats{ByPeer: map[peer.ID]int{}}
	if err := m.Validate(); err != nil {
		return st, err
	}
	if err := checkOwner(owner); err != nil {
		return st, err
	}
	release, err := f.exclusive(ctx, m.Root)
	if err != nil {
		return st, err
	}
	defer release()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	j := &job{f: f, m: m, ctx: ctx, cancel: cancel, st: &st, progress: progress, penalized: map[peer.ID]bool{}}
	defer func() { st.Duration = time.Since(start) }()

	peers, err := provs.Providers(ctx, m.Root)
	if err != nil {
		return st, fmt.Errorf("attachments: providers of %s: %w", m.Root, err)
	}
	peers = dedupe(peers, f.h.ID())

	// The index: held, or fetched from the first provider that has it.
	var first *conn
	held, err := f.st.HasFile(ctx, m.Root)
	if err == nil && held {
		held, err = f.st.HasChunk(ctx, m.Root)
	}
	if err != nil {
		return st, err
	}
	if held {
		if err := f.st.Hold(ctx, m.Root, owner, time.Time{}); err != nil {
			return st, err
		}
		if j.refs, err = f.st.openIndex(ctx, m, newSealer(m.Key)); err != nil {
			return st, err
		}
	} else {
		for len(peers) > 0 && first == nil {
			p := peers[0]
			peers = peers[1:]
			if first, err = j.fetchIndex(p, owner); err != nil {
				return st, err
			}
		}
		if first == nil {
			return st, fmt.Errorf("%w: no provider sent the index of %s", ErrUnavailable, m.Root)
		}
	}

	miss, err := j.missing()
	if err != nil {
		return st, err
	}
	st.Held = len(j.refs) - len(miss)
	j.prog = Progress{Chunks: len(j.refs), Bytes: m.SealedSize(), ChunksHeld: st.Held}
	j.prog.BytesHeld = uint64(indexSealedLen(m.Padded, m.ChunkSize))
	lacking := make([]bool, len(j.refs))
	for _, i := range miss {
		lacking[i] = true
	}
	for i := range j.refs {
		if !lacking[i] {
			j.prog.BytesHeld += uint64(sealedLen(m.Padded, m.ChunkSize, i))
		}
	}
	if len(miss) == 0 {
		if first != nil {
			first.close()
		}
		j.report()
		return st, nil
	}
	j.queue = miss
	j.excluded = map[int]map[peer.ID]bool{}
	j.changed = make(chan struct{})

	// Workers: the index's provider first, then the others; a worker
	// that ends makes room for the next provider.
	var wg sync.WaitGroup
	slots := make(chan struct{}, f.opts.MaxPeers)
	startWorker := func(p peer.ID, c *conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			j.work(p, c)
		}()
	}
	if first != nil {
		slots <- struct{}{}
		startWorker(first.p, first)
	}
	for _, p := range peers {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil || j.finished() {
			break
		}
		startWorker(p, nil)
	}
	wg.Wait()
	// A worker's fatal error (the store, a corrupt file) or the caller's
	// cancellation.
	if cause := context.Cause(ctx); cause != nil {
		if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
			return st, fmt.Errorf("attachments: fetch %s: %w", m.Root, cause)
		}
		return st, cause
	}
	if n := j.remaining(); n > 0 {
		return st, fmt.Errorf("%w: %d of %d chunks of %s", ErrUnavailable, n, len(j.refs), m.Root)
	}
	return st, nil
}

// missing lists the positions of the data chunks not stored. A stored
// chunk of the wrong size (torn by a crash: fetched chunks are written
// without a sync) is deleted and counted missing; one torn otherwise
// fails its AEAD when opened, is deleted then and fetched again.
func (j *job) missing() ([]int, error) {
	var miss []int
	for i, r := range j.refs {
		n, err := j.f.st.chunkSize(j.ctx, r)
		switch {
		case errors.Is(err, errNoChunk):
			miss = append(miss, i)
		case err != nil:
			return nil, err
		case n != sealedLen(j.m.Padded, j.m.ChunkSize, i):
			if err := j.f.st.dropChunk(j.ctx, r); err != nil {
				return nil, err
			}
			miss = append(miss, i)
		}
	}
	return miss, nil
}

func dedupe(ps []peer.ID, self peer.ID) []peer.ID {
	seen := map[peer.ID]bool{self: true}
	var out []peer.ID
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// job is one fetch: the scheduler that hands chunks to the peers' workers.
type job struct {
	f        *Fetcher
	m        Manifest
	ctx      context.Context
	cancel   context.CancelCauseFunc
	refs     []Ref
	progress func(Progress)

	mu        sync.Mutex
	st        *FetchStats
	prog      Progress
	queue     []int                    // positions still to fetch, not in flight
	inflight  int                      // positions in flight, all workers
	excluded  map[int]map[peer.ID]bool // peers that failed a position
	changed   chan struct{}            // closed and replaced when the queue grows or a chunk completes
	penalized map[peer.ID]bool
}

func (j *job) finished() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.queue) == 0 && j.inflight == 0
}

func (j *job) remaining() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.queue) + j.inflight
}

func (j *job) notifyLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// take hands p up to n queued positions it has not failed. With none, it
// returns a channel to wait on, or nil when no more can come for p (no
// chunk in flight anywhere that could fail back into the queue).
func (j *job) take(p peer.ID, n int) ([]int, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var got []int
	rest := j.queue[:0]
	for _, i := range j.queue {
		if len(got) < n && !j.excluded[i][p] {
			got = append(got, i)
		} else {
			rest = append(rest, i)
		}
	}
	j.queue = rest
	j.inflight += len(got)
	if len(got) > 0 {
		return got, nil
	}
	if j.inflight == 0 {
		return nil, nil
	}
	return nil, j.changed
}

// giveBack returns positions p did not deliver to the queue; with
// exclude, p is not asked for them again.
func (j *job) giveBack(p peer.ID, is []int, exclude bool) {
	if len(is) == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, i := range is {
		if exclude {
			if j.excluded[i] == nil {
				j.excluded[i] = map[peer.ID]bool{}
			}
			j.excluded[i][p] = true
		}
	}
	// Retried chunks go first: a gap holds up a reader that streams.
	j.queue = append(append([]int(nil), is...), j.queue...)
	j.inflight -= len(is)
	j.notifyLocked()
}

// done records position i as stored, brought by p.
func (j *job) done(p peer.ID, i int, n int) {
	j.mu.Lock()
	j.inflight--
	j.st.Chunks++
	j.st.Bytes += int64(n)
	j.st.ByPeer[p]++
	j.prog.ChunksHeld++
	j.prog.BytesHeld += uint64(n)
	j.notifyLocked()
	j.mu.Unlock()
	j.report()
}

func (j *job) report() {
	if j.progress == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.progress(j.prog)
}

// blame penalises p once per fetch.
func (j *job) blame(p peer.ID, amount float64, why error) {
	j.mu.Lock()
	already := j.penalized[p]
	j.penalized[p] = true
	if !already {
		j.st.Penalized = append(j.st.Penalized, p)
	}
	j.mu.Unlock()
	if already {
		return
	}
	j.f.log.Warn("attachments: provider misbehaved", "peer", p.String(), "root", j.m.Root.String(), "err", why)
	if j.f.opts.Penalize != nil {
		j.f.opts.Penalize(p, amount, why.Error())
	}
}

func (j *job) refused() {
	j.mu.Lock()
	j.st.Refused++
	j.mu.Unlock()
}

// conn is one chunk stream to a provider.
type conn struct {
	p  peer.ID
	s  network.Stream
	fr *protocol.ChunkFrameReader
	bw *bufio.Writer
	fw *protocol.ChunkFrameWriter
}

func (f *Fetcher) open(ctx context.Context, p peer.ID) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.IdleTimeout)
	defer cancel()
	s, err := f.h.NewStream(ctx, p, protocol.ChunkProtocol)
	if err != nil {
		return nil, fmt.Errorf("attachments: open stream to %s: %w", p, err)
	}
	bw := bufio.NewWriterSize(s, 4<<10)
	return &conn{p: p, s: s, fr: protocol.NewChunkFrameReader(bufio.NewReaderSize(s, 64<<10)), bw: bw, fw: protocol.NewChunkFrameWriter(bw)}, nil
}

func (c *conn) want(root Ref, refs []Ref, timeout time.Duration) error {
	cids := make([][]byte, len(refs))
	for i, r := range refs {
		cids[i] = r.Bytes()
	}
	_ = c.s.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.fw.Write(protocol.ChunkFrame{Kind: protocol.ChunkWant, Root: root.Bytes(), CIDs: cids}); err != nil {
		return err
	}
	return c.bw.Flush()
}

// read returns the next frame; a Data frame's bytes are valid until the
// next read.
func (c *conn) read(timeout time.Duration) (protocol.ChunkFrame, error) {
	_ = c.s.SetReadDeadline(time.Now().Add(timeout))
	f, _, err := c.fr.ReadView()
	return f, err
}

func (c *conn) close() { _ = c.s.Close() }
func (c *conn) reset() { _ = c.s.Reset() }

// Outcomes of a peer's answer, as the worker sees them.
var (
	errWithheld = errors.New("attachments: provider withheld")
	errGarbage  = errors.New("attachments: provider sent garbage")
	errBusy     = errors.New("attachments: provider busy")
)

// classify turns a read or open error into a withhold (timeout), garbage
// (bad frame) or plain failure (reset, closed: no fault).
func classify(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: timed out: %w", errWithheld, err)
	case errors.Is(err, protocol.ErrBadChunkFrame):
		return fmt.Errorf("%w: %w", errGarbage, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("attachments: stream ended: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// answerError handles an Error frame: busy is no fault, unknown from a
// named provider is withholding.
func answerError(f protocol.ChunkFrame) error {
	if f.Error == protocol.ChunkReasonBusy {
		return errBusy
	}
	return fmt.Errorf("%w: answered %q", errWithheld, f.Error)
}

// punish reports p according to err and says whether it was p's fault.
func (j *job) punish(p peer.ID, err error) {
	switch {
	case errors.Is(err, errGarbage):
		j.blame(p, j.f.opts.Penalty, err)
	case errors.Is(err, errWithheld):
		j.blame(p, j.f.opts.WithholdPenalty, err)
	default:
		j.f.log.Debug("attachments: provider failed", "peer", p.String(), "err", err)
	}
}

// fetchIndex asks p for the index, checks it and records the file. It
// returns the stream for the data chunks, nil when p did not deliver (p
// is penalised as it deserves), or an error that ends the fetch.
func (j *job) fetchIndex(p peer.ID, owner string) (*conn, error) {
	f, m := j.f, j.m
	c, err := f.open(j.ctx, p)
	if err != nil {
		if j.ctx.Err() != nil {
			return nil, context.Cause(j.ctx)
		}
		f.log.Debug("attachments: provider unreachable", "peer", p.String(), "err", err)
		return nil, nil
	}
	fail := func(err error) (*conn, error) {
		c.reset()
		if j.ctx.Err() != nil {
			return nil, context.Cause(j.ctx)
		}
		j.punish(p, err)
		return nil, nil
	}
	if err := c.want(m.Root, []Ref{m.Root}, f.opts.IdleTimeout); err != nil {
		return fail(err)
	}
	fr, err := c.read(f.opts.IdleTimeout)
	if err != nil {
		return fail(classify(err))
	}
	switch fr.Kind {
	case protocol.ChunkData, protocol.ChunkMissing:
		if r, _ := ParseRef(fr.CID); r != m.Root {
			return fail(fmt.Errorf("%w: an answer for a chunk that was not asked for", errGarbage))
		}
	case protocol.ChunkError:
		return fail(answerError(fr))
	default:
		return fail(fmt.Errorf("%w: frame kind %d", errGarbage, fr.Kind))
	}
	if fr.Kind == protocol.ChunkMissing {
		return fail(fmt.Errorf("%w: missing the index", errWithheld))
	}
	if len(fr.Data) != indexSealedLen(m.Padded, m.ChunkSize) || RefOf(fr.Data) != m.Root {
		j.refused()
		return fail(fmt.Errorf("%w: an index that does not match its CID", errGarbage))
	}
	// The CID matched, so these are the author's bytes: an index that
	// fails to open is a bad file, not a bad peer.
	refs, err := newSealer(m.Key).openIndex(fr.Data, m.ChunkSize, m.Padded)
	if err != nil {
		c.reset()
		return nil, fmt.Errorf("attachments: fetch %s: %w", m.Root, err)
	}
	if err := f.st.addFile(j.ctx, m.Root, refs, owner, time.Time{}); err != nil {
		c.reset()
		return nil, err
	}
	if err := f.st.putChunkTo(j.ctx, m.Root, m.Root, fr.Data, false, false); err != nil {
		c.reset()
		return nil, err
	}
	j.refs = refs
	j.mu.Lock()
	j.st.Chunks++
	j.st.Bytes += int64(len(fr.Data))
	j.st.ByPeer[p]++
	j.mu.Unlock()
	return c, nil
}

// work fetches chunks from p until none is left for it or p fails. It
// reads and checks each chunk's CID itself and hands it to a storer
// goroutine, which opens it under the file key and stores it, so that
// reading the next chunk off the stream overlaps the decryption and the
// write of this one.
func (j *job) work(p peer.ID, c *conn) {
	f, m := j.f, j.m
	var inflight []int
	ok := false
	arrived := make(chan arrival, 2)
	free := make(chan []byte, 4)
	var storer sync.WaitGroup
	storer.Add(1)
	go func() {
		defer storer.Done()
		j.store(p, arrived, free)
	}()
	defer func() {
		close(arrived)
		storer.Wait()
		j.giveBack(p, inflight, !ok)
		if c != nil {
			if ok {
				c.close()
			} else {
				c.reset()
			}
		}
	}()
	fail := func(err error) {
		if j.ctx.Err() == nil {
			j.punish(p, err)
		}
	}
	for j.ctx.Err() == nil {
		if len(inflight) <= f.opts.Window-f.opts.Batch {
			got, wait := j.take(p, f.opts.Window-len(inflight))
			if len(got) == 0 && len(inflight) == 0 {
				if wait == nil {
					ok = true
					return
				}
				select {
				case <-wait:
					continue
				case <-j.ctx.Done():
					return
				}
			}
			if c == nil && len(got) > 0 {
				var err error
				if c, err = f.open(j.ctx, p); err != nil {
					j.giveBack(p, got, true)
					f.log.Debug("attachments: provider unreachable", "peer", p.String(), "err", err)
					return
				}
			}
			for len(got) > 0 {
				n := min(len(got), f.opts.Batch)
				refs := make([]Ref, n)
				for k, i := range got[:n] {
					refs[k] = j.refs[i]
				}
				inflight = append(inflight, got[:n]...)
				got = got[n:]
				if err := c.want(m.Root, refs, f.opts.IdleTimeout); err != nil {
					j.giveBack(p, got, false)
					fail(err)
					return
				}
			}
		}
		fr, err := c.read(f.opts.IdleTimeout)
		if err != nil {
			fail(classify(err))
			return
		}
		i := inflight[0]
		want := j.refs[i]
		switch fr.Kind {
		case protocol.ChunkData, protocol.ChunkMissing:
			if r, _ := ParseRef(fr.CID); r != want {
				fail(fmt.Errorf("%w: chunk %s out of turn", errGarbage, r))
				return
			}
		case protocol.ChunkError:
			fail(answerError(fr))
			return
		default:
			fail(fmt.Errorf("%w: frame kind %d", errGarbage, fr.Kind))
			return
		}
		if fr.Kind == protocol.ChunkMissing {
			inflight = inflight[1:]
			j.giveBack(p, []int{i}, true)
			fail(fmt.Errorf("%w: chunk %d missing", errWithheld, i))
			continue
		}
		if len(fr.Data) != sealedLen(m.Padded, m.ChunkSize, i) || RefOf(fr.Data) != want {
			j.refused()
			fail(fmt.Errorf("%w: chunk %d does not match its CID", errGarbage, i))
			return
		}
		// The frame's bytes are the reader's until the next read: copy
		// them into a buffer the storer hands back.
		var buf []byte
		select {
		case buf = <-free:
		default:
			buf = make([]byte, 0, int(m.ChunkSize)+protocol.ChunkOverhead)
		}
		inflight = inflight[1:]
		select {
		case arrived <- arrival{i: i, data: append(buf[:0], fr.Data...)}:
		case <-j.ctx.Done():
			return
		}
	}
}

// arrival is a chunk whose CID matched, on its way to the store.
type arrival struct {
	i    int
	data []byte
}

// store opens each arrival under the file key and stores it, returning
// its buffer through free. A chunk that fails to open, or a store that
// fails, ends the whole fetch: the CID matched, so no provider has a
// better copy, and a full store is full for every provider.
func (j *job) store(p peer.ID, arrived <-chan arrival, free chan<- []byte) {
	sl := newSealer(j.m.Key)
	scratch := make([]byte, 0, j.m.ChunkSize)
	for a := range arrived {
		if j.ctx.Err() != nil {
			continue // drain
		}
		if _, err := sl.openChunk(scratch[:0], a.data, a.i); err != nil {
			j.cancel(fmt.Errorf("attachments: fetch %s: %w", j.m.Root, err))
			continue
		}
		if err := j.f.st.putChunkTo(j.ctx, j.m.Root, j.refs[a.i], a.data, false, false); err != nil {
			j.cancel(fmt.Errorf("attachments: fetch %s: %w", j.m.Root, err))
			continue
		}
		j.done(p, a.i, len(a.data))
		select {
		case free <- a.data:
		default:
		}
	}
}
