package node

// The chat service's side of the signal service (node/signals): typing and
// presence ask it who the contacts are, which are blocked, whether the user
// shows presence, and which conversation a sync id names.

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/signals"
)

// startSignals creates the signal service and starts it; Node.Close stops
// it.
func (c *Chat) startSignals() {
	c.sig = signals.New(c.net.Host, signalDirectory{c})
	c.sig.Start()
}

// room is conv as the signal service sees it.
func (c *Chat) room(conv *conversation) signals.Room {
	return signals.Room{
		ID: conv.hexID, SyncID: conv.syncID,
		Key: deriveSecret(conv.root, signals.TypingKeyLabel, 32),
		IsMember: func(a keyring.AccountID) bool {
			conv.mu.Lock()
			defer conv.mu.Unlock()
			member, _ := conv.state.IsMember(crdt.AccountID(a))
			return member
		},
	}
}

// signalDirectory is the chat service as signals.Directory.
type signalDirectory struct{ c *Chat }

func (d signalDirectory) Self() keyring.AccountID          { return d.c.id.AccountID() }
func (d signalDirectory) Blocked(a keyring.AccountID) bool { return d.c.isBlocked(a) }
func (d signalDirectory) Now() time.Time                   { return d.c.now() }

func (d signalDirectory) ContactOf(p peer.ID) (keyring.AccountID, bool) {
	d.c.mu.RLock()
	defer d.c.mu.RUnlock()
	for a, vc := range d.c.contacts {
		if vc.Peer.ID == p {
			return a, true
		}
	}
	return keyring.AccountID{}, false
}

func (d signalDirectory) Contacts() []signals.Contact {
	d.c.mu.RLock()
	defer d.c.mu.RUnlock()
	out := make([]signals.Contact, 0, len(d.c.contacts))
	for a, vc := range d.c.contacts {
		out = append(out, signals.Contact{Account: a, Peer: vc.Peer.ID})
	}
	return out
}

func (d signalDirectory) ShowPresence(ctx context.Context) bool {
	return d.c.net.ShowPresence(ctx)
}

func (d signalDirectory) Room(syncID []byte) (signals.Room, bool) {
	d.c.mu.RLock()
	conv := d.c.bySync[string(syncID)]
	d.c.mu.RUnlock()
	if conv == nil {
		return signals.Room{}, false
	}
	return d.c.room(conv), true
}
