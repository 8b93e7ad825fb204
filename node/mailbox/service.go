// Package mailbox is Glitr's blind mailboxes on relays (docs/mailbox.md):
// a relay stores the encrypted envelopes that contacts deposit for an
// owner who is offline, under identifiers it cannot link to accounts or to
// each other over time, and hands them to the owner, who drains and acks.
//
// keys.go is the pure key schedule and capability crypto; store.go the
// relay's pebble store with its quotas and expiry; limits.go the relay's
// bounded per-peer and per-address tables; service.go the relay's stream
// handler for /glitr/mailbox/1.0.0; client.go the side a personal node
// calls: Deposit, Drain, Ack.
package mailbox

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

	"github.com/glitr-chat/glitr/protocol"
)

// Options tune the relay's service. Zero values take the defaults noted.
type Options struct {
	// ClockSkew is how far a request's time may be from the relay's
	// clock, and how far into a neighbouring period a deposit may be
	// (default 1 h, at most 12 h).
	ClockSkew time.Duration
	// DepositWindow is the window of the per-depositor quotas (default 1 h).
	DepositWindow time.Duration
	// PeerBytes and AddrBytes cap the bytes one peer id and one address
	// (IPv4 address or IPv6 /64) deposit per window (defaults 16 MiB and
	// 64 MiB).
	PeerBytes, AddrBytes int64
	// PeerMailboxes and AddrMailboxes cap the mailboxes one peer id and
	// one address create per window (defaults 8 and 32).
	PeerMailboxes, AddrMailboxes int64
	// Tracked caps the peers and addresses held in each of the rate and
	// quota tables (default 16,384).
	Tracked int
	// RequestRate and RequestBurst are the per-peer token bucket of
	// requests (defaults 5/s, burst 20).
	RequestRate  float64
	RequestBurst float64
	// MaxStreams and MaxStreamsPerPeer cap concurrent streams (defaults 32
	// and 2). A stream holds at most about 3 MiB (a frame being read, a
	// page of a drain being written, the buffers).
	MaxStreams, MaxStreamsPerPeer int
	// DrainItems caps the envelopes one Drain request returns (default
	// 4096); the client drains again for the rest.
	DrainItems int
	// DrainRate and DrainBurst are each address's token bucket of
	// drained envelope bytes (defaults 4 MiB/s, burst 64 MiB): a drain
	// stops at the budget with More set, or, when nothing fits, answers
	// rate-limited with a retry hint.
	DrainRate, DrainBurst float64
	// IdleTimeout ends a stream that sends no request, or cannot take an
	// answer, for this long (default 20 s).
	IdleTimeout time.Duration
	// SweepInterval is how often expired mailboxes are deleted (default
	// 10 min).
	SweepInterval time.Duration
	// Penalize is called when a peer sends malformed frames or bad
	// capabilities (the node wires it to its peer scoring). Nil: none.
	Penalize func(p peer.ID, amount float64, reason string)
	// Penalty is the amount passed to Penalize (default 10).
	Penalty float64
	// Logger receives debug and warning logs (nil: discard).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time
}

