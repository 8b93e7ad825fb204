package node

// The live path: a conversation's gossip topics, and the validator that is
// its ingest (docs/sync.md §11, "Live path"); ingest also serves the
// catch-up path's batches.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
)

const purposeConvRoot = "conversation-root"

// joinTopics subscribes to the conversation's topics for yesterday, today
// and tomorrow (UTC), which absorbs clock skew and the change of day, for
// each epoch of topicEpochs, and leaves the others.
func (c *Chat) joinTopics(conv *conversation) {
	now := c.now()
	conv.mu.Lock()
	defer conv.mu.Unlock()
	want := map[string]bool{}
	for _, epoch := range conv.topicEpochs(now) {
		for _, d := range []time.Duration{-24 * time.Hour, 0, 24 * time.Hour} {
			if name, ok := conv.topicName(epoch, now.Add(d)); ok {
				want[name] = true
			}
		}
	}
	for name, jt := range conv.topics {
		if !want[name] {
			jt.cancel()
			jt.events.Cancel()
			jt.sub.Cancel()
			_ = jt.topic.Close()
			_ = c.net.PubSub.UnregisterTopicValidator(name)
			delete(conv.topics, name)
		}
	}
	for name := range want {
		if conv.topics[name] != nil {
			continue
		}
		if err := c.net.PubSub.RegisterTopicValidator(name, c.validator(conv)); err != nil {
			c.log.Error("register validator", "err", err)
			continue
		}
		t, err := c.net.PubSub.Join(name)
		if err != nil {
			c.log.Error("join topic", "err", err)
			continue
		}
		sub, err := t.Subscribe()
		if err != nil {
			c.log.Error("subscribe", "err", err)
			continue
		}
		evs, err := t.EventHandler()
		if err != nil {
			sub.Cancel()
			continue
		}
		ctx, cancel := context.WithCancel(c.ctx)
		conv.topics[name] = &joinedTopic{topic: t, sub: sub, events: evs, cancel: cancel}
		// The validator already took each message in; the subscription
		// only has to be drained.
		c.wg.Go(func() {
			for {
				if _, err := sub.Next(ctx); err != nil {
					return
				}
			}
		})
		// A member joining the topic is the moment to catch up with it.
		c.wg.Go(func() {
			for {
				pe, err := evs.NextPeerEvent(ctx)
				if err != nil {
					return
				}
				// Sessions are symmetric, so one per pair is enough: the
				// side with the smaller peer id starts it.
				if pe.Type == pubsub.PeerJoin && c.net.Host.ID() < pe.Peer {
					c.wg.Go(func() { c.syncWith(c.ctx, conv, pe.Peer) })
				}
			}
		})
	}
}

// topicsChanged rejoins conv's topics in the background once its sending
// epoch changed: the new epoch's topics are where the members publish
// from now on. A burst of rotations (a device catching up across many)
// makes one rejoin at a time, not one per epoch. The caller may hold
// conv.mu.
func (c *Chat) topicsChanged(conv *conversation) {
	if conv.rejoinPending.Swap(true) {
		return
	}
	c.wg.Go(func() {
		conv.rejoinPending.Store(false)
		c.joinTopics(conv)
	})
}

