// Package signals carries the ephemeral signals of a node: typing
// indicators and presence (online / last seen). They travel over a direct
// libp2p stream to the peers of conversation members or contacts, are
// never stored in a DAG, are rate-limited at both ends and are dropped when
// nobody listens.
//
// Wire format: one CBOR wire message per stream, at most maxWire bytes. A
// typing signal names the conversation by its sync id and is sealed with
// AES-256-GCM under a key derived from the conversation secret, so only
// members read it; the receiver also checks that the sending peer is the
// peer of a current member. Presence is not bound to a conversation: it is
// sent only to contacts' peers, over the authenticated, encrypted libp2p
// connection, and only while the user's preference lets it out.
package signals

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
	"github.com/glitr-chat/glitr/webui"
)

// Protocol carries typing and presence signals.
const Protocol = "/glitr/signal/1.0.0"

const (
	maxWire = 1 << 10
	// typingEvery throttles outgoing typing signals per conversation (the
	// UI shows "typing" for a few seconds after the last one).
	typingEvery = 3 * time.Second
	// A contact is online while its last heartbeat is younger than
	// PresenceTTL.
	PresenceTTL = 75 * time.Second
	// heartbeatEvery is the heartbeat of an online node.
	heartbeatEvery = 30 * time.Second
	// A peer may send at most burst signals, refilled at rate per second;
	// the rest is dropped.
	burst = 10
	rate  = 2.0
)

// Contact is a contact's account and the peer of its device.
type Contact struct {
	Account keyring.AccountID
	Peer    peer.ID
}

// Room is a conversation as the service sees it.
type Room struct {
	ID     string // as the API names it (hex)
	SyncID []byte
	// Key seals typing signals (TypingKey of the conversation secret).
	Key []byte
	// IsMember reports whether an account is a current member.
	IsMember func(keyring.AccountID) bool
}

// Directory is what the service asks of its owner (the chat service).
type Directory interface {
	// Self is this node's account.
	Self() keyring.AccountID
	// ContactOf is the contact whose device is p.
	ContactOf(p peer.ID) (keyring.AccountID, bool)
	// Contacts lists every contact with the peer of its device.
	Contacts() []Contact
	// Blocked reports whether this account blocked a: nothing is sent to
	// it and nothing taken from it.
	Blocked(a keyring.AccountID) bool
	// ShowPresence reports whether the user lets presence out.
	ShowPresence(ctx context.Context) bool
	// Room finds a conversation by its sync id.
	Room(syncID []byte) (Room, bool)
	// Now is the node's clock.
	Now() time.Time
}

// TypingKeyLabel is the label under which the owner derives a
// conversation's typing key (Room.Key) from its root secret.
const TypingKeyLabel = "signal/typing-key"

type wire struct {
	Kind  string `cbor:"k"`           // "typing" or "presence"
	Sync  []byte `cbor:"s,omitempty"` // conversation sync id (typing)
	Nonce []byte `cbor:"n,omitempty"`
	Box   []byte `cbor:"b,omitempty"` // sealed typingBody
}

type typingBody struct {
	Account []byte `cbor:"a"`
	Time    int64  `cbor:"t"`
}

var (
	enc, _          = cbor.CanonicalEncOptions().EncMode()
	dec             = protocol.SmallDec
	presenceWire, _ = enc.Marshal(wire{Kind: "presence"})
)

// Service is a node's signal service. New makes one; Start runs it until
// Close.
type Service struct {
	h   host.Host
	dir Directory

	ctx    context.Context
	cancel context.CancelFunc
	tasks  tasks.Group
	notify *network.NotifyBundle

	mu         sync.Mutex // guards everything below
	subs       map[chan webui.Signal]struct{}
	lastTyping map[string]time.Time // by room: last typing signal sent
	seen       map[keyring.AccountID]time.Time
	// gone marks contacts reported offline since their last heartbeat
	// (their connection closed, or the heartbeat lapsed).
	gone    map[keyring.AccountID]bool
	buckets map[peer.ID]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New makes the signal service of h.
func New(h host.Host, dir Directory) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		h: h, dir: dir, ctx: ctx, cancel: cancel,
		subs:       map[chan webui.Signal]struct{}{},
		lastTyping: map[string]time.Time{},
		seen:       map[keyring.AccountID]time.Time{},
		gone:       map[keyring.AccountID]bool{},
		buckets:    map[peer.ID]*bucket{},
	}
}

