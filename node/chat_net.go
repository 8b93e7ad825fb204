package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/glitr-chat/glitr/protocol"
)

// WelcomeProtocol delivers a new conversation's first epoch to a member.
const WelcomeProtocol = "/glitr/welcome/1.0.0"

const maxWelcome = 512 << 10

// Welcome is sent by a conversation's creator to each member: the rotation
// parts (each member's box is HPKE-sealed to its prekey, so the message
// reveals nothing to anyone else).
type Welcome struct {
	Conversation []byte   `cbor:"1,keyasint"`
	Rotation     [][]byte `cbor:"2,keyasint"`
	// RootBox, for a member added to an existing conversation, is the
	// conversation's root secret sealed to the newcomer's prekey (its
	// topic names and sync id derive from the first epoch, which the
	// newcomer never gets).
	RootBox []byte `cbor:"3,keyasint,omitempty"`
}

const purposeConvRoot = "conversation-root"

// joinTopics subscribes to the conversation's topics for yesterday, today
// and tomorrow (UTC), which absorbs clock skew and the change of day.
func (c *Chat) joinTopics(conv *conversation) {
	now := c.now()
	want := map[string]bool{}
	for _, d := range []time.Duration{-24 * time.Hour, 0, 24 * time.Hour} {
		want[conv.topicName(now.Add(d))] = true
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	for name, jt := range conv.topics {
		if !want[name] {
			jt.cancel()
			jt.events.Cancel()
			jt.sub.Cancel()
			_ = jt.topic.Close()
			_ = c.n.PubSub.UnregisterTopicValidator(name)
			delete(conv.topics, name)
		}
	}
	for name := range want {
		if conv.topics[name] != nil {
			continue
		}
		if err := c.n.PubSub.RegisterTopicValidator(name, c.validator(conv)); err != nil {
			c.log.Error("register validator", "err", err)
			continue
		}
		t, err := c.n.PubSub.Join(name)
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
				if pe.Type == pubsub.PeerJoin && c.n.Host.ID() < pe.Peer {
					c.wg.Go(func() { c.syncWith(c.ctx, conv, pe.Peer) })
				}
			}
		})
	}
}

// validator checks a gossiped envelope before gossipsub delivers or
// forwards it: it must decode, open under a known epoch, carry a valid
// signature by the device the sealed header names, and fit the DAG. A valid
// block is committed right here, so the subscription has nothing left to do.
func (c *Chat) validator(conv *conversation) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if from == c.n.Host.ID() {
			return pubsub.ValidationAccept // our own block, committed before publishing
		}
		if len(m.Data) > dag.MaxEnvelopeSize {
			c.n.Penalize(from, 10, "oversized gossip")
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
			c.wg.Go(func() { c.requestHistory(conv) })
			return pubsub.ValidationIgnore
		case errors.Is(err, errUnknownEpoch):
			// An epoch whose rotation has not arrived yet: catch up.
			c.syncOnGossip(conv, m.ReceivedFrom)
			return pubsub.ValidationIgnore
		case errors.Is(err, errAhead):
			c.syncOnGossip(conv, m.ReceivedFrom)
			return pubsub.ValidationIgnore
		case errors.Is(err, ErrBadPeer):
			c.n.Penalize(from, 20, err.Error())
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
		if res.staged > 0 {
			// Parents missing: one catch-up with the forwarder fills the gap.
			c.syncOnGossip(conv, m.ReceivedFrom)
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
	c.noteSeen(events)
	if hasRotationOps(events) && c.noteRotations(conv) {
		// Blocks sealed under the new epoch may have been refused
		// before it was installed: fetch them again.
		c.wg.Go(func() { c.syncWith(c.ctx, conv, from) })
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

// Summary implements catchup.Source.
func (c *Chat) Summary(ctx context.Context, syncID []byte) (protocol.Hello, bool, error) {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return protocol.Hello{}, false, nil
	}
	h := protocol.Hello{SyncID: syncID, Vector: map[string]uint64{}}
	heads, err := c.store.Heads(ctx, conv.dagID)
	if err != nil {
		return h, false, err
	}
	for _, r := range heads {
		if len(h.Heads) == protocol.MaxHelloHeads {
			break
		}
		h.Heads = append(h.Heads, r.CID.Bytes())
	}
	vec, err := c.store.SeqVector(ctx, conv.dagID)
	if err != nil {
		return h, false, err
	}
	for d, s := range vec {
		h.Vector[string(d[:])] = s
	}
	n, err := c.store.Count(ctx, conv.dagID)
	h.Count = n
	return h, true, err
}

// Missing implements catchup.Source.
func (c *Chat) Missing(ctx context.Context, syncID []byte, theirs protocol.Hello, fn func(env []byte) error) error {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return ErrNoConversation
	}
	heads := make([]cid.Cid, 0, len(theirs.Heads))
	for _, b := range theirs.Heads {
		if _, cd, err := cid.CidFromBytes(b); err == nil {
			heads = append(heads, cd)
		}
	}
	vec := make(map[dag.DeviceID]uint64, len(theirs.Vector))
	for k, s := range theirs.Vector {
		var d dag.DeviceID
		copy(d[:], k)
		vec[d] = s
	}
	// Their vector also tells us how far our own blocks have reached.
	self := c.id.DeviceID()
	if s := vec[dag.DeviceID(self)]; s > 0 {
		conv.mu.Lock()
		conv.ackedSeq = max(conv.ackedSeq, s)
		conv.mu.Unlock()
	}
	return c.store.MissingFunc(ctx, conv.dagID, heads, vec, func(_ cid.Cid, env []byte) error { return fn(env) })
}

// Ingest implements catchup.Sink.
func (c *Chat) Ingest(ctx context.Context, from peer.ID, syncID []byte, envs [][]byte) error {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return ErrNoConversation
	}
	res, err := c.ingest(ctx, conv, from, envs, false)
	// The batch crossed a rotation: what came before the first block under
	// the new epoch is in, and committing it installed the epoch. The rest
	// is taken at once, instead of failing the session and catching up
	// again (at least a second per rotation crossed, a retry backoff
	// soon after, for a device that was away for several epochs). Each
	// round installs an epoch, so the rounds are bounded by the batch.
	for rounds, n := 0, len(envs); errors.Is(err, errEpochArrived) && res.rest < len(envs) && rounds < n; rounds++ {
		envs = envs[res.rest:]
		var more ingestResult
		more, err = c.ingest(ctx, conv, from, envs, false)
		res.add(more)
		res.rest = more.rest
	}
	if errors.Is(err, errEpochWithheld) {
		// Written under an epoch this device never got: a device that
		// opened it can hand it over.
		c.wg.Go(func() { c.requestHistory(conv) })
	}
	c.log.Debug("catch-up batch", "conv", conv.hexID, "blocks", len(envs), "committed", res.committed, "notReady", res.notReady, "duplicates", res.duplicates, "err", err)
	if errors.Is(err, errDuplicate) {
		return nil
	}
	if res.notReady > 0 && err == nil {
		// Some blocks came before their links (a concurrent session is
		// bringing those); ask again once this session is over.
		c.wg.Go(func() {
			select {
			case <-c.ctx.Done():
			case <-time.After(3 * time.Second):
				c.syncWith(c.ctx, conv, from)
			}
		})
	}
	return err
}