// validator checks a gossiped envelope before gossipsub delivers or
// forwards it: it must decode, open under a known epoch, carry a valid
// signature by the device the sealed header names, and fit the DAG. A valid
// block is committed right here, so the subscription has nothing left to do.
func (c *Chat) validator(conv *conversation) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if from == c.net.Host.ID() {
			return pubsub.ValidationAccept // our own block, committed before publishing
		}
		if len(m.Data) > dag.MaxEnvelopeSize {
			c.net.Penalize(from, 10, "oversized gossip")
			return pubsub.ValidationReject
		}
		res, err := c.ingest(ctx, conv, from, [][]byte{m.Data}, true)
		if err != nil && !errors.Is(err, errDuplicate) {
			c.log.Debug("gossip block not taken", "conv", conv.hexID, "from", from.String(), "err", err)
		}
		switch {
		case errors.Is(err, errDuplicate):
			return pubsub.ValidationIgnore
		case errors.Is(err, errEpochWithheld):
			// An epoch we never will get (a message written
			// concurrently with the rotation that added this device):
			// a device that opened it hands the history over.
			c.history.Request(conv.id)
			return pubsub.ValidationIgnore
		case errors.Is(err, errUnknownEpoch):
			// An epoch whose rotation has not arrived yet (rotations
			// gossiped in a burst, out of order): held until it does,
			// and a catch-up in case it does not come by gossip.
			c.hold(conv, m.Data, from)
			c.syncOnGossip(conv, m.ReceivedFrom)
			return pubsub.ValidationIgnore
		case errors.Is(err, errAhead):
			c.syncOnGossip(conv, m.ReceivedFrom)
			return pubsub.ValidationIgnore
		case errors.Is(err, ErrBadPeer):
			c.net.Penalize(from, 20, err.Error())
			return pubsub.ValidationReject
		case err != nil:
			return pubsub.ValidationIgnore
		}
		if res.revoked > 0 {
			return pubsub.ValidationIgnore // not forwarded
		}
		if res.notReady > 0 {
			// Links missing: the block keeps its key and comes again,
			// in order, with the catch-up this starts.
			c.syncOnGossip(conv, m.ReceivedFrom)
			return pubsub.ValidationIgnore
		}
		if res.committed > 0 {
			c.releaseHeld(ctx, conv)
		}
		if res.staged > 0 {
			// Parents missing: one catch-up with the forwarder fills the gap.
			c.syncOnGossip(conv, m.ReceivedFrom)
		} else {
			// An authentic block from the forwarder: it is no junk
			// sender, whatever its last sessions brought.
			c.gossipSync.trust(conv, m.ReceivedFrom)
		}
		return pubsub.ValidationAccept
	}
}

// maxLiveGap is how far ahead of its sender's chain a gossiped block may be
// and still be opened at once (its skipped keys are kept until the blocks
// in between arrive); beyond it, catch-up fetches the gap in order.
const maxLiveGap = 64

var (
	errAhead        = errors.New("block is far ahead of its sender's chain")
	errNotReady     = errors.New("block's links are not here yet")
	errRevokedBlock = errors.New("block written by a device after its revocation")
	errDuplicate    = errors.New("block already held")
	errUnknownEpoch = errors.New("block sealed under an epoch this device does not hold")
	// errEpochArrived: a batch met a block under an epoch that a rotation
	// earlier in the same batch sealed to this device; the epoch is now
	// installed and a new session fetches the rest.
	errEpochArrived = errors.New("block sealed under an epoch that arrived in the same batch")
	// errEpochWithheld: the block's epoch comes from a rotation this
	// device holds but that was not sealed to it (written concurrently
	// with its addition): only a device that opened the block can help.
	errEpochWithheld = errors.New("block sealed under an epoch that was not sealed to this device")
)

type ingestResult struct {
	committed, staged, duplicates, notReady, revoked int
	// rest is the index of the first envelope the pass did not reach
	// (len(envs) when it read them all).
	rest int
}

func (r *ingestResult) add(o ingestResult) {
	r.committed += o.committed
	r.staged += o.staged
	r.duplicates += o.duplicates
	r.notReady += o.notReady
	r.revoked += o.revoked
}

