package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

// What a peer may fetch of a conversation by catch-up (docs/sync.md §11,
// "Who may sync"). A current member device fetches all of it (maySync). A
// former member device — one an epoch of the conversation was sealed to,
// known at its peer by a contact's card or by its announcement in the
// conversation, whose account was removed or which was revoked — fetches
// only the blocks sealed under epochs that were sealed to it: it learns of
// its removal (that rotation is sealed under an epoch it holds) and of
// nothing after, not even how much was written. Anyone else is answered as if this device did not hold
// the conversation. A conversation this device holds no block of yet
// (just welcomed) is synced with whoever asks: it has nothing to show.

// syncView is the part of a conversation a peer may fetch: all of it, or
// the blocks under the epochs in readable.
type syncView struct {
	full     bool
	readable map[keyring.EpochID]bool
}

// allows reports whether env (an encoded envelope) is in the view.
func (v syncView) allows(env []byte) bool {
	if v.full {
		return true
	}
	e, err := dag.DecodeEnvelope(env)
	return err == nil && len(e.Epoch) == keyring.EpochIDSize && v.readable[keyring.EpochID(e.Epoch)]
}

// viewFor returns what p may fetch of conv; ok is false for nothing.
func (c *Chat) viewFor(conv *conversation, p peer.ID) (v syncView, ok bool) {
	if c.maySync(conv, p) {
		return syncView{full: true}, true
	}
	if conv.acct != nil {
		return syncView{}, false
	}
	conv.mu.Lock()
	unsynced := len(conv.state.Members()) == 0
	conv.mu.Unlock()
	if unsynced {
		// Welcomed, no block here yet: there is nothing to show and
		// everything to learn, and no member list to check against.
		return syncView{full: true}, true
	}
	// The device at p: the one of a contact's card, or one announced in
	// the conversation with p as its peer.
	var devs []keyring.DeviceID
	c.mu.RLock()
	for _, vc := range c.contacts {
		if vc.Peer.ID == p {
			devs = append(devs, vc.Cert.Device)
		}
	}
	c.mu.RUnlock()
	conv.mu.Lock()
	defer conv.mu.Unlock()
	rots := conv.state.Rotations()
	for _, rv := range rots {
		for _, r := range rv.Recipients {
			for _, dc := range conv.state.Devices(r.Account) {
				if dc.Device == r.Device && string(dc.Peer) == string(p) && !slices.Contains(devs, keyring.DeviceID(dc.Device)) {
					devs = append(devs, keyring.DeviceID(dc.Device))
				}
			}
		}
	}
	// The epochs sealed to it.
	v.readable = map[keyring.EpochID]bool{}
	for _, rv := range rots {
		if !slices.ContainsFunc(rv.Recipients, func(r crdt.Recipient) bool { return slices.Contains(devs, keyring.DeviceID(r.Device)) }) {
			continue
		}
		if rot, err := keyring.VerifyRotation(rv.Payload); err == nil {
			v.readable[rot.Epoch] = true
		}
	}
	return v, len(v.readable) > 0
}

// viewOf looks up the conversation a sync id names and p's view of it.
func (c *Chat) viewOf(syncID []byte, p peer.ID) (*conversation, syncView, bool) {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return nil, syncView{}, false
	}
	v, ok := c.viewFor(conv, p)
	return conv, v, ok
}

// restrictedHello is the Hello of the part of conv a former member device
// may fetch: the highest seq of each author and the count among those
// blocks, no heads (its heads are not the DAG's).
func (c *Chat) restrictedHello(ctx context.Context, conv *conversation, syncID []byte, v syncView) (protocol.Hello, error) {
	h := protocol.Hello{SyncID: syncID, Vector: map[string]uint64{}}
	for b, err := range c.store.Blocks(ctx, conv.dagID, dag.Position{}, false) {
		if err != nil {
			return h, fmt.Errorf("restricted summary: %w", err)
		}
		if len(b.Envelope.Epoch) != keyring.EpochIDSize || !v.readable[keyring.EpochID(b.Envelope.Epoch)] {
			continue
		}
		k := string(b.Inner.Author[:])
		h.Vector[k] = max(h.Vector[k], b.Inner.Seq)
		h.Count++
	}
	return h, nil
}

// filtered wraps fn so that only envelopes in v reach it.
func (v syncView) filtered(fn func(env []byte) error) func(cid.Cid, []byte) error {
	return func(_ cid.Cid, env []byte) error {
		if !v.allows(env) {
			return nil
		}
		return fn(env)
	}
}