// syncInterval spaces catch-up sessions with one peer for one conversation.
const syncInterval = time.Second

// maxSyncRetries bounds the quick retries of a failed catch-up session.
const maxSyncRetries = 5

// syncWith runs a catch-up session with p, at most once per syncInterval
// per peer and conversation.
func (c *Chat) syncWith(ctx context.Context, conv *conversation, p peer.ID) {
	if p == c.n.Host.ID() {
		return
	}
	if wait := c.claimSync(conv, p); wait > 0 {
		// Too soon after the last session: run once more when the
		// interval is over (coalescing further requests), never drop it.
		conv.mu.Lock()
		defer conv.mu.Unlock()
		if !conv.syncPending[p] {
			conv.syncPending[p] = true
			c.wg.Go(func() {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
				conv.mu.Lock()
				delete(conv.syncPending, p)
				conv.mu.Unlock()
				if ctx.Err() == nil {
					c.syncWith(ctx, conv, p)
				}
			})
		}
		return
	}
	c.runSync(ctx, conv, p)
}

// claimSync reserves a session with p: it returns 0 when one may start now
// (and records it as started), else how long until one may.
func (c *Chat) claimSync(conv *conversation, p peer.ID) time.Duration {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if wait := syncInterval - time.Since(conv.lastSync[p]); wait > 0 {
		return wait
	}
	conv.lastSync[p] = time.Now()
	return 0
}

// runSync runs the session claimSync reserved, and schedules the retries
// of one that failed.
func (c *Chat) runSync(ctx context.Context, conv *conversation, p peer.ID) catchup.Stats {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := c.catchup.Sync(ctx, p, conv.syncID)
	conv.mu.Lock()
	if err == nil {
		delete(conv.syncFailures, p)
	} else {
		conv.syncFailures[p]++
	}
	failures := conv.syncFailures[p]
	conv.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return st
		}
		c.log.Debug("catch-up", "conv", conv.hexID, "peer", p.String(), "err", err)
		// A session that failed (often on a connection that died under
		// it while a new one came up: the peer restarted) is retried
		// with backoff while the peer stays connected; the periodic
		// anti-entropy pass is too far away for a node that just
		// reconnected.
		if failures <= maxSyncRetries && !errors.Is(err, catchup.ErrUnknown) {
			delay := syncInterval << (failures - 1)
			c.wg.Go(func() {
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(delay):
				}
				if c.n.Host.Network().Connectedness(p) == network.Connected {
					c.syncWith(c.ctx, conv, p)
				}
			})
		}
		return st
	}
	c.log.Debug("caught up", "conv", conv.hexID, "peer", p.String(), "received", st.BlocksRecv, "sent", st.BlocksSent, "took", st.Duration)
	return st
}

// gossipHushMax bounds how far apart syncOnGossip spaces the sessions with
// a peer whose gossip keeps asking for catch-ups that bring nothing.
const gossipHushMax = time.Minute

// gossipSyncs spaces the catch-ups gossip asks for, per conversation and
// forwarding peer. The zero value is ready.
type gossipSyncs struct {
	mu sync.Mutex
	m  map[gossipKey]*gossipSync
}

type gossipKey struct {
	conv *conversation
	peer peer.ID
}

