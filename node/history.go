package node

import (
	"context"
	"fmt"
	"iter"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
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
	return err == nil && h.c.maySync(conv, p)
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

// maySync reports whether p may sync conv with this device (catch-up) or
// be sent its history: another device of this account (any conversation,
// the account DAG included), or a device of a current member account that
// is not revoked: the device of the member's card, or one announced in
// conv. Anyone else — a removed member, a stranger who learnt the sync id
// — is answered as if this device did not hold the conversation.
func (c *Chat) maySync(conv *conversation, p peer.ID) bool {
	if c.isOwnDevicePeer(p) {
		return true
	}
	if conv.acct != nil {
		return false
	}
	c.mu.RLock()
	var cv *card.Verified
	for _, vc := range c.contacts {
		if vc.Peer.ID == p {
			cv = &vc
			break
		}
	}
	c.mu.RUnlock()
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if cv != nil {
		_, revoked := conv.revoked[cv.Cert.Device]
		if member, _ := conv.state.IsMember(crdt.AccountID(cv.Cert.Account)); member && !revoked {
			return true
		}
	}
	for _, m := range conv.state.Members() {
		for _, d := range conv.state.Devices(m.Account) {
			if string(d.Peer) != string(p) {
				continue
			}
			if _, revoked := conv.revoked[keyring.DeviceID(d.Device)]; !revoked {
				return true
			}
		}
	}
	return false
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
