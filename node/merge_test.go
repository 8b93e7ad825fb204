package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
)

// Twenty devices write concurrently on top of the genesis block: twenty
// heads, more than one block can name. The merge block takes the oldest 16,
// and a second one (after the rate limit) the rest.
func TestMergeBlockBoundsWidth(t *testing.T) {
	a, b := chatPair(t)
	ctx := context.Background()
	conv, err := a.CreateConversation(ctx, "wide", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	c := a.Chat
	cv, _ := c.conversation(conv.ID)
	heads, _ := c.store.Heads(ctx, cv.dagID)
	if len(heads) != 1 {
		t.Fatalf("%d heads after genesis", len(heads))
	}
	var blocks []dag.Block
	for range 20 {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		body, _ := crdt.EncodeOps(nil)
		blk, err := dag.Build(dag.BuildParams{
			Signer: dag.Ed25519Signer{Key: priv}, Sealer: openerSealer{conv: cv},
			Parents: heads, Body: body, Now: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, blk)
	}
	res, err := c.store.AddBatch(ctx, cv.dagID, "test", blocks)
	if err != nil || len(res.Committed) != 20 {
		t.Fatalf("add: %v, %d committed", err, len(res.Committed))
	}
	cv.mu.Lock()
	for _, blk := range res.Committed {
		ev, _ := cv.event(blk)
		if err := cv.state.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	cv.mu.Unlock()
	if heads, _ := c.store.Heads(ctx, cv.dagID); len(heads) != 20 {
		t.Fatalf("%d heads, want 20", len(heads))
	}
	if err := c.maybeMerge(ctx, cv); err != nil {
		t.Fatal(err)
	}
	heads, _ = c.store.Heads(ctx, cv.dagID)
	if len(heads) != 5 { // the merge block + the 4 it could not name
		t.Fatalf("%d heads after one merge, want 5", len(heads))
	}
	// The merge block (16 parents plus its author's previous block) is
	// applied to the CRDT too.
	cv.mu.Lock()
	crdtHeads := len(cv.state.Heads())
	cv.mu.Unlock()
	if crdtHeads != 5 {
		t.Fatalf("CRDT has %d heads, want 5 (merge block not applied)", crdtHeads)
	}
	// Rate limited: a second call right away does nothing...
	if err := c.maybeMerge(ctx, cv); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.store.Heads(ctx, cv.dagID); len(h) != 5 {
		t.Fatalf("merge not rate limited: %d heads", len(h))
	}
	// ...and below the threshold there is nothing to merge.
	cv.mu.Lock()
	cv.lastMerge = time.Time{}
	cv.mu.Unlock()
	if err := c.maybeMerge(ctx, cv); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.store.Heads(ctx, cv.dagID); len(h) != 5 {
		t.Fatalf("merged with only %d heads", len(h))
	}
}
