package node

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/node/catchup"
)

// The chat service's side of the reconciliation fallback
// (catchup.Reconciler): the conversation's committed blocks as a set, and
// blocks by key. The dag store caches the set until the next commit.

var _ catchup.Reconciler = (*Chat)(nil)

// syncConversation returns the conversation named by a sync id.
func (c *Chat) syncConversation(syncID []byte) (*conversation, error) {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return nil, ErrNoConversation
	}
	return conv, nil
}

// ReconSet implements catchup.Reconciler. Reconciliation is for current
// member devices: a former member device syncs by summary only.
func (c *Chat) ReconSet(ctx context.Context, p peer.ID, syncID []byte) (*dag.ReconSet, error) {
	conv, v, ok := c.viewOf(syncID, p)
	if !ok || !v.full {
		return nil, ErrNoConversation
	}
	set, err := c.store.ReconSet(ctx, conv.dagID)
	if err != nil {
		return nil, fmt.Errorf("reconciliation set: %w", err)
	}
	return set, nil
}

// Lacking implements catchup.Reconciler. Bytes that are not a CID count as
// lacking: the peer named something we cannot hold.
func (c *Chat) Lacking(ctx context.Context, syncID []byte, cids [][]byte) (int, error) {
	conv, err := c.syncConversation(syncID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range cids {
		cd, err := cid.Cast(b)
		if err != nil {
			n++
			continue
		}
		has, err := c.store.Has(ctx, conv.dagID, cd)
		if err != nil {
			return 0, fmt.Errorf("lacking: %w", err)
		}
		if !has {
			n++
		}
	}
	return n, nil
}

// Envelopes implements catchup.Reconciler.
func (c *Chat) Envelopes(ctx context.Context, p peer.ID, syncID []byte, items []dag.ReconItem, fn func(env []byte) error) error {
	conv, v, ok := c.viewOf(syncID, p)
	if !ok || !v.full {
		return ErrNoConversation
	}
	return c.store.EnvelopesAt(ctx, conv.dagID, items, fn)
}