type gossipSync struct {
	// hush is the least time between two sessions: none at first, then
	// from a second, doubling up to gossipHushMax, while they bring
	// nothing.
	hush time.Duration
	last time.Time
	// running: a session is scheduled or running; again: another was
	// asked for meanwhile (it runs after, at most one).
	running, again bool
}

// syncOnGossip starts the catch-up a gossiped block asks for (its parents
// or the blocks before it in its author's chain are missing, or its epoch
// is) with the peer that forwarded it: at once, and coalesced and spaced
// like every session with that peer (syncWith). A session that brought
// nothing doubles the spacing of the next one asked for by that peer's
// gossip: anyone connected can publish on a topic it has seen announced,
// and envelopes under a made-up epoch cannot be told from real ones until
// the epoch arrives, so a peer that sends junk gets at most one session per
// gossipHushMax. The validator calls it, so it does not block.
func (c *Chat) syncOnGossip(conv *conversation, p peer.ID) {
	g := &c.gossipSync
	k := gossipKey{conv, p}
	g.mu.Lock()
	if g.m == nil {
		g.m = map[gossipKey]*gossipSync{}
	}
	st := g.m[k]
	if st == nil {
		st = &gossipSync{}
		g.m[k] = st
	}
	if st.running {
		st.again = true
		g.mu.Unlock()
		return
	}
	st.running = true
	g.mu.Unlock()
	started := c.wg.Go(func() {
		defer func() {
			g.mu.Lock()
			st.running = false
			if st.hush == 0 {
				delete(g.m, k)
			}
			g.mu.Unlock()
		}()
		for {
			g.mu.Lock()
			wait := st.hush - time.Since(st.last)
			st.again = false
			g.mu.Unlock()
			// Past the hush, the session is claimed here rather than left
			// to syncWith, which would schedule one of its own.
			for {
				if wait <= 0 {
					if wait = c.claimSync(conv, p); wait <= 0 {
						break
					}
				}
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = 0
			}
			res := c.runSync(c.ctx, conv, p)
			g.mu.Lock()
			st.last = time.Now()
			if res.BlocksRecv > 0 {
				st.hush = 0
			} else {
				st.hush = min(max(2*st.hush, time.Second), gossipHushMax)
			}
			again := st.again
			g.mu.Unlock()
			if !again || c.ctx.Err() != nil {
				return
			}
		}
	})
	if !started {
		g.mu.Lock()
		st.running = false
		g.mu.Unlock()
	}
}

// maybeMerge emits an empty block when the conversation has more heads
// than one block can name, so the DAG's width stays bounded even when nobody
// writes: dag.Append builds on the oldest 16 heads. At most one per
// conversation per mergeInterval from this device.
func (c *Chat) maybeMerge(ctx context.Context, conv *conversation) error {
	heads, err := c.store.Heads(ctx, conv.dagID)
	if err != nil || len(heads) <= dag.MaxParents {
		return err
	}
	conv.mu.Lock()
	if time.Since(conv.lastMerge) < mergeInterval {
		conv.mu.Unlock()
		return nil
	}
	conv.lastMerge = time.Now()
	conv.mu.Unlock()
	_, err = c.commitOwn(ctx, conv, nil)
	return err
}

const mergeInterval = time.Minute

