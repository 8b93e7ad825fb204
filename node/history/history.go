// Package history hands a conversation's stored blocks to a device that
// cannot read them from the DAG: a member added to an existing
// conversation, and a device that missed an epoch (docs/sync.md,
// "History").
//
// The newcomer holds no key for the blocks written before it joined (epoch
// secrets are wiped once installed, for forward secrecy), yet a replica
// must hold every ancestor of what it commits. So the admin who adds it,
// right after the welcome, streams the conversation's blocks as stored:
// each envelope with its inner block (HistoryProtocol). The newcomer
// accepts this stream only from the device that welcomed it, or from one it
// asked, or from another device of its account; it checks every inner
// block's author signature (the sender cannot forge what others wrote) and
// hands them, in order, to the conversation service, which commits and
// applies them. A block sealed under an epoch this device never got (a
// message written concurrently with the rotation that added it) can only
// be read through a device that opened it: RequestProtocol asks one.
//
// The conversation service is reached only through the Store interface
// this package defines.
package history

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/glitr-chat/glitr/node/request"
)

// Protocols of this service.
const (
	// Protocol carries a conversation's history to a device.
	Protocol = "/glitr/history/1.0.0"
	// RequestProtocol asks a device that holds a conversation's history
	// to stream it. Another device of this account is asked first, then
	// the member who welcomed this device, then any connected member; each
	// answers only a current member.
	RequestProtocol = "/glitr/history-request/1.0.0"
)

const (
	// requestEvery spaces a device's history requests per conversation;
	// while one is answered (up to answerWait) no other is made.
	requestEvery = 3 * time.Second
	// answerWait is how long a history stream is accepted from a member
	// this device asked for it.
	answerWait = 2 * time.Minute
	// maxConversations bounds the per-conversation bookkeeping.
	maxConversations = 1 << 16
)

// ErrRefused: a history stream from a peer this device neither was
// welcomed by nor asked.
var ErrRefused = errors.New("history refused")

// Store is what this service needs from the conversation service. It is
// defined here, by its consumer; the node's chat service satisfies it.
// Conversations are named by their 16-byte ids.
type Store interface {
	// Holds reports whether conv is a conversation (or the account DAG)
	// held here.
	Holds(conv []byte) bool
	// Blocks streams conv's stored blocks, oldest first.
	Blocks(ctx context.Context, conv []byte) iter.Seq2[dag.Block, error]
	// Ingest commits and applies blocks whose signatures checked out, in
	// order; an error wrapping protocol.ErrBadPeer blames from.
	Ingest(ctx context.Context, conv []byte, from peer.ID, blocks []dag.Block) error
	// OwnDevice reports whether p is another device of this account.
	OwnDevice(p peer.ID) bool
	// Member reports whether p is the peer of a contact that is a current
	// member of conv.
	Member(conv []byte, p peer.ID) bool
	// Peers lists conv's members' peers this device knows.
	Peers(conv []byte) []peer.ID
	// OwnDevices lists the peers of this account's other devices.
	OwnDevices() []peer.ID
}

// Options are the parts of the service a caller may choose.
type Options struct {
	// Requests is the per-peer budget of unsolicited requests (nil: a
	// budget of its own).
	Requests *request.Limiter
	// Penalize reports a peer that sent a bad or endless history.
	Penalize func(p peer.ID, score float64, why string)
	Logger   *slog.Logger
}

// asking is what this device asked about one conversation's history.
type asking struct {
	lastRequest time.Time
	// peer is the one asked and not done streaming, since when: its
	// stream is accepted for answerWait.
	peer  peer.ID
	since time.Time
	// welcomer is the peer whose welcome created the conversation here:
	// the only one whose unasked history is taken.
	welcomer peer.ID
}

// Service is the history transfer of a personal node.
type Service struct {
	host     host.Host
	store    Store
	requests *request.Limiter
	penalize func(peer.ID, float64, string)
	log      *slog.Logger

	mu    sync.Mutex
	convs map[string]*asking // by conversation id

	ctx    context.Context
	cancel context.CancelFunc
	wg     tasks.Group
}

// New returns the service; Start registers its stream handlers.
func New(h host.Host, store Store, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Requests == nil {
		opts.Requests = request.NewLimiter(opts.Penalize)
	}
	if opts.Penalize == nil {
		opts.Penalize = func(peer.ID, float64, string) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		host: h, store: store, requests: opts.Requests, penalize: opts.Penalize,
		log: opts.Logger.With("component", "history"), convs: map[string]*asking{}, ctx: ctx, cancel: cancel,
	}
}