// Start registers the protocol and runs the heartbeat. A contact whose last
// connection closes is offline at once, not PresenceTTL later; one that
// connects hears of this node at once, not at the next heartbeat.
func (s *Service) Start() {
	s.h.SetStreamHandler(Protocol, s.handle)
	s.notify = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, cn network.Conn) {
			p := cn.RemotePeer()
			s.spawn(func() { s.greet(s.ctx, p) })
		},
		DisconnectedF: func(nw network.Network, cn network.Conn) {
			p := cn.RemotePeer()
			s.spawn(func() {
				if nw.Connectedness(p) != network.Connected {
					s.lost(p)
				}
			})
		},
	}
	s.h.Network().Notify(s.notify)
	s.spawn(func() { s.heartbeat(s.ctx) })
}

// Close stops the service and waits for its goroutines.
func (s *Service) Close() {
	if s.notify != nil {
		s.h.Network().StopNotify(s.notify)
	}
	s.h.RemoveStreamHandler(Protocol)
	s.cancel()
	s.tasks.Close()
}

func (s *Service) spawn(f func()) bool { return s.tasks.Go(f) }

// greet sends a presence signal to a contact that just connected (when
// presence is shown and the contact is not blocked).
func (s *Service) greet(ctx context.Context, p peer.ID) {
	a, ok := s.dir.ContactOf(p)
	if !ok || s.dir.Blocked(a) || !s.dir.ShowPresence(ctx) {
		return
	}
	s.send(ctx, p, presenceWire)
}

// Announce sends presence to every connected contact now (the user just
// let presence out): they see this node online at once, not at the next
// heartbeat.
func (s *Service) Announce() {
	s.spawn(func() { s.announce(s.ctx) })
}

func (s *Service) announce(ctx context.Context) {
	if !s.dir.ShowPresence(ctx) {
		return
	}
	for _, c := range s.dir.Contacts() {
		if s.h.Network().Connectedness(c.Peer) == network.Connected && !s.dir.Blocked(c.Account) {
			s.send(ctx, c.Peer, presenceWire)
		}
	}
}

// lost reports a contact offline once its peer has no connection left.
func (s *Service) lost(p peer.ID) {
	if a, ok := s.dir.ContactOf(p); ok {
		s.markGone(a)
	}
}

// markGone reports a contact offline, once, if it was online.
func (s *Service) markGone(a keyring.AccountID) {
	s.mu.Lock()
	t, seen := s.seen[a]
	if !seen || s.gone[a] {
		s.mu.Unlock()
		return
	}
	s.gone[a] = true
	s.mu.Unlock()
	ts := t
	s.emit(webui.Signal{Kind: "presence", Account: hex.EncodeToString(a[:]), Online: false, LastSeen: &ts})
}

// sweep reports offline the contacts whose heartbeat lapsed.
func (s *Service) sweep(now time.Time) {
	s.mu.Lock()
	var lapsed []keyring.AccountID
	for a, t := range s.seen {
		if !s.gone[a] && now.Sub(t) >= PresenceTTL {
			lapsed = append(lapsed, a)
		}
	}
	s.mu.Unlock()
	for _, a := range lapsed {
		s.markGone(a)
	}
}

// Subscribe returns the signals that arrive until ctx ends (a slow reader
// misses some: they are ephemeral).
func (s *Service) Subscribe(ctx context.Context) <-chan webui.Signal {
	ch := make(chan webui.Signal, 32)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (s *Service) emit(sig webui.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- sig:
		default: // ephemeral: a slow reader misses it
		}
	}
}

