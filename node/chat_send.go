package node

// Writing to a conversation: own blocks committed (signed, sealed, once
// per client id) and published, receipts, and the checks that a send
// reached the members (docs/sync.md §11, "Outbox and message states").

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
)

// sealer and signer adapt the keyring to dag's interfaces.
type convSealer struct {
	c    *Chat
	conv *conversation
	ctx  context.Context
}

func (s convSealer) Seal(inner []byte) (dag.Sealed, error) {
	// dag.Build copies the ciphertext into the envelope bytes, so one
	// buffer per conversation serves every block (conv.mu is held).
	epoch, nonce, ct, err := s.conv.cipher.SealBlockTo(s.conv.sealBuf, inner)
	if err != nil {
		return dag.Sealed{}, err
	}
	s.conv.sealBuf = ct
	// The advanced chain is on disk before the block is committed.
	if err := s.c.persistKeys(s.ctx, s.conv, true); err != nil {
		return dag.Sealed{}, err
	}
	return dag.Sealed{Epoch: epoch, Nonce: nonce, Ciphertext: ct}, nil
}

// blockSigner signs dag's signing message with the device key. Both dag and
// keyring domain-separate block signatures with the same prefix; the device
// key adds it itself, so it is taken off here (and checked).
type blockSigner struct{ k *keyring.DeviceKey }

func (s blockSigner) Public() ed25519.PublicKey { return s.k.Public() }

func (s blockSigner) Sign(msg []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(msg, keyring.BlockSignaturePrefix())
	if !ok {
		return nil, errors.New("block signing message lacks the block domain prefix")
	}
	return s.k.Sign(rest)
}

// commitOwn builds, persists and applies one of this device's blocks, then
// publishes it. conv.mu must not be held.
func (c *Chat) commitOwn(ctx context.Context, conv *conversation, ops []crdt.Op) (dag.Block, error) {
	blk, _, err := c.commitOwnAt(ctx, conv, ops, false)
	return blk, err
}

// commitOwnAt is commitOwn that also reports the index of ops[0] in the
// block: this device's announcement may go first. With announceOnly (and
// no ops) it commits only that announcement, and nothing when it is not
// needed (another block made it meanwhile).
func (c *Chat) commitOwnAt(ctx context.Context, conv *conversation, ops []crdt.Op, announceOnly bool) (dag.Block, int, error) {
	blk, at, _, err := c.commitOwnOnce(ctx, conv, ops, announceOnly, nil)
	return blk, at, err
}

// commitOwnOnce is commitOwnAt under an idempotency key (nil: none): when
// a block was committed under key before, it returns that block (created
// false) and commits nothing; at is then the index of the block's first
// message.
func (c *Chat) commitOwnOnce(ctx context.Context, conv *conversation, ops []crdt.Op, announceOnly bool, key []byte) (blk dag.Block, at int, created bool, err error) {
	if c.revokedSelf.Load() {
		return dag.Block{}, 0, false, ErrDeviceRevoked
	}
	var name string
	if conv.acct == nil {
		name = c.profileName() // before conv.mu: it locks the account DAG
	}
	conv.mu.Lock()
	// Members seal new epochs to the prekey this device announced, and
	// show the name this account published.
	var pre []crdt.Op
	if ann, err := c.ownAnnounce(conv); err != nil {
		conv.mu.Unlock()
		return dag.Block{}, 0, false, err
	} else if ann != nil {
		pre = append(pre, ann)
	}
	if p := ownProfile(conv, crdt.AccountID(c.id.AccountID()), name); p != nil {
		pre = append(pre, p)
	}
	at = len(pre)
	if at > 0 {
		ops = append(pre, ops...)
	}
	if announceOnly && at == 0 {
		conv.mu.Unlock()
		return dag.Block{}, 0, false, nil
	}
	body, err := crdt.EncodeOps(ops)
	if err != nil {
		conv.mu.Unlock()
		return dag.Block{}, 0, false, err
	}
	blk, created, err = c.store.AppendOnce(ctx, conv.dagID, key, dag.Author{
		Signer: blockSigner{c.id.Keyring.Device},
		Sealer: convSealer{c: c, conv: conv, ctx: ctx},
		Cert:   c.id.Cert,
	}, body, c.now())
	if err == nil && !created {
		// Made by an earlier call under key: applied and published then
		// (or, after a crash, at the next start and by catch-up).
		conv.mu.Unlock()
		at, err = firstMessage(conv, blk)
		return blk, at, false, err
	}
	if err != nil {
		conv.mu.Unlock()
		return dag.Block{}, 0, false, fmt.Errorf("commit block: %w", err)
	}
	ev, _ := conv.event(blk)
	if err := conv.apply(ev); err != nil {
		c.log.Error("own block does not apply", "err", err)
	}
	if hasRotationOps([]crdt.Event{ev}) {
		c.noteRotations(conv)
	}
	c.noteRevocations(conv, []crdt.Event{ev})
	c.noteApplied(conv, []crdt.Event{ev})
	conv.mu.Unlock()
	c.publish(conv, blk)
	c.depositOffline(conv, blk)
	return blk, at, true, nil
}