// memberPeers lists the connected peers of the conversation's other members
// whose cards we hold. Gossipsub's own view of a topic can lag behind the
// connections (a restarted peer can drop out of it for a while), so
// catch-up does not rely on it alone.
func (c *Chat) memberPeers(conv *conversation) []peer.ID {
	conv.mu.Lock()
	members := conv.state.Members()
	conv.mu.Unlock()
	self := c.id.AccountID()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []peer.ID
	for _, d := range c.ownDevs {
		if p, err := peer.IDFromBytes(d.Peer); err == nil && c.n.Host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	for _, m := range members {
		if keyring.AccountID(m.Account) == self {
			continue
		}
		if vc, ok := c.contacts[keyring.AccountID(m.Account)]; ok && c.n.Host.Network().Connectedness(vc.Peer.ID) == network.Connected {
			out = append(out, vc.Peer.ID)
		}
	}
	return out
}

// onConnected starts a catch-up with a contact that just connected, for
// every conversation it is a member of (the side with the smaller peer id
// starts it: sessions are symmetric). A second connection to a peer is a
// hint that the first one died without either side noticing (the peer
// found it dead and dialled again): the older ones are probed, and one
// that does not answer is closed, so that new streams (gossip, catch-up)
// take the new connection. A member coming back also makes the re-dial
// loops of the others try at once: the network may be back for them too.
func (c *Chat) onConnected(p peer.ID) {
	_, member := c.dialTarget(p)
	if member {
		c.links.wakeAll()
		if len(c.n.Host.Network().ConnsToPeer(p)) > 1 {
			c.wg.Go(func() { c.probeLink(c.ctx, p) })
		}
	}
	if c.n.Host.ID() > p {
		return
	}
	if member && !c.isOwnDevicePeer(p) {
		c.wg.Go(func() {
			if err := c.refreshCard(c.ctx, p); err != nil && c.ctx.Err() == nil {
				c.log.Debug("card refresh", "peer", p.String(), "err", err)
			}
		})
	}
	c.syncAllWith(p)
}

// syncAllWith starts a catch-up with p for every conversation it shares
// with this device: all of them for another device of this account, the
// ones a contact is a member of.
func (c *Chat) syncAllWith(p peer.ID) {
	for _, conv := range c.convsWith(p) {
		c.wg.Go(func() { c.syncFresh(conv, p) })
	}
}

// convsWith lists the conversations p takes part in.
func (c *Chat) convsWith(p peer.ID) []*conversation {
	if c.isOwnDevicePeer(p) {
		c.mu.RLock()
		convs := make([]*conversation, 0, len(c.convs)+1)
		if c.account != nil {
			convs = append(convs, c.account)
		}
		for _, conv := range c.convs {
			convs = append(convs, conv)
		}
		c.mu.RUnlock()
		return convs
	}
	c.mu.RLock()
	var acct keyring.AccountID
	found := false
	for a, vc := range c.contacts {
		if vc.Peer.ID == p {
			acct, found = a, true
		}
	}
	var convs []*conversation
	if found {
		for _, conv := range c.convs {
			convs = append(convs, conv)
		}
	}
	c.mu.RUnlock()
	return slices.DeleteFunc(convs, func(conv *conversation) bool {
		conv.mu.Lock()
		defer conv.mu.Unlock()
		member, _ := conv.state.IsMember(crdt.AccountID(acct))
		return !member
	})
}

// syncFresh is syncWith for a connection that just came up: when the last
// session with p failed (it ran on the connection that died), the spacing
// since that session does not hold this one back.
func (c *Chat) syncFresh(conv *conversation, p peer.ID) {
	conv.mu.Lock()
	if conv.syncFailures[p] > 0 {
		delete(conv.lastSync, p)
	}
	conv.mu.Unlock()
	c.syncWith(c.ctx, conv, p)
}

// antiEntropy syncs every conversation with one random member peer every
// 30–60 s, in case gossip dropped something.
func (c *Chat) antiEntropy() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(30*time.Second + mrand.N(30*time.Second)):
		}
		convs := c.conversationList()
		for _, conv := range convs {
			c.joinTopics(conv) // the day may have changed
			if err := c.maybeMerge(c.ctx, conv); err != nil && c.ctx.Err() == nil {
				c.log.Warn("merge block", "conv", conv.hexID, "err", err)
			}
			peers := c.memberPeers(conv)
			conv.mu.Lock()
			for _, jt := range conv.topics {
				peers = append(peers, jt.topic.ListPeers()...)
			}
			conv.mu.Unlock()
			if len(peers) > 0 {
				c.syncWith(c.ctx, conv, peers[mrand.N(len(peers))])
			}
		}
	}
}

// sendWelcome delivers the first epoch to a member, retrying with backoff
// until it gets through (the member may be offline).
// sendWelcome delivers a welcome, retrying with backoff; with history, it
// then streams the conversation's blocks (a member added later).
func (c *Chat) sendWelcome(ctx context.Context, conv *conversation, to VerifiedCard, parts [][]byte, history bool) {
	wel := Welcome{Conversation: conv.id, Rotation: parts}
	if history {
		box, err := keyring.SealBox(to.Prekey, purposeConvRoot, conv.id, conv.root)
		if err != nil {
			c.log.Error("seal the conversation root", "err", err)
			return
		}
		wel.RootBox = box
	}
	w, err := canonicalEnc.Marshal(wel)
	if err != nil {
		return
	}
	delay := 200 * time.Millisecond // a just-linked device may still be restarting its chat service
	for {
		err := c.trySendWelcome(ctx, to.Peer, w)
		if err == nil && history {
			if err = c.sendHistory(ctx, conv, to.Peer.ID); err != nil {
				err = fmt.Errorf("history: %w", err)
			}
		}
		if err == nil {
			c.syncWith(ctx, conv, to.Peer.ID)
			return
		}
		c.log.Debug("welcome not delivered yet", "peer", to.Peer.ID.String(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Minute)
	}
}

func (c *Chat) trySendWelcome(ctx context.Context, to peer.AddrInfo, w []byte) error {
	if len(to.Addrs) > 0 {
		c.n.Host.Peerstore().AddAddrs(to.ID, to.Addrs, time.Hour)
	}
	return c.requestAck(ctx, to.ID, WelcomeProtocol, w, 20*time.Second)
}

// errRefused: the peer answered a one-shot request with a refusal.
var errRefused = errors.New("refused")

// requestAck is the one-shot exchange of the welcome, rejoin and history
// request protocols: write the request, half-close, read a one-byte answer
// (1 = accepted), all within timeout.
func (c *Chat) requestAck(ctx context.Context, p peer.ID, proto string, req []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := c.n.Host.NewStream(network.WithAllowLimitedConn(ctx, proto), p, libp2pprotocol.ID(proto))
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(timeout))
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	if _, err := io.ReadFull(s, ack); err != nil {
		return fmt.Errorf("no acknowledgement: %w", err)
	}
	if ack[0] != 1 {
		return fmt.Errorf("%s: %w", proto, errRefused)
	}
	return nil
}

// handleWelcome accepts a conversation from a contact: the rotation must
// be signed by the contact's certified device and open with our prekey.
// Anything else is dropped without explanation (no open inbox).
func (c *Chat) handleWelcome(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(s), maxWelcome+1))
	if err != nil || len(b) > maxWelcome {
		s.Reset()
		return
	}
	from := s.Conn().RemotePeer()
	if err := c.acceptWelcome(c.ctx, from, b); err != nil {
		c.log.Info("welcome refused", "peer", from.String(), "err", err)
		_, _ = s.Write([]byte{0})
		return
	}
	_, _ = s.Write([]byte{1})
}