func seal(key, plain []byte) (nonce, box []byte, err error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, aead.Seal(nil, nonce, plain, []byte(Protocol)), nil
}

func unseal(key, nonce, box []byte) ([]byte, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	if len(nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("nonce of %d bytes", len(nonce))
	}
	return aead.Open(nil, nonce, box, []byte(Protocol))
}

// Typing sends a typing signal for room to peers (the connected members'
// peers), at most once per typingEvery; blocked contacts get none.
func (s *Service) Typing(ctx context.Context, room Room, peers []peer.ID) error {
	now := s.dir.Now()
	s.mu.Lock()
	if now.Sub(s.lastTyping[room.ID]) < typingEvery {
		s.mu.Unlock()
		return nil
	}
	s.lastTyping[room.ID] = now
	s.mu.Unlock()
	self := s.dir.Self()
	body, err := enc.Marshal(typingBody{Account: self[:], Time: now.UnixMilli()})
	if err != nil {
		return err
	}
	nonce, box, err := seal(room.Key, body)
	if err != nil {
		return err
	}
	w, err := enc.Marshal(wire{Kind: "typing", Sync: room.SyncID, Nonce: nonce, Box: box})
	if err != nil {
		return err
	}
	for _, p := range peers {
		if a, ok := s.dir.ContactOf(p); ok && s.dir.Blocked(a) {
			continue
		}
		s.spawn(func() { s.send(s.ctx, p, w) })
	}
	return nil
}

func (s *Service) send(ctx context.Context, p peer.ID, w []byte) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.h.NewStream(network.WithAllowLimitedConn(network.WithNoDial(ctx, "signal"), "signal"), p, Protocol)
	if err != nil {
		return // not connected: signals are not worth a dial
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write(w); err != nil {
		st.Reset()
		return
	}
	_ = st.Close()
}

// allow is the per-peer token bucket for incoming signals.
func (s *Service) allow(p peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[p]
	if !ok {
		if len(s.buckets) > 4096 {
			clear(s.buckets)
		}
		b = &bucket{tokens: burst, at: now}
		s.buckets[p] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (s *Service) handle(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	now := s.dir.Now()
	if !s.allow(from, now) {
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(io.LimitReader(st, maxWire+1))
	if err != nil || len(b) > maxWire {
		st.Reset()
		return
	}
	var w wire
	if err := dec.Unmarshal(b, &w); err != nil {
		return
	}
	acct, ok := s.dir.ContactOf(from)
	if !ok || s.dir.Blocked(acct) {
		return // signals only from contacts, and none from a blocked one
	}
	switch w.Kind {
	case "presence":
		s.mu.Lock()
		s.seen[acct] = now
		delete(s.gone, acct)
		s.mu.Unlock()
		ts := now
		s.emit(webui.Signal{Kind: "presence", Account: hex.EncodeToString(acct[:]), Online: true, LastSeen: &ts})
	case "typing":
		room, ok := s.dir.Room(w.Sync)
		if !ok {
			return
		}
		plain, err := unseal(room.Key, w.Nonce, w.Box)
		if err != nil {
			return
		}
		var body typingBody
		if err := dec.Unmarshal(plain, &body); err != nil || len(body.Account) != len(acct) || [32]byte(body.Account) != [32]byte(acct) {
			return
		}
		if !room.IsMember(acct) {
			return
		}
		s.emit(webui.Signal{Kind: "typing", Conversation: room.ID, Account: hex.EncodeToString(acct[:])})
	}
}

// heartbeat announces presence to connected contacts while presence is
// shown; with it off, nothing at all is sent.
func (s *Service) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		s.announce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweep(s.dir.Now())
	}
}

// Presence reports contacts' online state.
func (s *Service) Presence() map[string]webui.Presence {
	now := s.dir.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]webui.Presence{}
	for a, t := range s.seen {
		ts := t
		out[hex.EncodeToString(a[:])] = webui.Presence{Online: !s.gone[a] && now.Sub(t) < PresenceTTL, LastSeen: &ts}
	}
	return out
}