func (o *Options) defaults() error {
	if o.ClockSkew <= 0 {
		o.ClockSkew = time.Hour
	}
	if o.ClockSkew > 12*time.Hour {
		return fmt.Errorf("mailbox: clock skew %s > 12h", o.ClockSkew)
	}
	if o.DepositWindow <= 0 {
		o.DepositWindow = time.Hour
	}
	if o.PeerBytes <= 0 {
		o.PeerBytes = 16 << 20
	}
	if o.AddrBytes <= 0 {
		o.AddrBytes = 64 << 20
	}
	if o.PeerMailboxes <= 0 {
		o.PeerMailboxes = 8
	}
	if o.AddrMailboxes <= 0 {
		o.AddrMailboxes = 32
	}
	if o.Tracked <= 0 {
		o.Tracked = 16384
	}
	if o.RequestRate <= 0 {
		o.RequestRate = 5
	}
	if o.RequestBurst < 1 {
		o.RequestBurst = 20
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 32
	}
	if o.MaxStreamsPerPeer <= 0 {
		o.MaxStreamsPerPeer = 2
	}
	if o.DrainItems <= 0 {
		o.DrainItems = 4096
	}
	if o.DrainRate <= 0 {
		o.DrainRate = 4 << 20
	}
	if o.DrainBurst < protocol.MaxMailboxEnvelope {
		o.DrainBurst = 64 << 20
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 20 * time.Second
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 10 * time.Minute
	}
	if o.Penalty == 0 {
		o.Penalty = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Stats counts what the service did, for metrics.
type Stats struct {
	Deposits, DepositsRefused int64 // requests
	Stored, Duplicates        int64 // envelopes
	Drained, Acked            int64 // envelopes
	Refusals                  map[string]int64
}

// Service is the relay side of the mailbox protocol.
type Service struct {
	h     host.Host
	store *Store
	opts  Options
	log   *slog.Logger
	relay []byte // our peer id: what every signature is bound to

	mu   sync.Mutex // the tables below
	rate *buckets[peer.ID]
	// drainBytes is each address's budget of drained bytes: without
	// it, a stranger could fill a mailbox of its own once and drain it
	// (without acking) over and over, to turn the relay into an
	// amplifier of its own bandwidth.
	drainBytes *buckets[string]
	peerQ      *quota[peer.ID]
	addrQ      *quota[string]
	streams    map[peer.ID]int
	nStreams   int
	stats      Stats
	closed     bool

	cancel context.CancelFunc
	base   context.Context
	wg     sync.WaitGroup
}

// NewService serves the store on h under protocol.MailboxProtocol until
// Close, and sweeps expired mailboxes. The caller closes the store after
// the service.
func NewService(h host.Host, store *Store, opts Options) (*Service, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := newService(store, []byte(h.ID()), opts)
	s.h = h
	s.wg.Add(1)
	go s.sweeper()
	h.SetStreamHandler(protocol.MailboxProtocol, s.handle)
	return s, nil
}

// newService is the service without a host: what handles requests.
func newService(store *Store, relay []byte, opts Options) *Service {
	base, cancel := context.WithCancel(context.Background())
	return &Service{
		store: store, opts: opts, log: opts.Logger, relay: relay,
		rate:       newBuckets[peer.ID](opts.RequestRate, opts.RequestBurst, opts.Tracked),
		drainBytes: newBuckets[string](opts.DrainRate, opts.DrainBurst, opts.Tracked),
		peerQ:      newQuota[peer.ID]("peer", opts.DepositWindow, opts.PeerBytes, opts.PeerMailboxes, opts.Tracked, true),
		addrQ:      newQuota[string]("address", opts.DepositWindow, opts.AddrBytes, opts.AddrMailboxes, opts.Tracked, false),
		streams:    map[peer.ID]int{},
		stats:      Stats{Refusals: map[string]int64{}},
		base:       base, cancel: cancel,
	}
}

// Close stops serving, ends open streams and the sweeper, and waits.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.h.RemoveStreamHandler(protocol.MailboxProtocol)
	s.cancel()
	s.wg.Wait()
	return nil
}

// Stats returns a copy of the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Refusals = make(map[string]int64, len(s.stats.Refusals))
	for k, v := range s.stats.Refusals {
		st.Refusals[k] = v
	}
	return st
}

func (s *Service) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		if n, err := s.store.Sweep(s.base, s.opts.Now()); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrStoreClosed) {
			s.log.Warn("mailbox: sweep failed", "err", err)
		} else if n > 0 {
			s.log.Debug("mailbox: swept", "mailboxes", n)
		}
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
	}
}

// begin admits a stream of p under the stream caps.
func (s *Service) begin(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.nStreams >= s.opts.MaxStreams || s.streams[p] >= s.opts.MaxStreamsPerPeer {
		return false
	}
	s.wg.Add(1)
	s.nStreams++
	s.streams[p]++
	return true
}