// syncThenAnnounce fetches a just-welcomed conversation from the peer that
// welcomed this device, then announces this device's prekey there at once,
// so members that do not know it as a contact can seal epochs to it.
func (c *Chat) syncThenAnnounce(conv *conversation, from peer.ID) {
	c.syncWith(c.ctx, conv, from)
	if err := c.announcePrekeyIn(c.ctx, conv); err != nil {
		c.log.Debug("announce prekey", "conv", conv.hexID, "err", err)
	}
}

func (c *Chat) acceptWelcome(ctx context.Context, from peer.ID, b []byte) error {
	var w Welcome
	if err := cardDec.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("malformed: %w", err)
	}
	if len(w.Conversation) != 16 || len(w.Rotation) == 0 || len(w.Rotation) > 16 {
		return errors.New("malformed welcome")
	}
	hexID := hex.EncodeToString(w.Conversation)
	if existing, err := c.conversation(hexID); err == nil {
		// Added again after a removal: take the new epoch and the
		// history we missed from the welcomer.
		return c.rejoin(existing, from, w)
	}
	now := c.now()
	for _, part := range w.Rotation {
		r, err := keyring.VerifyRotation(part)
		if err != nil {
			return err
		}
		if string(r.Conversation) != string(w.Conversation) {
			return errors.New("rotation for another conversation")
		}
		if !c.isContactDevice(r.Rotator) {
			return ErrNotContact
		}
		if c.blockedDevice(r.Rotator) {
			return ErrContactBlocked // no new conversations from a blocked contact
		}
		if !r.HasBoxFor(c.id.DeviceID()) {
			continue
		}
		c.idMu.Lock()
		epoch, err := keyring.OpenEpoch(r, c.id.DeviceID(), c.id.Keyring.Prekeys)
		c.idMu.Unlock()
		if err != nil {
			return err
		}
		var root []byte
		if len(w.RootBox) > 0 {
			c.idMu.Lock()
			root, err = c.id.Keyring.Prekeys.OpenBox(c.id.DeviceID(), purposeConvRoot, w.Conversation, w.RootBox)
			c.idMu.Unlock()
			if err != nil || len(root) != 32 {
				return fmt.Errorf("conversation root: %w", err)
			}
		}
		conv, err := c.installConversation(ctx, w.Conversation, epoch, root)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.welcomedBy[string(w.Conversation)] = from
		c.mu.Unlock()
		if acctID, _ := c.accountConversationID(ctx); acctID == hexID && c.isOwnDevice(r.Rotator) {
			// The account DAG, from the device that linked this one.
			conv.acct = crdt.NewAccount()
			c.setAccount(conv)
			c.joinTopics(conv)
			c.events.publish(Event{Kind: "account"})
			c.wg.Go(func() { c.syncThenAnnounce(conv, from) })
			return nil
		}
		c.register(conv)
		c.joinTopics(conv)
		c.events.publish(Event{Kind: "conversation", Conversation: hexID})
		c.wg.Go(func() { c.syncThenAnnounce(conv, from) })
		_ = now
		return nil
	}
	return errors.New("no box for this device")
}

// rejoin installs the epoch of a welcome into a conversation we already
// hold (we were removed and are added again), and takes the history we
// missed from the welcomer.
func (c *Chat) rejoin(conv *conversation, from peer.ID, w Welcome) error {
	for _, part := range w.Rotation {
		r, err := keyring.VerifyRotation(part)
		if err != nil {
			return err
		}
		if string(r.Conversation) != string(w.Conversation) || !c.isContactDevice(r.Rotator) {
			return ErrNotContact
		}
		if !r.HasBoxFor(c.id.DeviceID()) {
			continue
		}
		c.idMu.Lock()
		epoch, err := keyring.OpenEpoch(r, c.id.DeviceID(), c.id.Keyring.Prekeys)
		c.idMu.Unlock()
		if err != nil {
			return err
		}
		conv.mu.Lock()
		err = conv.cipher.Install(epoch)
		if err == nil {
			err = conv.cipher.SetSendingEpoch(epoch.ID)
		}
		conv.mu.Unlock()
		if err != nil {
			return err
		}
		if err := c.persistKeys(c.ctx, conv, true); err != nil {
			return err
		}
		c.mu.Lock()
		c.welcomedBy[string(w.Conversation)] = from
		c.mu.Unlock()
		return nil
	}
	return nil
}

// isOwnDevice reports whether d is another device of this account.
func (c *Chat) isOwnDevice(d keyring.DeviceID) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.ownDevs[d]
	return ok
}

