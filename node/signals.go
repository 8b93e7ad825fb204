package node

// Ephemeral signals: typing indicators and presence (online / last seen).
// They travel over a direct libp2p stream to the peers of conversation
// members or contacts, are never stored in a DAG, are rate-limited at both
// ends and are dropped when nobody listens.
//
// Wire format: one CBOR signalWire per stream, at most maxSignalWire bytes.
// A typing signal names the conversation by its sync id and is sealed with
// AES-256-GCM under a key derived from the conversation secret, so only
// members read it; the receiver also checks that the sending peer is the
// peer of a current member. Presence is not bound to a conversation: it is
// sent only to contacts' peers, over the authenticated, encrypted libp2p
// connection, and only while the ShowPresence preference is on.

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

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/webui"
)

// SignalProtocol carries typing and presence signals.
const SignalProtocol = "/glitr/signal/1.0.0"

const (
	maxSignalWire = 1 << 10
	// typingEvery throttles outgoing typing signals per conversation (the
	// UI shows "typing" for a few seconds after the last one).
	typingEvery = 3 * time.Second
	// A contact is online while its last heartbeat is younger than
	// presenceTTL.
	presenceTTL = 75 * time.Second
	// A peer may send at most signalBurst signals, refilled at
	// signalRate per second; the rest is dropped.
	signalBurst = 10
	signalRate  = 2.0
)

// presenceEvery is the heartbeat of an online node (a variable so tests
// can shorten it).
var presenceEvery = 30 * time.Second

type signalWire struct {
	Kind  string `cbor:"k"`           // "typing" or "presence"
	Sync  []byte `cbor:"s,omitempty"` // conversation sync id (typing)
	Nonce []byte `cbor:"n,omitempty"`
	Box   []byte `cbor:"b,omitempty"` // sealed typingBody
}

type typingBody struct {
	Account []byte `cbor:"a"`
	Time    int64  `cbor:"t"`
}