// firstMessage is the index of the first message op of blk.
func firstMessage(conv *conversation, blk dag.Block) (int, error) {
	ev, err := conv.event(blk)
	if err != nil {
		return 0, fmt.Errorf("block %s: %w", blk.CID, err)
	}
	for i, op := range ev.Ops {
		if _, ok := op.(crdt.Message); ok {
			return i, nil
		}
	}
	return 0, fmt.Errorf("block %s holds no message", blk.CID)
}

// publish gossips a block on today's topic. With no peer on the topic the
// block stays in the outbox: catch-up delivers it when a member appears.
func (c *Chat) publish(conv *conversation, blk dag.Block) {
	env, err := blk.EnvelopeBytes()
	if err != nil {
		return
	}
	// The topic is the one of the epoch the block is sealed under: a
	// rotation goes out under the epoch it replaces, where the members
	// it removes (and those not yet on the new epoch's topics) read it.
	if len(blk.Envelope.Epoch) != keyring.EpochIDSize {
		return
	}
	conv.mu.Lock()
	name, _ := conv.topicName(keyring.EpochID(blk.Envelope.Epoch), c.now())
	jt := conv.topics[name]
	conv.mu.Unlock()
	if jt == nil && name != "" {
		// The first block under a new epoch: its topics are joined now.
		c.joinTopics(conv)
		conv.mu.Lock()
		jt = conv.topics[name]
		conv.mu.Unlock()
	}
	// Members connected to us but not (yet) in gossipsub's view of the
	// topic get the block through catch-up instead.
	if jt != nil {
		onTopic := map[peer.ID]bool{}
		for _, p := range jt.topic.ListPeers() {
			onTopic[p] = true
		}
		for _, p := range c.memberPeers(conv) {
			if !onTopic[p] {
				c.wg.Go(func() { c.syncWith(c.ctx, conv, p) })
			}
		}
	}
	if jt == nil || len(jt.topic.ListPeers()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if c.onPublish != nil {
		c.onPublish(blk)
	}
	c.checkLinks(conv)
	if err := jt.topic.Publish(ctx, env); err != nil {
		c.log.Debug("publish", "conv", conv.hexID, "err", err)
		return
	}
	if blk.Inner.Author == dag.DeviceID(c.id.DeviceID()) {
		c.confirmDelivery(conv)
	}
	// Handed to at least one member's device: "sent". (Delivered and read
	// come from the recipients' receipts.)
	if blk.Inner.Author == dag.DeviceID(c.id.DeviceID()) {
		conv.mu.Lock()
		conv.ackedSeq = max(conv.ackedSeq, blk.Inner.Seq)
		conv.mu.Unlock()
	}
}

// Send posts a text message.
func (c *Chat) Send(ctx context.Context, hexID, text string, replyTo *crdt.MsgID) (crdt.MsgID, error) {
	id, _, err := c.SendOnce(ctx, hexID, text, replyTo, "")
	return id, err
}

// sendKey is the idempotency key of a send under a client id.
func sendKey(clientID string) []byte { return []byte("send/" + clientID) }

// SendOnce posts a text message under a client id ("": none, as Send).
// The id is committed with the message's block, so a second SendOnce with
// it in the conversation returns the first one's message (created false)
// and posts nothing: a client can retry a send whose answer it lost, or
// that a crash of either side interrupted, without making a duplicate.
func (c *Chat) SendOnce(ctx context.Context, hexID, text string, replyTo *crdt.MsgID, clientID string) (id crdt.MsgID, created bool, err error) {
	return c.postOnce(ctx, hexID, crdt.Message{Text: text, ReplyTo: replyTo}, clientID)
}

// postOnce is SendOnce of any message: text, or an attachment with an
// optional caption.
func (c *Chat) postOnce(ctx context.Context, hexID string, msg crdt.Message, clientID string) (id crdt.MsgID, created bool, err error) {
	text := msg.Text
	conv, err := c.conversation(hexID)
	if err != nil {
		return crdt.MsgID{}, false, err
	}
	var key []byte
	if clientID != "" {
		key = sendKey(clientID)
		// The usual retry: answered at once, before the checks below
		// (which may wait for a conversation still arriving).
		if cid, err := c.store.Once(ctx, conv.dagID, key); err == nil {
			blk, err := c.store.Get(ctx, conv.dagID, cid)
			if err != nil {
				return crdt.MsgID{}, false, err
			}
			at, err := firstMessage(conv, blk)
			if err != nil {
				return crdt.MsgID{}, false, err
			}
			id = crdt.MsgID{Event: blk.CID, Index: uint16(at)}
			c.rememberClientID(id, clientID)
			return id, false, nil
		} else if !errors.Is(err, dag.ErrNotFound) {
			return crdt.MsgID{}, false, err
		}
	}
	if strings.TrimSpace(text) == "" && len(msg.Attachment) == 0 {
		return crdt.MsgID{}, false, ErrEmptyMessage
	}
	if c.blockedDirect(conv) {
		return crdt.MsgID{}, false, ErrContactBlocked
	}
	if len(text) > MaxMessageText {
		return crdt.MsgID{}, false, fmt.Errorf("%w: %d bytes > %d", ErrMessageTooLong, len(text), MaxMessageText)
	}
	if err := c.requireSynced(ctx, conv); err != nil {
		return crdt.MsgID{}, false, err
	}
	if err := c.ensureUsableEpoch(ctx, conv); err != nil {
		return crdt.MsgID{}, false, err
	}
	blk, at, created, err := c.commitOwnOnce(ctx, conv, []crdt.Op{msg}, false, key)
	if err != nil {
		return crdt.MsgID{}, false, err
	}
	id = crdt.MsgID{Event: blk.CID, Index: uint16(at)}
	if clientID != "" {
		c.rememberClientID(id, clientID)
	}
	if created {
		c.events.publish(Event{Kind: "message", Conversation: hexID, Message: id.String()})
	}
	return id, created, nil
}

// recentClientIDs bounds the client ids of recent sends that message views
// show (the store keeps the id-to-message direction for good).
const recentClientIDs = 4096

// rememberClientID notes the client id of a message sent from this node,
// for the message views: the client that sent it recognises its message
// in a page without waiting for the answer to its send.
func (c *Chat) rememberClientID(id crdt.MsgID, clientID string) {
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	if c.clientIDs == nil {
		c.clientIDs = make(map[crdt.MsgID]string)
	}
	if _, ok := c.clientIDs[id]; ok {
		return
	}
	if len(c.clientOrder) >= recentClientIDs {
		delete(c.clientIDs, c.clientOrder[0])
		c.clientOrder = c.clientOrder[1:]
	}
	c.clientIDs[id] = clientID
	c.clientOrder = append(c.clientOrder, id)
}

// clientID is the client id of a recent send of id ("" if none).
func (c *Chat) clientID(id crdt.MsgID) string {
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	return c.clientIDs[id]
}

// confirmAfter is how long after publishing one of its blocks a device
// checks with the connected members by a catch-up session: a gossiped block
// can be dropped (a receiver's full validation queue, a mesh still forming
// after a restart) and nothing else would notice before anti-entropy.
// Sessions are coalesced per peer and conversation (at most one a second)
// and cost one round trip when nothing is missing.
const confirmAfter = 3 * time.Second

// maxConfirmPeers bounds the confirmation sessions per block; larger groups
// rely on gossip and anti-entropy.
const maxConfirmPeers = 16

func (c *Chat) confirmDelivery(conv *conversation) {
	conv.mu.Lock()
	pending := conv.confirmPending
	conv.confirmPending = true
	conv.mu.Unlock()
	if pending {
		return // one check covers every block published until it runs
	}
	c.wg.Go(func() {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(confirmAfter):
		}
		conv.mu.Lock()
		conv.confirmPending = false
		conv.mu.Unlock()
		peers := c.memberPeers(conv)
		if len(peers) > maxConfirmPeers {
			return
		}
		for _, p := range peers {
			c.wg.Go(func() { c.syncWith(c.ctx, conv, p) })
		}
	})
}