func (s *Service) end(p peer.ID) {
	s.mu.Lock()
	s.nStreams--
	if s.streams[p]--; s.streams[p] <= 0 {
		delete(s.streams, p)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Service) refused(code string) {
	s.mu.Lock()
	s.stats.Refusals[code]++
	s.mu.Unlock()
}

func (s *Service) penalize(p peer.ID, reason string) {
	s.log.Debug("mailbox: peer misbehaved", "peer", p.String(), "reason", reason)
	if s.opts.Penalize != nil {
		s.opts.Penalize(p, s.opts.Penalty, reason)
	}
}

// conn is one served stream.
type conn struct {
	s    *Service
	st   network.Stream
	p    peer.ID
	addr string
	bw   *bufio.Writer
	w    *protocol.MailboxWriter
}

func (c *conn) write(f protocol.MailboxFrame, flush bool) error {
	_ = c.st.SetWriteDeadline(time.Now().Add(c.s.opts.IdleTimeout))
	if _, err := c.w.Write(f); err != nil {
		return err
	}
	if flush {
		return c.bw.Flush()
	}
	return nil
}

func (c *conn) result(r protocol.MailboxResult) error {
	if r.Code != protocol.MailboxOK {
		c.s.refused(r.Code)
	}
	return c.write(protocol.MailboxFrame{Kind: protocol.MailboxKindResult, Result: &r}, true)
}

func (s *Service) handle(st network.Stream) {
	p := st.Conn().RemotePeer()
	c := &conn{s: s, st: st, p: p, addr: addrKey(st.Conn().RemoteMultiaddr())}
	c.bw = bufio.NewWriterSize(st, 64<<10)
	c.w = protocol.NewMailboxWriter(c.bw)
	if !s.begin(p) {
		if c.result(protocol.MailboxResult{Code: protocol.MailboxBusy, RetryAfter: 1}) == nil {
			_ = st.Close()
		} else {
			_ = st.Reset()
		}
		return
	}
	defer s.end(p)
	// Closing the service ends the stream.
	stop := context.AfterFunc(s.base, func() { _ = st.Reset() })
	defer stop()

	r := protocol.NewMailboxReader(bufio.NewReaderSize(st, 64<<10))
	for {
		_ = st.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		f, _, err := r.Read()
		switch {
		case errors.Is(err, io.EOF):
			_ = st.Close()
			return
		case errors.Is(err, protocol.ErrBadMailboxFrame):
			s.penalize(p, err.Error())
			_ = c.result(protocol.MailboxResult{Code: protocol.MailboxMalformed})
			_ = st.Close()
			return
		case err != nil:
			_ = st.Reset()
			return
		}
		s.mu.Lock()
		ok, wait := s.rate.allow(p, s.opts.Now())
		s.mu.Unlock()
		if !ok {
			_ = c.result(protocol.MailboxResult{Code: protocol.MailboxRateLimited, RetryAfter: uint64(wait/time.Second) + 1})
			_ = st.Close()
			return
		}
		switch f.Kind {
		case protocol.MailboxKindDeposit:
			err = c.result(s.deposit(p, c.addr, f.Deposit))
		case protocol.MailboxKindAck:
			err = c.result(s.ack(p, f.Ack))
		case protocol.MailboxKindDrain:
			err = s.drain(p, c.addr, f.Drain, func(f protocol.MailboxFrame) error { return c.write(f, true) })
		default:
			s.penalize(p, fmt.Sprintf("client sent frame kind %d", f.Kind))
			_ = c.result(protocol.MailboxResult{Code: protocol.MailboxMalformed})
			_ = st.Close()
			return
		}
		if err != nil {
			s.log.Debug("mailbox: stream failed", "peer", p.String(), "err", err)
			_ = st.Reset()
			return
		}
	}
}

// fresh checks a request's time against the relay's clock.
func (s *Service) fresh(ms int64, now time.Time) bool {
	d := now.Sub(time.UnixMilli(ms))
	return d <= s.opts.ClockSkew && d >= -s.opts.ClockSkew
}

func (s *Service) deposit(p peer.ID, addr string, d *protocol.MailboxDeposit) protocol.MailboxResult {
	now := s.opts.Now()
	s.mu.Lock()
	s.stats.Deposits++
	s.mu.Unlock()
	res := s.depositResult(p, addr, d, now)
	s.mu.Lock()
	if res.Code == protocol.MailboxOK {
		s.stats.Stored += int64(res.Stored)
		s.stats.Duplicates += int64(res.Duplicate)
	} else {
		s.stats.DepositsRefused++
	}
	s.mu.Unlock()
	return res
}

func (s *Service) depositResult(p peer.ID, addr string, d *protocol.MailboxDeposit, now time.Time) protocol.MailboxResult {
	period := Period(d.Period)
	switch {
	case period < PeriodOf(now.Add(-s.opts.ClockSkew)):
		return protocol.MailboxResult{Code: protocol.MailboxExpired}
	case period > PeriodOf(now.Add(s.opts.ClockSkew)), !s.fresh(d.Time, now):
		return protocol.MailboxResult{Code: protocol.MailboxBadTime}
	}
	digests, err := VerifyDeposit(s.relay, d)
	if err != nil {
		s.penalize(p, err.Error())
		return protocol.MailboxResult{Code: protocol.MailboxBadCapability}
	}
	var id ID
	var drainPub [32]byte
	copy(id[:], d.ID)
	copy(drainPub[:], d.DrainKey)
	admit := func(created bool, bytes int64) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.peerQ.check(p, now, created, bytes); err != nil {
			return err
		}
		if err := s.addrQ.check(addr, now, created, bytes); err != nil {
			return err
		}
		s.peerQ.charge(p, now, created, bytes)
		s.addrQ.charge(addr, now, created, bytes)
		return nil
	}
	r, err := s.store.Deposit(id, drainPub, period.End().Add(s.store.Limits().Retention), digests, d.Envelopes, now, admit)
	switch {
	case err == nil:
		return protocol.MailboxResult{Code: protocol.MailboxOK, Stored: uint64(r.Stored), Duplicate: uint64(r.Duplicate)}
	case errors.Is(err, ErrMailboxFull):
		return protocol.MailboxResult{Code: protocol.MailboxFull}
	case errors.Is(err, ErrRelayFull):
		return protocol.MailboxResult{Code: protocol.MailboxRelayFull}
	case errors.Is(err, ErrDepositorLimit):
		return protocol.MailboxResult{Code: protocol.MailboxDepositorLimit, RetryAfter: uint64(s.opts.DepositWindow / time.Second)}
	case errors.Is(err, ErrExpired):
		return protocol.MailboxResult{Code: protocol.MailboxExpired}
	case errors.Is(err, ErrBadCapability):
		return protocol.MailboxResult{Code: protocol.MailboxBadCapability}
	default:
		s.log.Warn("mailbox: deposit failed", "err", err)
		return protocol.MailboxResult{Code: protocol.MailboxUnavailable}
	}
}

