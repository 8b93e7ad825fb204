package signals

import (
	"context"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/webui"
)

// dir is a fake Directory.
type dir struct {
	mu       sync.Mutex
	self     keyring.AccountID
	contacts map[peer.ID]keyring.AccountID
	blocked  map[keyring.AccountID]bool
	presence bool
	rooms    map[string]Room
}

func (d *dir) Self() keyring.AccountID { return d.self }
func (d *dir) Now() time.Time          { return time.Now() }
func (d *dir) ContactOf(p peer.ID) (keyring.AccountID, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.contacts[p]
	return a, ok
}
func (d *dir) Contacts() []Contact {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Contact
	for p, a := range d.contacts {
		out = append(out, Contact{Account: a, Peer: p})
	}
	return out
}
func (d *dir) Blocked(a keyring.AccountID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blocked[a]
}
func (d *dir) ShowPresence(context.Context) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.presence
}
func (d *dir) Room(syncID []byte) (Room, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.rooms[string(syncID)]
	return r, ok
}

type side struct {
	h   host.Host
	d   *dir
	s   *Service
	sig <-chan webui.Signal
}

// pair makes two services whose accounts are each other's contacts and
// members of one room.
func pair(t *testing.T) (a, b *side, room Room) {
	t.Helper()
	room = Room{ID: "r1", SyncID: []byte("sync-1"), Key: make([]byte, 32)}
	mk := func(acct byte) *side {
		h := testsupport.Host(t)
		d := &dir{self: keyring.AccountID{acct}, contacts: map[peer.ID]keyring.AccountID{}, blocked: map[keyring.AccountID]bool{}, rooms: map[string]Room{}}
		s := New(h, d)
		s.Start()
		t.Cleanup(s.Close)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return &side{h: h, d: d, s: s, sig: s.Subscribe(ctx)}
	}
	a, b = mk(1), mk(2)
	members := map[keyring.AccountID]bool{a.d.self: true, b.d.self: true}
	room.IsMember = func(x keyring.AccountID) bool { return members[x] }
	for _, x := range []*side{a, b} {
		x.d.rooms[string(room.SyncID)] = room
	}
	a.d.contacts[b.h.ID()] = b.d.self
	b.d.contacts[a.h.ID()] = a.d.self
	testsupport.Connect(t, a.h, b.h)
	return a, b, room
}

func recv(ch <-chan webui.Signal, kind string, d time.Duration) (webui.Signal, bool) {
	end := time.After(d)
	for {
		select {
		case s := <-ch:
			if s.Kind == kind {
				return s, true
			}
		case <-end:
			return webui.Signal{}, false
		}
	}
}

func TestTypingReachesMembersOnly(t *testing.T) {
	a, b, room := pair(t)
	if err := a.s.Typing(context.Background(), room, []peer.ID{b.h.ID()}); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(b.sig, "typing", 5*time.Second); !ok || s.Conversation != "r1" {
		t.Fatalf("typing: %+v, %v", s, ok)
	}
	// A contact who is no longer a member: B drops its typing.
	a.s.mu.Lock()
	clear(a.s.lastTyping)
	a.s.mu.Unlock()
	b.d.mu.Lock()
	r := b.d.rooms[string(room.SyncID)]
	r.IsMember = func(x keyring.AccountID) bool { return x == b.d.self }
	b.d.rooms[string(room.SyncID)] = r
	b.d.mu.Unlock()
	if err := a.s.Typing(context.Background(), room, []peer.ID{b.h.ID()}); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(b.sig, "typing", 700*time.Millisecond); ok {
		t.Fatalf("typing from a removed member shown: %+v", s)
	}
}

func TestPresenceBlockedAndStrangers(t *testing.T) {
	a, b, _ := pair(t)
	a.d.mu.Lock()
	a.d.presence = true
	a.d.mu.Unlock()
	b.d.mu.Lock()
	b.d.blocked[a.d.self] = true
	b.d.mu.Unlock()
	a.s.Announce()
	if s, ok := recv(b.sig, "presence", 700*time.Millisecond); ok {
		t.Fatalf("presence from a blocked contact shown: %+v", s)
	}
	b.d.mu.Lock()
	delete(b.d.blocked, a.d.self)
	delete(b.d.contacts, a.h.ID()) // a stranger now
	b.d.mu.Unlock()
	a.s.Announce()
	if s, ok := recv(b.sig, "presence", 700*time.Millisecond); ok {
		t.Fatalf("presence from a stranger shown: %+v", s)
	}
	b.d.mu.Lock()
	b.d.contacts[a.h.ID()] = a.d.self
	b.d.mu.Unlock()
	a.s.Announce()
	if s, ok := recv(b.sig, "presence", 5*time.Second); !ok || !s.Online {
		t.Fatalf("presence: %+v, %v", s, ok)
	}
	if !b.s.Presence()[hex.EncodeToString(a.d.self[:])].Online {
		t.Fatal("B's view has A offline")
	}
	// A's last connection closes: B reports it offline at once.
	if err := a.h.Network().ClosePeer(b.h.ID()); err != nil {
		t.Fatal(err)
	}
	if s, ok := recv(b.sig, "presence", 5*time.Second); !ok || s.Online {
		t.Fatalf("after the close: %+v, %v", s, ok)
	}
}

// A flood from one peer is cut at the bucket: at most burst signals pass.
func TestSignalFloodLimited(t *testing.T) {
	a, b, _ := pair(t)
	for range 40 {
		a.s.send(context.Background(), b.h.ID(), presenceWire)
	}
	n := 0
	for {
		if _, ok := recv(b.sig, "presence", 300*time.Millisecond); !ok {
			break
		}
		n++
	}
	if n == 0 || n > burst+2 { // +2: the refill while the 40 were sent
		t.Fatalf("%d of 40 presence signals passed, want 1..%d", n, burst+2)
	}
}