// MarkRead records that the user has read everything in the conversation.
func (c *Chat) MarkRead(ctx context.Context, hexID string) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	if err := c.requireSynced(ctx, conv); err != nil {
		return err
	}
	pos, err := c.position(ctx, conv)
	if err != nil {
		return err
	}
	_, err = c.commitOwn(ctx, conv, []crdt.Op{crdt.Receipt{Read: true, Upto: pos}})
	return err
}

// requireSynced refuses to write into a conversation whose first block has
// not arrived yet (right after a welcome): a block written then would be a
// second root.
func (c *Chat) requireSynced(ctx context.Context, conv *conversation) error {
	heads, err := c.store.Heads(ctx, conv.dagID)
	if err != nil || len(heads) > 0 {
		return err
	}
	// Right after a welcome the first block is usually a round trip away.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.synced(wctx, conv); err != nil {
		return ErrNotSynced
	}
	return nil
}

// synced waits until a conversation's first block is held.
func (c *Chat) synced(ctx context.Context, conv *conversation) error {
	for {
		if heads, err := c.store.Heads(ctx, conv.dagID); err != nil || len(heads) > 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the conversation's first block: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Chat) position(ctx context.Context, conv *conversation) (crdt.Position, error) {
	vec, err := c.store.SeqVector(ctx, conv.dagID)
	if err != nil {
		return nil, err
	}
	pos := make(crdt.Position, 0, len(vec))
	for d, s := range vec {
		pos = append(pos, crdt.DevSeq{Device: crdt.DeviceID(d), Seq: s})
	}
	slices.SortFunc(pos, func(a, b crdt.DevSeq) int { return slices.Compare(a.Device[:], b.Device[:]) })
	return pos, nil
}

// scheduleDeliveryReceipt batches delivery receipts: one block per second
// at most, covering everything committed by then.
func (c *Chat) scheduleDeliveryReceipt(conv *conversation) {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if conv.receipt != nil {
		return
	}
	c.log.Debug("delivery receipt scheduled", "conv", conv.hexID)
	conv.receipt = time.AfterFunc(time.Second, func() {
		conv.mu.Lock()
		conv.receipt = nil
		conv.mu.Unlock()
		if c.blockedDirect(conv) {
			return // a blocked contact learns nothing of what arrived
		}
		pos, err := c.position(c.ctx, conv)
		if err != nil || c.ctx.Err() != nil {
			return
		}
		if _, err := c.commitOwn(c.ctx, conv, []crdt.Op{crdt.Receipt{Upto: pos}}); err != nil && c.ctx.Err() == nil {
			c.log.Warn("delivery receipt", "conv", conv.hexID, "err", err)
		} else {
			c.log.Debug("delivery receipt committed", "conv", conv.hexID)
		}
	})
}