// isContactDevice reports whether d is a contact's device or another
// device of this account: the devices whose welcomes are accepted.
func (c *Chat) isContactDevice(d keyring.DeviceID) bool {
	if c.isOwnDevice(d) {
		return true
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, vc := range c.contacts {
		if vc.Cert.Device == d {
			return true
		}
	}
	return false
}

// dialContacts keeps connections to contacts whose card addresses answer,
// so topics form and catch-up runs as soon as both sides are up. (Finding
// contacts whose addresses changed goes through the DHT: see the rendezvous
// records in protocol/.)
func (c *Chat) dialContacts() {
	c.wg.Go(c.keepLinks)
	for {
		c.mu.RLock()
		var peers []peer.AddrInfo
		for _, vc := range c.contacts {
			peers = append(peers, vc.Peer)
		}
		c.mu.RUnlock()
		for _, p := range c.ownDevicePeers() {
			peers = append(peers, peer.AddrInfo{ID: p})
		}
		for _, p := range peers {
			if c.n.Host.Network().Connectedness(p.ID) == network.Connected || c.links.redialing(p.ID) {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
			_ = c.n.Host.Connect(ctx, p)
			cancel()
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(5*time.Second + mrand.N(5*time.Second)):
		}
	}
}

// ---- Dead and healed links (docs/sync.md §11, "Partitions") ----
//
// A link that dies upstream closes nothing: libp2p keeps the connection
// (QUIC's idle timeout is 30 s, yamux's keep-alive 30 s) and whatever is
// written to it waits in the transport's retransmission queue, whose timer
// doubles at every loss (QUIC's PTO from about 30 ms on a LAN, TCP's RTO
// from 200 ms). When the link comes back, the next retransmission can be as
// far away as the partition is long, and no connection event starts a
// catch-up. So a node probes a member's link after it writes (the only
// time a dead link costs anything), closes a connection that does not
// answer, and re-dials on a short, bounded schedule: a fresh connection has
// no backoff, and the connection event starts the catch-up.

const (
	// linkProbeSpacing is the least time between two probes of one peer;
	// probes asked for in between are coalesced into one at its end.
	linkProbeSpacing = time.Second
	// linkProbeMin and linkProbeMax bound how long a probe waits for the
	// answer: four round trips (the peer's latency as libp2p measured it)
	// plus a second, so that a loaded but working link is not cut.
	linkProbeMin = 1500 * time.Millisecond
	linkProbeMax = 5 * time.Second
	// A lost member is re-dialled every redialFastPeriod for
	// redialFastWindow (a partition that heals within it is found within
	// a period by each end: a few QUIC Initial packets per attempt, about
	// 3 KB/s per lost peer), then on a period doubling up to
	// redialMaxPeriod; after redialWindow the loop ends and dialContacts'
	// 5-10 s rounds are left. Most attempts dial only the peer's direct
	// QUIC addresses (one handshake, one connection); every
	// redialFullEvery-th dials them all (TCP, for a network that blocks
	// UDP). libp2p's limit on the rate of new connections per address
	// counted dials too and allowed only 16 before one every 5 s: it is
	// kept for inbound connections only (host.go, inboundRateLimited).
	redialFastPeriod  = 800 * time.Millisecond
	redialFastWindow  = time.Minute
	redialFullEvery   = 7
	redialFirstPeriod = time.Second
	redialMaxPeriod   = 8 * time.Second
	redialWindow      = 3 * time.Minute
	// redialDialMin and redialDialMax bound one dial attempt: three round
	// trips plus 0.4 s. QUIC retransmits its first handshake packet after
	// 200 ms, so an attempt sends two; with the fast period a healed link
	// is found within 0.6 s by each end.
	redialDialMin = 500 * time.Millisecond
	redialDialMax = 5 * time.Second
)

// linkKeeper holds the probe and re-dial state of peers. The zero value is
// ready; mu guards everything.
type linkKeeper struct {
	mu     sync.Mutex
	probes map[peer.ID]*linkProbe
	lost   map[peer.ID]*lostLink
	// wake is closed (and replaced) to make every re-dial loop try at
	// once: a member came back or the local addresses changed.
	wake chan struct{}
}

type linkProbe struct {
	last    time.Time
	running bool
	again   bool // asked for while running: probe once more
}

// lostLink is a member peer being re-dialled.
type lostLink struct {
	since time.Time
	// dead: a probe found the link dead (not a peer that left), so a heal
	// is likely soon and the loop dials at once rather than after a period.
	dead bool
}

// wakeCh returns the channel the next wake-up closes. l.mu is held.
func (l *linkKeeper) wakeCh() chan struct{} {
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	return l.wake
}

// redialing reports whether a re-dial loop owns p (dialContacts leaves it
// alone: its dials would spend the same budget).
func (l *linkKeeper) redialing(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost[p] != nil
}

// wakeAll makes every re-dial loop try now.
func (l *linkKeeper) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake != nil && len(l.lost) > 0 {
		close(l.wake)
		l.wake = nil
	}
}

// peerRTT is libp2p's latency estimate for p (from identify and pings),
// or def when it has none.
func (c *Chat) peerRTT(p peer.ID, def time.Duration) time.Duration {
	if rtt := c.n.Host.Peerstore().LatencyEWMA(p); rtt > 0 {
		return rtt
	}
	return def
}

// checkLinks probes the links to the conversation's peers after this
// device wrote to them (called on publish).
func (c *Chat) checkLinks(conv *conversation) {
	peers := c.memberPeers(conv)
	conv.mu.Lock()
	if jt := conv.topics[conv.topicName(c.now())]; jt != nil {
		peers = append(peers, jt.topic.ListPeers()...)
	}
	conv.mu.Unlock()
	slices.Sort(peers)
	for _, p := range slices.Compact(peers) {
		c.probeSoon(p)
	}
}

// probeSoon probes p's link now, or at the end of linkProbeSpacing after
// the last probe (one probe then, however many were asked for).
func (c *Chat) probeSoon(p peer.ID) {
	l := &c.links
	l.mu.Lock()
	if l.probes == nil {
		l.probes = map[peer.ID]*linkProbe{}
	}
	st := l.probes[p]
	if st == nil {
		st = &linkProbe{}
		l.probes[p] = st
	}
	if st.running {
		st.again = true
		l.mu.Unlock()
		return
	}
	st.running = true
	wait := linkProbeSpacing - time.Since(st.last)
	l.mu.Unlock()
	started := c.wg.Go(func() {
		for {
			if wait > 0 {
				select {
				case <-c.ctx.Done():
				case <-time.After(wait):
				}
			}
			l.mu.Lock()
			st.last, st.again = time.Now(), false
			l.mu.Unlock()
			if c.ctx.Err() == nil {
				c.probeLink(c.ctx, p)
			}
			l.mu.Lock()
			if !st.again || c.ctx.Err() != nil {
				st.running = false
				if !st.again && c.n.Host.Network().Connectedness(p) != network.Connected {
					delete(l.probes, p)
				}
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			wait = linkProbeSpacing
		}
	})
	if !started {
		l.mu.Lock()
		st.running = false
		l.mu.Unlock()
	}
}

// probeLink pings p over each of its connections at once and closes those
// that do not answer in time; a peer left without a connection is
// re-dialled. It reports whether any connection answered. Each connection
// is probed on its own: after a heal the peer's new connection is the best
// one for new streams, while gossipsub's stream can still sit on the dead
// one. Limited (relayed) connections are left out: a ping a second would
// spend their relay's data budget, and the relay ends them itself.
func (c *Chat) probeLink(ctx context.Context, p peer.ID) bool {
	conns := slices.DeleteFunc(c.n.Host.Network().ConnsToPeer(p), func(conn network.Conn) bool { return conn.Stat().Limited })
	if len(conns) == 0 {
		return false
	}
	timeout := min(max(4*c.peerRTT(p, 0)+time.Second, linkProbeMin), linkProbeMax)
	silent := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			err := c.ping(ctx, conn, timeout)
			// Only silence counts: a reset or a refusal is an answer (the
			// peer allows two ping streams at a time).
			silent[i] = err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded)
			if err != nil && !silent[i] {
				c.log.Debug("link probe", "peer", p.String(), "err", err)
			}
		})
	}
	wg.Wait()
	var dead []network.Conn
	for i, conn := range conns {
		if silent[i] && !conn.IsClosed() {
			c.log.Debug("link dead: closing the connection", "peer", p.String(), "transport", conn.ConnState().Transport,
				"age", time.Since(conn.Stat().Opened).Round(time.Millisecond).String())
			dead = append(dead, conn)
		}
	}
	if len(dead) == len(conns) {
		// Marked before the close, so that the disconnection finds the
		// fast re-dial state.
		c.linkLost(p, true)
	}
	for _, conn := range dead {
		_ = conn.Close()
	}
	return len(dead) < len(conns)
}

