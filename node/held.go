package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
)

// Gossip that arrives before the rotation it needs (issue 14, item 3). A
// burst of rotations can reach a member out of order: rotation k+1 is
// sealed under epoch k, whose rotation has not arrived yet. Such an
// envelope is held, a few per conversation for a short while, and taken
// in again the moment its epoch is installed — in the order the rotations
// need, without waiting for the catch-up that its arrival also starts
// (which stays the fallback: a held envelope that expires or is evicted
// still comes with it).

const (
	maxHeld      = 32        // envelopes held per conversation
	maxHeldBytes = 512 << 10 // their bytes
	heldFor      = time.Minute
)

// heldEnvelope is one gossiped envelope waiting for its epoch.
type heldEnvelope struct {
	epoch keyring.EpochID
	env   []byte
	from  peer.ID
	at    time.Time
}

// hold keeps env, gossiped by from, until its epoch arrives, evicting the
// oldest held envelopes past the caps. It reports whether env is held.
func (c *Chat) hold(conv *conversation, env []byte, from peer.ID) bool {
	e, err := dag.DecodeEnvelope(env)
	if err != nil || len(e.Epoch) != keyring.EpochIDSize || len(env) > maxHeldBytes {
		return false
	}
	now := c.now()
	conv.mu.Lock()
	defer conv.mu.Unlock()
	size := len(env)
	kept := conv.held[:0]
	for _, h := range conv.held {
		if now.Sub(h.at) < heldFor && string(h.env) != string(env) {
			kept = append(kept, h)
			size += len(h.env)
		}
	}
	for len(kept) >= maxHeld || size > maxHeldBytes {
		size -= len(kept[0].env)
		kept = kept[1:]
	}
	conv.held = append(kept, heldEnvelope{epoch: keyring.EpochID(e.Epoch), env: env, from: from, at: now})
	return true
}

// releaseHeld takes in the held envelopes whose epoch this device now
// holds, oldest first, and again while that installs further epochs.
func (c *Chat) releaseHeld(ctx context.Context, conv *conversation) {
	for range maxHeld {
		conv.mu.Lock()
		var ready []heldEnvelope
		kept := conv.held[:0]
		for _, h := range conv.held {
			if conv.cipher.HasEpoch(h.epoch) {
				ready = append(ready, h)
			} else {
				kept = append(kept, h)
			}
		}
		conv.held = kept
		conv.mu.Unlock()
		if len(ready) == 0 {
			return
		}
		for _, h := range ready {
			if _, err := c.ingest(ctx, conv, h.from, [][]byte{h.env}, true); err != nil {
				c.log.Debug("held gossip not taken", "conv", conv.hexID, "err", err)
			}
		}
	}
}