// ingest opens, authenticates, commits and applies envelopes from a peer.
// A message key is spent only on a block that has been authenticated:
// live blocks (gossip) get a full signature check before their key is
// deleted; catch-up batches are opened twice — first with a scratch copy of
// the key state, to verify one signature per author chain
// (dag.PlanVerification), then for real for the blocks that passed. So a
// member who forges envelopes in another member's name cannot burn that
// member's keys, and a batch still costs one signature per author.
func (c *Chat) ingest(ctx context.Context, conv *conversation, from peer.ID, envs [][]byte, live bool) (ingestResult, error) {
	res := ingestResult{rest: len(envs)}
	conv.mu.Lock()
	defer conv.mu.Unlock()

	// Pass 1: decode and open without spending keys. A catch-up batch is
	// opened with a scratch copy of the key state (one linear pass, however
	// long the batch); a live block is checked inside OpenBlockFunc, before
	// its key is deleted.
	type opened struct {
		blk    dag.Block
		sealed dag.Sealed
	}
	var (
		cands   []opened
		openErr error // stops the pass; what came before is still taken in
		batch   = make(map[cid.Cid]bool, len(envs))
		scratch *keyring.Cipher
		// scratchOpened counts the envelopes the scratch state opened.
		scratchOpened int
		// unknownEpoch is the epoch of the block that stopped the pass
		// for want of its key.
		unknownEpoch []byte
	)
	if !live {
		state, err := conv.cipher.MarshalBinary()
		if err != nil {
			return res, err
		}
		if scratch, err = keyring.UnmarshalCipher(state, rand.Reader); err != nil {
			return res, err
		}
	}
	// What we hold is summed up by the per-author vector (the store is
	// downward-closed), which is far cheaper than a datastore lookup per
	// block; a held block's key is spent anyway, so opening it reports a
	// replay.
	held, err := c.store.SeqVector(ctx, conv.dagID)
	if err != nil {
		return res, err
	}
	for i, env := range envs {
		if live {
			id := dag.EnvelopeCID(env)
			if has, err := c.store.Has(ctx, conv.dagID, id); err != nil {
				return res, err
			} else if has || c.store.IsStaged(conv.dagID, id) {
				res.duplicates++
				continue
			}
		}
		var sender keyring.DeviceID
		var sealed dag.Sealed
		blk, err := dag.OpenBlock(env, openerFunc(func(s dag.Sealed) ([]byte, error) {
			sealed = s
			if !live {
				inner, snd, err := scratch.OpenBlock(s.Epoch, s.Nonce, s.Ciphertext)
				if err == nil {
					scratchOpened++
				}
				sender = snd
				return inner, err
			}
			// A live block far ahead of its sender's chain means we
			// missed blocks: opening it would skip (and soon evict)
			// their keys. Leave it to catch-up, which delivers in order.
			if _, gap, err := conv.cipher.PeekGap(s.Epoch, s.Nonce, s.Ciphertext); err == nil && gap > maxLiveGap {
				return nil, errAhead
			}
			inner, snd, err := conv.cipher.OpenBlockFunc(s.Epoch, s.Nonce, s.Ciphertext, func(inner []byte, snd keyring.DeviceID) error {
				in, err := dag.DecodeInner(inner)
				if err != nil {
					return err
				}
				if keyring.DeviceID(in.Author) != snd {
					return errors.New("sealed sender is not the author")
				}
				if err := dag.VerifySignature(in); err != nil {
					return err
				}
				if conv.revokedBlock(&in) {
					return errRevokedBlock
				}
				// A block whose links we lack keeps its key: opened now,
				// it could only be staged, and a staged block lost to
				// eviction or a crash could never be opened again. The
				// catch-up this triggers delivers it in order.
				for _, l := range in.Links() {
					if l.Equals(in.Prev) && held[in.Author] >= in.Seq-1 {
						continue
					}
					if ok, err := c.store.Has(ctx, conv.dagID, l); err != nil || !ok {
						return errNotReady
					}
				}
				return nil
			})
			sender = snd
			return inner, err
		}))
		if err != nil {
			switch {
			case errors.Is(err, errAhead):
				return res, errAhead
			case errors.Is(err, errNotReady):
				res.notReady++
				continue
			case errors.Is(err, errRevokedBlock):
				res.revoked++
				continue
			case errors.Is(err, keyring.ErrUnknownEpoch):
				openErr = fmt.Errorf("%w: %w", errUnknownEpoch, err)
				unknownEpoch = sealed.Epoch
				res.rest = i
			case errors.Is(err, keyring.ErrReplay):
				res.duplicates++
				continue
			default:
				openErr = fmt.Errorf("%w: open block: %w", ErrBadPeer, err)
			}
			break
		}
		in := &blk.Inner
		if keyring.DeviceID(in.Author) != sender {
			openErr = fmt.Errorf("%w: block author is not the sealed sender", ErrBadPeer)
			break
		}
		if in.Seq == 1 {
			cert, err := keyring.VerifyCertificate(in.Cert)
			if err != nil || cert.Device != sender {
				openErr = fmt.Errorf("%w: first block of a device without a valid certificate", ErrBadPeer)
				break
			}
		}
		if conv.revokedBlock(in) {
			// Written by a device after its account revoked it.
			res.revoked++
			continue
		}
		if !live && in.Seq <= held[in.Author] {
			// Below what we hold of this author: a duplicate, unless it is
			// a second block for a sequence number (equivocation), which
			// AddBatch refuses and records. Rare in an honest session,
			// since the peer sends only what our vector lacks.
			if has, err := c.store.Has(ctx, conv.dagID, blk.CID); err != nil {
				return res, err
			} else if has {
				res.duplicates++
				continue
			}
		}
		if !live {
			// A catch-up block whose links we lack (another session is
			// delivering them) stays unopened and comes again in order:
			// opening it would park it in staging, where eviction would
			// lose it for good once its key is spent.
			ready := true
			for _, l := range in.Links() {
				if batch[l] || (l.Equals(in.Prev) && held[in.Author] >= in.Seq-1) {
					continue
				}
				if ok, err := c.store.Has(ctx, conv.dagID, l); err != nil || !ok {
					ready = false
					break
				}
			}
			if !ready {
				res.notReady++
				continue
			}
		}
		cands = append(cands, opened{blk: blk, sealed: sealed})
		batch[blk.CID] = true
	}

	// Authenticate: every live block, or one signature per author chain.
	blocks := make([]dag.Block, 0, len(cands))
	for _, o := range cands {
		blocks = append(blocks, o.blk)
	}
	ok := make([]bool, len(blocks))
	if live {
		for i := range blocks {
			ok[i] = true // verified inside OpenBlockFunc, key already spent
		}
	} else {
		plan := dag.PlanVerification(blocks)
		tipOK := map[int]bool{}
		for _, i := range plan.Verify {
			if err := dag.VerifySignature(blocks[i].Inner); err != nil {
				openErr = fmt.Errorf("%w: %w", ErrBadPeer, err)
				continue
			}
			tipOK[i] = true
		}
		for i := range blocks {
			ok[i] = tipOK[plan.Via[i]]
		}
	}

	kept := blocks[:0]
	sealedOf := make(map[cid.Cid]dag.Sealed, len(cands))
	for i, o := range cands {
		if ok[i] {
			kept = append(kept, blocks[i])
			sealedOf[blocks[i].CID] = o.sealed
		}
	}
	blocks = kept
	if len(blocks) == 0 {
		if openErr != nil {
			return res, c.classifyUnknownEpoch(conv, openErr, unknownEpoch)
		}
		if res.duplicates > 0 && res.notReady == 0 {
			return res, errDuplicate
		}
		return res, nil
	}
	added, err := c.store.AddBatch(ctx, conv.dagID, from.String(), blocks)
	if err != nil {
		return res, err
	}
	// Pass 2: spend the keys of what was committed, after the commit. A
	// crash in between leaves a key unspent for a stored block (harmless:
	// it is skipped, then evicted); the other order could spend the key of
	// a block the crash lost, which could then never be opened again.
	if !live {
		// When the batch's every block that the scratch state opened was
		// committed (the usual case), the scratch state is exactly the
		// real one with those keys spent: adopt it instead of opening
		// every block a second time.
		fromBatch := 0
		for _, b := range added.Committed {
			if _, ok := sealedOf[b.CID]; ok {
				fromBatch++
			}
		}
		if fromBatch == scratchOpened && fromBatch == len(added.Committed) {
			if err := conv.cipher.Adopt(scratch); err == nil {
				sealedOf = nil
			}
		}
		for _, b := range added.Committed {
			if sd, ok := sealedOf[b.CID]; ok {
				if _, _, err := conv.cipher.OpenBlock(sd.Epoch, sd.Nonce, sd.Ciphertext); err != nil && !errors.Is(err, keyring.ErrReplay) {
					c.log.Warn("spend the key of a committed block", "block", b.CID.String(), "err", err)
				}
			}
		}
	}
	res.committed, res.staged = len(added.Committed), len(added.Staged)
	if len(added.Rejected) > 0 || len(added.Equivocations) > 0 {
		err = fmt.Errorf("%w: %d invalid blocks, %d equivocations", ErrBadPeer, len(added.Rejected), len(added.Equivocations))
	}
	if openErr != nil {
		err = openErr
	}
	if perr := c.persistKeys(ctx, conv, false); perr != nil {
		return res, perr
	}
	events := make([]crdt.Event, 0, len(added.Committed))
	fromOthers := false
	for _, b := range added.Committed {
		ev, derr := conv.event(b)
		if derr != nil {
			c.log.Debug("block body does not decode", "block", b.CID.String(), "err", derr)
		}
		if b.Inner.Author != dag.DeviceID(c.id.DeviceID()) {
			for _, op := range ev.Ops {
				if _, ok := op.(crdt.Message); ok {
					fromOthers = true
				}
			}
		}
		events = append(events, ev)
	}
	if _, aerr := conv.applyBatch(events); aerr != nil {
		c.log.Error("apply", "conv", conv.hexID, "err", aerr)
	}
	if conv.acct != nil {
		c.noteAccountRotations(conv, events)
	}
	c.noteRevocations(conv, events)
	c.noteApplied(conv, events)
	c.noteSeen(events)
	if hasRotationOps(events) && c.noteRotations(conv) {
		// Blocks sealed under the new epoch may have been refused
		// before it was installed: fetch them again.
		if from != mailboxPeer {
			c.wg.Go(func() { c.syncWith(c.ctx, conv, from) })
		}
	}
	err = c.classifyUnknownEpoch(conv, err, unknownEpoch)
	if len(events) > 0 {
		c.events.publish(Event{Kind: "state", Conversation: conv.hexID})
	}
	if fromOthers {
		c.wg.Go(func() { c.scheduleDeliveryReceipt(conv) })
	}
	return res, err
}