// signals is the per-node signal service. The node starts it lazily, on
// the first use by the API (the UI is what shows signals).
type signals struct {
	n *Node
	c *Chat

	mu         sync.Mutex
	subs       map[chan webui.Signal]struct{}
	lastTyping map[string]time.Time // by conversation: last typing signal sent
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

// signals returns the chat service's signal service (startSignals made it
// when the chat service started).
func (c *Chat) signals() *signals { return c.sig }

// startSignals creates the signal service and registers its protocol; the
// heartbeat (presence) runs until the chat service closes.
func (c *Chat) startSignals() {
	s := &signals{
		n: c.n, c: c,
		subs:       map[chan webui.Signal]struct{}{},
		lastTyping: map[string]time.Time{},
		seen:       map[keyring.AccountID]time.Time{},
		gone:       map[keyring.AccountID]bool{},
		buckets:    map[peer.ID]*bucket{},
	}
	c.sig = s
	c.n.Host.SetStreamHandler(SignalProtocol, s.handle)
	// A contact whose last connection closes is offline at once, not
	// presenceTTL later; one that connects hears of us at once, not at
	// our next heartbeat.
	notify := &network.NotifyBundle{
		ConnectedF: func(_ network.Network, cn network.Conn) {
			p := cn.RemotePeer()
			c.wg.Go(func() { s.greet(c.ctx, p) })
		},
		DisconnectedF: func(nw network.Network, cn network.Conn) {
			p := cn.RemotePeer()
			c.wg.Go(func() {
				if nw.Connectedness(p) != network.Connected {
					s.lost(p)
				}
			})
		},
	}
	c.n.Host.Network().Notify(notify)
	c.wg.Go(func() {
		<-c.ctx.Done()
		c.n.Host.Network().StopNotify(notify)
	})
	c.wg.Go(func() { s.heartbeat(c.ctx) })
}

var presenceWire, _ = canonicalEnc.Marshal(signalWire{Kind: "presence"})

// greet sends a presence signal to a contact that just connected (when
// ShowPresence is on and the contact is not blocked).
func (s *signals) greet(ctx context.Context, p peer.ID) {
	a, ok := s.contactOf(p)
	if !ok || s.c.isBlocked(a) {
		return
	}
	if prefs, err := s.n.Preferences(ctx); err != nil || !prefs.ShowPresence {
		return
	}
	s.send(ctx, p, presenceWire)
}

// lost reports a contact offline once its peer has no connection left.
func (s *signals) lost(p peer.ID) {
	a, ok := s.contactOf(p)
	if !ok {
		return
	}
	s.markGone(a)
}

// markGone reports a contact offline, once, if it was online.
func (s *signals) markGone(a keyring.AccountID) {
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
func (s *signals) sweep(now time.Time) {
	s.mu.Lock()
	var lapsed []keyring.AccountID
	for a, t := range s.seen {
		if !s.gone[a] && now.Sub(t) >= presenceTTL {
			lapsed = append(lapsed, a)
		}
	}
	s.mu.Unlock()
	for _, a := range lapsed {
		s.markGone(a)
	}
}

func (s *signals) subscribe(ctx context.Context) <-chan webui.Signal {
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

func (s *signals) emit(sig webui.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- sig:
		default: // ephemeral: a slow reader misses it
		}
	}
}

func signalKey(conv *conversation) []byte { return deriveSecret(conv.root, "signal/typing-key", 32) }

func sealSignal(key, plain []byte) (nonce, box []byte, err error) {
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
	return nonce, aead.Seal(nil, nonce, plain, []byte(SignalProtocol)), nil
}

func unsealSignal(key, nonce, box []byte) ([]byte, error) {
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
	return aead.Open(nil, nonce, box, []byte(SignalProtocol))
}

// typing sends a typing signal to the conversation's connected members,
// at most once per typingEvery.
func (s *signals) typing(ctx context.Context, conv *conversation) error {
	now := s.c.now()
	s.mu.Lock()
	if now.Sub(s.lastTyping[conv.hexID]) < typingEvery {
		s.mu.Unlock()
		return nil
	}
	s.lastTyping[conv.hexID] = now
	s.mu.Unlock()
	self := s.c.id.AccountID()
	body, err := canonicalEnc.Marshal(typingBody{Account: self[:], Time: now.UnixMilli()})
	if err != nil {
		return err
	}
	nonce, box, err := sealSignal(signalKey(conv), body)
	if err != nil {
		return err
	}
	w, err := canonicalEnc.Marshal(signalWire{Kind: "typing", Sync: conv.syncID, Nonce: nonce, Box: box})
	if err != nil {
		return err
	}
	for _, p := range s.c.memberPeers(conv) {
		if a, ok := s.contactOf(p); ok && s.c.isBlocked(a) {
			continue
		}
		s.c.wg.Go(func() { s.send(s.c.ctx, p, w) })
	}
	return nil
}

func (s *signals) send(ctx context.Context, p peer.ID, w []byte) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.n.Host.NewStream(network.WithAllowLimitedConn(network.WithNoDial(ctx, "signal"), "signal"), p, SignalProtocol)
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
func (s *signals) allow(p peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[p]
	if !ok {
		if len(s.buckets) > 4096 {
			clear(s.buckets)
		}
		b = &bucket{tokens: signalBurst, at: now}
		s.buckets[p] = b
	}
	b.tokens = min(signalBurst, b.tokens+now.Sub(b.at).Seconds()*signalRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (s *signals) handle(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	now := s.c.now()
	if !s.allow(from, now) {
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(io.LimitReader(st, maxSignalWire+1))
	if err != nil || len(b) > maxSignalWire {
		st.Reset()
		return
	}
	var w signalWire
	if err := cardDec.Unmarshal(b, &w); err != nil {
		return
	}
	acct, ok := s.contactOf(from)
	if !ok || s.c.isBlocked(acct) {
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
		s.c.mu.RLock()
		conv := s.c.bySync[string(w.Sync)]
		s.c.mu.RUnlock()
		if conv == nil {
			return
		}
		plain, err := unsealSignal(signalKey(conv), w.Nonce, w.Box)
		if err != nil {
			return
		}
		var body typingBody
		if err := cardDec.Unmarshal(plain, &body); err != nil || len(body.Account) != len(acct) || [32]byte(body.Account) != [32]byte(acct) {
			return
		}
		conv.mu.Lock()
		member, _ := conv.state.IsMember(crdt.AccountID(acct))
		conv.mu.Unlock()
		if !member {
			return
		}
		s.emit(webui.Signal{Kind: "typing", Conversation: conv.hexID, Account: hex.EncodeToString(acct[:])})
	}
}

func (s *signals) contactOf(p peer.ID) (keyring.AccountID, bool) {
	s.c.mu.RLock()
	defer s.c.mu.RUnlock()
	for a, vc := range s.c.contacts {
		if vc.Peer.ID == p {
			return a, true
		}
	}
	return keyring.AccountID{}, false
}

// heartbeat announces presence to connected contacts while ShowPresence is
// on; with it off, nothing at all is sent.
func (s *signals) heartbeat(ctx context.Context) {
	w := presenceWire
	t := time.NewTicker(presenceEvery)
	defer t.Stop()
	for {
		if prefs, err := s.n.Preferences(ctx); err == nil && prefs.ShowPresence {
			s.c.mu.RLock()
			var peers []peer.ID
			var accts []keyring.AccountID
			for a, vc := range s.c.contacts {
				if s.n.Host.Network().Connectedness(vc.Peer.ID) == network.Connected {
					peers = append(peers, vc.Peer.ID)
					accts = append(accts, a)
				}
			}
			s.c.mu.RUnlock()
			for i, p := range peers {
				if !s.c.isBlocked(accts[i]) {
					s.send(ctx, p, w)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweep(s.c.now())
	}
}

// presence reports contacts' online state.
func (s *signals) presence() map[string]webui.Presence {
	now := s.c.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]webui.Presence{}
	for a, t := range s.seen {
		ts := t
		out[hex.EncodeToString(a[:])] = webui.Presence{Online: !s.gone[a] && now.Sub(t) < presenceTTL, LastSeen: &ts}
	}
	return out
}