// Start answers history streams and requests.
func (s *Service) Start() {
	s.host.SetStreamHandler(Protocol, s.handleHistory)
	s.host.SetStreamHandler(RequestProtocol, s.handleRequest)
}

// Close stops answering, ends the transfers under way and waits for them.
func (s *Service) Close() {
	s.host.RemoveStreamHandler(Protocol)
	s.host.RemoveStreamHandler(RequestProtocol)
	s.cancel()
	s.wg.Close()
}

// state returns conv's bookkeeping, creating it. s.mu is held.
func (s *Service) state(conv []byte) *asking {
	a, ok := s.convs[string(conv)]
	if !ok {
		if len(s.convs) >= maxConversations {
			clear(s.convs)
		}
		a = &asking{}
		s.convs[string(conv)] = a
	}
	return a
}

// Welcomed records that by's welcome created conv here: by's history
// stream is taken without asking.
func (s *Service) Welcomed(conv []byte, by peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state(conv).welcomer = by
}

// Request asks, in the background, a connected device that holds conv's
// history to stream it here, unless a request is being answered or was
// made less than requestEvery ago.
func (s *Service) Request(conv []byte) {
	s.wg.Go(func() { s.request(conv) })
}

func (s *Service) request(conv []byte) {
	s.mu.Lock()
	a := s.state(conv)
	answering := a.peer != "" && time.Since(a.since) < answerWait
	if answering || time.Since(a.lastRequest) < requestEvery {
		s.mu.Unlock()
		return
	}
	a.lastRequest = time.Now()
	s.mu.Unlock()
	for _, p := range s.sources(conv) {
		if s.host.Network().Connectedness(p) != network.Connected {
			continue
		}
		s.mu.Lock()
		a.peer, a.since = p, time.Now()
		s.mu.Unlock()
		if request.Ack(s.ctx, s.host, p, RequestProtocol, conv, 10*time.Second) == nil {
			return
		}
		s.answered(conv, p)
	}
}

// sources lists, in the order to ask them, the peers that may hold conv's
// history: this account's other devices, the member that welcomed this
// device, then the other members this device knows a peer of.
func (s *Service) sources(conv []byte) []peer.ID {
	out := s.store.OwnDevices()
	s.mu.Lock()
	welcomer := s.state(conv).welcomer
	s.mu.Unlock()
	if welcomer != "" && !slices.Contains(out, welcomer) {
		out = append(out, welcomer)
	}
	for _, p := range s.store.Peers(conv) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// answered ends the wait for p's history stream.
func (s *Service) answered(conv []byte, p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.convs[string(conv)]; a != nil && a.peer == p {
		a.peer = ""
	}
}

// accepts reports whether a history stream for conv is taken from p: the
// device that welcomed this one, the one asked (for answerWait), or another
// device of this account.
func (s *Service) accepts(conv []byte, p peer.ID) bool {
	s.mu.Lock()
	a := s.convs[string(conv)]
	ok := a != nil && (a.welcomer == p || (a.peer == p && time.Since(a.since) < answerWait))
	s.mu.Unlock()
	return ok || s.store.OwnDevice(p)
}

// received forgets the welcomer once a whole history is in.
func (s *Service) received(conv []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.convs[string(conv)]; a != nil {
		a.welcomer = ""
	}
}

// handleRequest streams a conversation's history to another device of
// this account, or to a contact that is a current member (an added member
// gets the history anyway; this hands over what it could not open).
func (s *Service) handleRequest(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	own := s.store.OwnDevice(from)
	if !own && !s.requests.Allow(from) {
		st.Reset()
		s.penalize(from, 5, "history requests over the rate limit")
		return
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	id := make([]byte, 17)
	n, _ := readFull(st, id)
	conv := id[:n]
	if n != 16 || !s.store.Holds(conv) || (!own && !s.store.Member(conv, from)) {
		st.Reset()
		return
	}
	_, _ = st.Write([]byte{1})
	s.wg.Go(func() {
		if err := s.Send(s.ctx, conv, from); err != nil && s.ctx.Err() == nil {
			s.log.Debug("history for another device", "err", err)
		}
	})
}