func (s *Service) ack(p peer.ID, a *protocol.MailboxAck) protocol.MailboxResult {
	now := s.opts.Now()
	if !s.fresh(a.Time, now) {
		return protocol.MailboxResult{Code: protocol.MailboxBadTime}
	}
	var id ID
	copy(id[:], a.ID)
	pub, ok, err := s.store.DrainKey(id, now)
	if err != nil {
		s.log.Warn("mailbox: ack failed", "err", err)
		return protocol.MailboxResult{Code: protocol.MailboxUnavailable}
	}
	if !ok {
		// Unknown or expired: refused as a bad signature is, so an ack
		// does not tell whether an id exists.
		return protocol.MailboxResult{Code: protocol.MailboxBadCapability}
	}
	digests, err := VerifyAck(s.relay, pub[:], a)
	if err != nil {
		s.penalize(p, err.Error())
		return protocol.MailboxResult{Code: protocol.MailboxBadCapability}
	}
	n, err := s.store.Ack(id, digests, now)
	if err != nil {
		s.log.Warn("mailbox: ack failed", "err", err)
		return protocol.MailboxResult{Code: protocol.MailboxUnavailable}
	}
	s.mu.Lock()
	s.stats.Acked += int64(n)
	s.mu.Unlock()
	return protocol.MailboxResult{Code: protocol.MailboxOK, Acked: uint64(n)}
}