// ping runs one libp2p ping (/ipfs/ping/1.0.0) with the peer over conn,
// within timeout (an error wrapping context.DeadlineExceeded when the
// answer does not come).
func (c *Chat) ping(ctx context.Context, conn network.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := conn.NewStream(ctx)
	if err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := s.SetProtocol(ping.ID); err != nil {
		s.Reset()
		return err
	}
	if err := s.Scope().SetService(ping.ServiceName); err != nil {
		s.Reset()
		return err
	}
	// Lazy negotiation: the protocol header travels with the ping, so a
	// probe costs one round trip.
	rw := msmux.NewMSSelect(s, ping.ID)
	buf := make([]byte, 2*ping.PingSize)
	_, _ = rand.Read(buf[:ping.PingSize])
	_, err = rw.Write(buf[:ping.PingSize])
	if err == nil {
		_, err = io.ReadFull(rw, buf[ping.PingSize:])
	}
	if err != nil {
		s.Reset()
		if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
			return fmt.Errorf("ping: %w", context.DeadlineExceeded)
		}
		return err
	}
	_ = s.Close()
	if !bytes.Equal(buf[:ping.PingSize], buf[ping.PingSize:]) {
		return errors.New("ping answered with other bytes")
	}
	return nil
}

// dialTarget reports whether p is a peer dialContacts keeps a connection
// to (a contact's or one of this account's devices), with the addresses
// its card gave.
func (c *Chat) dialTarget(p peer.ID) (peer.AddrInfo, bool) {
	c.mu.RLock()
	for _, vc := range c.contacts {
		if vc.Peer.ID == p {
			c.mu.RUnlock()
			return vc.Peer, true
		}
	}
	c.mu.RUnlock()
	if c.isOwnDevicePeer(p) {
		return peer.AddrInfo{ID: p}, true
	}
	return peer.AddrInfo{}, false
}

