// Package request carries the node's one-shot request streams: contact,
// link and rejoin requests, token-card and card swaps, welcomes and
// history requests. Each is one request and at most one reply on a fresh
// libp2p stream. The asking side writes, half-closes and reads a capped
// reply under a deadline (Exchange, Ack); the answering side reads under a
// per-peer rate limit, a deadline and a size cap (Limiter.Read) and writes
// its reply (Answer). Sync and history transfer have framed protocols of
// their own (node/catchup).
package request

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/time/rate"
)

// MaxSize caps an unsolicited request and a reply that carries a card.
const MaxSize = 48 << 10

// The per-peer budget of unsolicited requests, shared by every kind: a
// peer that sends more is refused and penalised.
const (
	perPeerRate  = 1.0 / 6 // per second: 10 a minute
	perPeerBurst = 5
	// maxPeers bounds the limiter table; past it the table starts over
	// (a flood of fresh peer ids costs memory, not correctness).
	maxPeers = 4096
)

// ErrRefused: the peer answered a request with a refusal.
var ErrRefused = errors.New("refused")

// Errors of Exchange once the request went out: the peer closed or reset
// the stream without a reply (ErrNoAnswer), or replied past the cap.
var (
	ErrNoAnswer = errors.New("no answer")
	ErrTooLong  = errors.New("reply too long")
)

// Limiter reads unsolicited requests under one per-peer budget.
type Limiter struct {
	penalize func(p peer.ID, score float64, why string)

	mu     sync.Mutex
	limits map[peer.ID]*rate.Limiter
}

// NewLimiter returns a limiter that reports peers over the budget to
// penalize (nil: no one is told).
func NewLimiter(penalize func(p peer.ID, score float64, why string)) *Limiter {
	if penalize == nil {
		penalize = func(peer.ID, float64, string) {}
	}
	return &Limiter{penalize: penalize, limits: map[peer.ID]*rate.Limiter{}}
}

// Allow spends one request of p's budget.
func (l *Limiter) Allow(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.limits[p]
	if !ok {
		if len(l.limits) >= maxPeers {
			clear(l.limits)
		}
		lim = rate.NewLimiter(rate.Limit(perPeerRate), perPeerBurst)
		l.limits[p] = lim
	}
	return lim.Allow()
}

// Read reads the one request of an unsolicited stream: the per-peer
// budget (a peer over it is penalised), a deadline and MaxSize. On false
// the stream was reset and the caller drops it.
func (l *Limiter) Read(s network.Stream, what string, timeout time.Duration) ([]byte, bool) {
	from := s.Conn().RemotePeer()
	if !l.Allow(from) {
		s.Reset()
		l.penalize(from, 5, what+" requests over the rate limit")
		return nil, false
	}
	_ = s.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(s), MaxSize+1))
	if err != nil || len(b) > MaxSize {
		s.Reset()
		return nil, false
	}
	return b, true
}

// enc is canonical CBOR, the encoding of every reply.
var enc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// Answer writes the one reply of a request stream (canonical CBOR) and
// closes it; it reports whether the reply went out (else the stream was
// reset).
func Answer(s network.Stream, reply any) bool {
	out, err := enc.Marshal(reply)
	if err == nil {
		_, err = s.Write(out)
	}
	if err == nil {
		err = s.Close()
	}
	if err != nil {
		s.Reset()
		return false
	}
	return true
}

// Exchange opens a stream to p for proto (over a relayed connection too),
// writes req, half-closes and reads a reply of at most maxReply bytes,
// all within timeout. A stream that cannot be opened or written is
// returned as is; after that, no reply is ErrNoAnswer and a longer one
// ErrTooLong.
func Exchange(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, req []byte, maxReply int, timeout time.Duration) ([]byte, error) {
	s, err := open(ctx, h, p, proto, req, timeout)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := io.ReadAll(io.LimitReader(s, int64(maxReply)+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w: %w", proto, ErrNoAnswer, err)
	case len(b) == 0:
		return nil, fmt.Errorf("%s: %w", proto, ErrNoAnswer)
	case len(b) > maxReply:
		return nil, fmt.Errorf("%s: %w: over %d bytes", proto, ErrTooLong, maxReply)
	}
	return b, nil
}

// Ack sends req to p for proto and waits for the one-byte answer: 1 is
// accepted, anything else ErrRefused.
func Ack(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, req []byte, timeout time.Duration) error {
	s, err := open(ctx, h, p, proto, req, timeout)
	if err != nil {
		return err
	}
	defer s.Close()
	ack := make([]byte, 1)
	if _, err := io.ReadFull(s, ack); err != nil {
		return fmt.Errorf("no acknowledgement: %w", err)
	}
	if ack[0] != 1 {
		return fmt.Errorf("%s: %w", proto, ErrRefused)
	}
	return nil
}

// open starts a request: a stream whose deadline is the request's, req
// written and the write side closed. The caller closes the stream.
func open(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, req []byte, timeout time.Duration) (network.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := h.NewStream(network.WithAllowLimitedConn(ctx, string(proto)), p, proto)
	if err != nil {
		return nil, err
	}
	_ = s.SetDeadline(time.Now().Add(timeout))
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, err
	}
	return s, nil
}
