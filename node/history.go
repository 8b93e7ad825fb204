package node

import (
	"context"
	"fmt"
	"iter"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The conversation service as node/history sees it (historyStore), and
// what it asks of the chat service besides.

// historyStore is the chat service as node/history sees it.
type historyStore struct{ c *Chat }

func (h historyStore) Holds(conv []byte) bool {
	_, err := h.c.conversationByID(conv)
	return err == nil
}

func (h historyStore) Blocks(ctx context.Context, id []byte) iter.Seq2[dag.Block, error] {
	conv, err := h.c.conversationByID(id)
	if err != nil {
		return func(yield func(dag.Block, error) bool) { yield(dag.Block{}, err) }
	}
	return h.c.store.Blocks(ctx, conv.dagID, dag.Position{}, false)
}

func (h historyStore) OwnDevice(p peer.ID) bool { return h.c.isOwnDevicePeer(p) }
func (h historyStore) OwnDevices() []peer.ID    { return h.c.ownDevicePeers() }

func (h historyStore) Member(id []byte, p peer.ID) bool {
	conv, err := h.c.conversationByID(id)
	return err == nil && h.c.isMemberPeer(conv, p)
}

func (h historyStore) Peers(id []byte) []peer.ID {
	conv, err := h.c.conversationByID(id)
	if err != nil {
		return nil
	}
	return h.c.memberPeers(conv)
}

// Ingest commits blocks of a history stream whose signatures checked out
// (node/history.Verify) and applies them.
func (h historyStore) Ingest(ctx context.Context, id []byte, from peer.ID, blocks []dag.Block) error {
	c := h.c
	conv, err := c.conversationByID(id)
	if err != nil {
		return err
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	added, err := c.store.AddBatch(ctx, conv.dagID, from.String(), blocks)
	if err != nil {
		return err
	}
	if len(added.Rejected) > 0 || len(added.Equivocations) > 0 {
		var first error
		if len(added.Equivocations) > 0 {
			first = added.Equivocations[0]
		} else {
			first = added.Rejected[0].Err
		}
		return fmt.Errorf("%w: history with %d invalid blocks, %d equivocations (first: %w)", ErrBadPeer, len(added.Rejected), len(added.Equivocations), first)
	}
	events := make([]crdt.Event, 0, len(added.Committed))
	for _, b := range added.Committed {
		ev, derr := conv.event(b)
		if derr != nil {
			c.log.Debug("block body does not decode", "block", b.CID.String(), "err", derr)
		}
		events = append(events, ev)
	}
	if _, err := conv.applyBatch(events); err != nil {
		c.log.Error("apply history", "conv", conv.hexID, "err", err)
	}
	if conv.acct != nil {
		c.noteAccountRotations(conv, events)
	} else if hasRotationOps(events) {
		c.noteRotations(conv)
	}
	c.noteRevocations(conv, events)
	if len(events) > 0 {
		c.events.publish(Event{Kind: "state", Conversation: conv.hexID})
	}
	return nil
}

// isMemberPeer reports whether p is the peer of a contact that is a
// current member of conv.
func (c *Chat) isMemberPeer(conv *conversation, p peer.ID) bool {
	c.mu.RLock()
	var acct keyring.AccountID
	found := false
	for a, vc := range c.contacts {
		if vc.Peer.ID == p {
			acct, found = a, true
			break
		}
	}
	c.mu.RUnlock()
	if !found {
		return false
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	member, _ := conv.state.IsMember(crdt.AccountID(acct))
	return member
}

func (c *Chat) conversationByID(id []byte) (*conversation, error) {
	if len(id) != 16 {
		return nil, ErrNoConversation
	}
	c.mu.RLock()
	acct := c.account
	c.mu.RUnlock()
	if acct != nil && string(acct.id) == string(id) {
		return acct, nil
	}
	return c.conversation(fmt.Sprintf("%x", id))
}