// linkLost starts re-dialling p (once; dead only makes it faster).
func (c *Chat) linkLost(p peer.ID, dead bool) {
	if c.ctx.Err() != nil {
		return
	}
	if _, ok := c.dialTarget(p); !ok && !dead {
		return // not a peer we keep a connection to
	}
	l := &c.links
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = map[peer.ID]*lostLink{}
	}
	if ll := l.lost[p]; ll != nil {
		if dead && !ll.dead {
			ll.dead = true
			ll.since = time.Now()
		}
		return
	}
	ll := &lostLink{since: time.Now(), dead: dead}
	l.lost[p] = ll
	if !c.wg.Go(func() { c.redial(p, ll) }) {
		delete(l.lost, p)
	}
}

// redial dials p until it is connected again, on the schedule of the
// redial constants, and starts the catch-ups a connection event starts.
func (c *Chat) redial(p peer.ID, ll *lostLink) {
	l := &c.links
	defer func() {
		l.mu.Lock()
		if l.lost[p] == ll {
			delete(l.lost, p)
		}
		l.mu.Unlock()
	}()
	defer func() {
		if sw, ok := c.n.Host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p) // the addresses quicOnly left out
		}
	}()
	l.mu.Lock()
	dead := ll.dead
	l.mu.Unlock()
	period := redialFirstPeriod
	next := time.Now().Add(redialJitter(period))
	if dead {
		next = time.Now() // the probe has just failed: the link died a while ago
	}
	for attempts := 0; ; attempts++ {
		l.mu.Lock()
		wake := l.wakeCh()
		since := time.Since(ll.since)
		if ll.dead && !dead {
			// A probe found the link dead meanwhile.
			dead, attempts, next = true, 0, time.Now()
		}
		l.mu.Unlock()
		select {
		case <-c.ctx.Done():
			return
		case <-wake:
		case <-time.After(time.Until(next)):
		}
		if c.n.Host.Network().Connectedness(p) == network.Connected {
			return // the peer dialled us, or another dial got there
		}
		if since > redialWindow || c.n.pen.graylisted(p) {
			return
		}
		ai, ok := c.dialTarget(p)
		if !ok {
			ai = peer.AddrInfo{ID: p} // a member met on a topic: the peerstore's addresses
		}
		// The swarm's own backoff (5 s and growing, per peer) would refuse
		// the dial: this loop is the backoff. It also serves to leave the
		// addresses other than QUIC out of most attempts.
		if sw, ok := c.n.Host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p)
			if attempts%redialFullEvery != redialFullEvery-1 {
				c.quicOnly(sw, p, ai.Addrs)
			}
		}
		started := time.Now()
		timeout := min(max(3*c.peerRTT(p, 0)+400*time.Millisecond, redialDialMin), redialDialMax)
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		err := c.n.Host.Connect(ctx, ai)
		cancel()
		if err == nil {
			c.log.Debug("link back", "peer", p.String(), "after", time.Since(ll.since).Round(time.Millisecond).String(), "attempts", attempts+1)
			if c.n.Host.ID() > p {
				// onConnected leaves the session to the other side,
				// which may still be writing to the dead connection.
				c.syncAllWith(p)
			}
			return
		}
		c.log.Debug("re-dial", "peer", p.String(), "attempt", attempts+1, "err", err)
		if time.Since(ll.since) < redialFastWindow {
			period = redialFastPeriod
		} else {
			period = min(2*period, redialMaxPeriod)
		}
		next = started.Add(redialJitter(period))
	}
}

// quicOnly puts p's addresses other than direct QUIC ones in the swarm's
// dial backoff, when it has a direct QUIC one, so that the next dial makes
// one connection attempt instead of one per transport.
func (c *Chat) quicOnly(sw *swarm.Swarm, p peer.ID, extra []ma.Multiaddr) {
	addrs := append(c.n.Host.Peerstore().Addrs(p), extra...)
	isQUIC := func(a ma.Multiaddr) bool {
		quic := false
		for _, c := range a {
			switch c.Code() {
			case ma.P_QUIC_V1:
				quic = true
			case ma.P_WEBTRANSPORT, ma.P_CIRCUIT, ma.P_WEBRTC_DIRECT:
				return false
			}
		}
		return quic
	}
	if !slices.ContainsFunc(addrs, isQUIC) {
		return
	}
	for _, a := range addrs {
		if !isQUIC(a) {
			sw.Backoff().AddBackoff(p, a)
		}
	}
}

// redialJitter spreads d by ±10%, so that the loops for several peers (and
// the two ends of a link) do not dial in step: any one getting through
// wakes the others.
func redialJitter(d time.Duration) time.Duration {
	return d - d/10 + mrand.N(d/5+1)
}

// keepLinks watches for lost member links and local network changes. It
// runs as long as the chat service.
func (c *Chat) keepLinks() {
	nb := &network.NotifyBundle{DisconnectedF: func(_ network.Network, conn network.Conn) {
		p := conn.RemotePeer()
		if c.n.Host.Network().Connectedness(p) != network.Connected {
			c.linkLost(p, false)
		}
	}}
	c.n.Host.Network().Notify(nb)
	defer c.n.Host.Network().StopNotify(nb)
	sub, err := c.n.Host.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		c.log.Warn("subscribe to address changes", "err", err)
		<-c.ctx.Done()
		return
	}
	defer sub.Close()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-sub.Out():
			// A new or lost address: the network changed (another Wi-Fi, a
			// mobile network, an interface back up). Lost members may be
			// reachable again; identify pushes the new addresses to those
			// still connected.
			c.links.wakeAll()
		}
	}
}