// classifyUnknownEpoch refines an ingest error caused by a block under an
// epoch this device does not hold: errEpochArrived when a rotation in the
// same batch has installed it since, errEpochWithheld when its rotation is
// here but was not sealed to this device. conv.mu is held.
func (c *Chat) classifyUnknownEpoch(conv *conversation, err error, epoch []byte) error {
	if !errors.Is(err, errUnknownEpoch) || len(epoch) != keyring.EpochIDSize {
		return err
	}
	if conv.cipher.HasEpoch(keyring.EpochID(epoch)) {
		// Not a key this device lacks (nobody needs to hand over the
		// history): the batch crossed a rotation.
		return errEpochArrived
	}
	if c.epochWithheld(conv, epoch) {
		return fmt.Errorf("%w: %w", errEpochWithheld, err)
	}
	return err
}

// epochWithheld reports whether epoch is that of a rotation in conv's
// state that was not sealed to this device. Only such rotations are
// verified (usually none), so a flood of made-up epoch ids costs nothing.
// conv.mu is held.
func (c *Chat) epochWithheld(conv *conversation, epoch []byte) bool {
	if len(epoch) != keyring.EpochIDSize {
		return false
	}
	self := crdt.DeviceID(c.id.DeviceID())
	for _, rv := range conv.state.Rotations() {
		if slices.ContainsFunc(rv.Recipients, func(r crdt.Recipient) bool { return r.Device == self }) {
			continue
		}
		if r, err := keyring.VerifyRotation(rv.Payload); err == nil && r.Epoch == keyring.EpochID(epoch) {
			return true
		}
	}
	return false
}

type openerFunc func(dag.Sealed) ([]byte, error)

func (f openerFunc) Open(s dag.Sealed) ([]byte, error) { return f(s) }