// errThrottled stops a drain at the address's drain budget.
var errThrottled = errors.New("mailbox: drain budget spent")

// pageBytes is the target size of an Items frame: one more envelope of the
// largest size still fits under protocol.MaxMailboxFrame.
const pageBytes = protocol.MaxMailboxFrame - protocol.MaxMailboxEnvelope - 4096

// drain answers a Drain through emit: Items frames of at most pageBytes,
// then End. A mailbox that is unknown or expired, or whose request is
// badly signed or stale, is listed in End.Refused, all alike; End's code is
// bad-time only when every request was stale (the client's clock is off).
func (s *Service) drain(p peer.ID, addr string, d *protocol.MailboxDrain, emit func(protocol.MailboxFrame) error) error {
	now := s.opts.Now()
	limit := s.opts.DrainItems
	if d.Limit > 0 && d.Limit < uint64(limit) {
		limit = int(d.Limit)
	}
	s.mu.Lock()
	budget := s.drainBytes.available(addr, now)
	s.mu.Unlock()
	var end protocol.MailboxEnd
	sent, stale := 0, 0
	var spent float64
	throttled := false
	for i, req := range d.Mailboxes {
		var id ID
		copy(id[:], req.ID)
		if !s.fresh(req.Time, now) {
			end.Refused = append(end.Refused, uint64(i))
			stale++
			continue
		}
		pub, ok, err := s.store.DrainKey(id, now)
		if err != nil {
			s.log.Warn("mailbox: drain failed", "err", err)
			end.Code = protocol.MailboxUnavailable
			break
		}
		if !ok {
			// Unknown or expired: refused exactly as a bad signature
			// is, so a drain does not tell whether an id exists.
			end.Refused = append(end.Refused, uint64(i))
			continue
		}
		if err := VerifyDrain(s.relay, pub[:], req); err != nil {
			s.penalize(p, err.Error())
			end.Refused = append(end.Refused, uint64(i))
			continue
		}
		page := protocol.MailboxItems{ID: req.ID}
		size := 0
		flush := func() error {
			if len(page.Items) == 0 {
				return nil
			}
			err := emit(protocol.MailboxFrame{Kind: protocol.MailboxKindItems, Items: &page})
			page.Items, size = page.Items[:0], 0
			return err
		}
		n, more, err := s.store.Drain(s.base, id, req.After, limit-sent, now, func(seq uint64, env []byte) error {
			if spent+float64(len(env)) > budget {
				return errThrottled
			}
			spent += float64(len(env))
			if len(page.Items) == protocol.MaxItemsPerFrame || size+len(env)+16 > pageBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			page.Items = append(page.Items, protocol.MailboxItem{Seq: seq, Envelope: append([]byte(nil), env...)})
			size += len(env) + 16
			return nil
		})
		if errors.Is(err, errThrottled) {
			err, throttled, more = nil, true, true
		}
		if err == nil {
			err = flush()
		}
		sent += n
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if more || sent >= limit {
			end.More = more || i < len(d.Mailboxes)-1
			break
		}
	}
	s.mu.Lock()
	s.stats.Drained += int64(sent)
	s.drainBytes.spend(addr, spent, now)
	s.mu.Unlock()
	end.Sent = uint64(sent)
	if end.Code == "" {
		end.Code = protocol.MailboxOK
		switch {
		case stale == len(d.Mailboxes):
			end.Code = protocol.MailboxBadTime
		case throttled && sent == 0:
			// Nothing fits the address's drain budget now: say when
			// one largest envelope will.
			end.Code = protocol.MailboxRateLimited
			end.RetryAfter = uint64(float64(protocol.MaxMailboxEnvelope)/s.opts.DrainRate) + 1
		}
	}
	if end.Code != protocol.MailboxOK {
		s.refused(end.Code)
	}
	return emit(protocol.MailboxFrame{Kind: protocol.MailboxKindEnd, End: &end})
}
