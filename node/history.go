package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// History for a member added to an existing conversation. The newcomer
// holds no key for the blocks written before it joined (epoch secrets are
// wiped once installed, for forward secrecy), yet a replica must hold every
// ancestor of what it commits. So the admin who adds it, right after the
// welcome, streams the conversation's blocks as stored: each envelope with
// its inner block. The newcomer accepts this stream only from the device
// that welcomed it, checks every inner block's author signature (the
// adder cannot forge what others wrote), commits them in order and applies
// them; from then on it syncs like any member, under the new epoch.

// HistoryProtocol carries a conversation's history to an added member.
const HistoryProtocol = "/glitr/history/1.0.0"

const (
	maxHistoryFrame  = 4 << 20 // bytes of one frame
	historyBatch     = 512     // blocks per frame
	maxHistoryBlocks = 1 << 22 // blocks of one transfer
)

// HistoryRequestProtocol asks a device that holds a conversation's
// history to stream it: a block sealed under an epoch this device never got
// (a message written concurrently with the rotation that added it) can
// only be read through a device that opened it. Another device of this
// account is asked first, then the member who welcomed this device, then
// any connected member; each answers only a current member.
const HistoryRequestProtocol = "/glitr/history-request/1.0.0"

// historyRequestEvery spaces a device's history requests per conversation;
// while one is answered (up to historyAnswerWait) no other is made.
const historyRequestEvery = 3 * time.Second

// historyAnswerWait is how long a history stream is accepted from a member
// this device asked for it.
const historyAnswerWait = 2 * time.Minute

// requestHistory asks a connected device that holds conv's history to
// stream it here, unless a request is being answered or was made less than
// historyRequestEvery ago.
func (c *Chat) requestHistory(conv *conversation) {
	conv.mu.Lock()
	answering := conv.historyAsked != "" && time.Since(conv.historyAskedAt) < historyAnswerWait
	if answering || time.Since(conv.lastHistoryRequest) < historyRequestEvery {
		conv.mu.Unlock()
		return
	}
	conv.lastHistoryRequest = time.Now()
	conv.mu.Unlock()
	for _, p := range c.historySources(conv) {
		if c.n.Host.Network().Connectedness(p) != network.Connected {
			continue
		}
		conv.mu.Lock()
		conv.historyAsked, conv.historyAskedAt = p, time.Now()
		conv.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		err := c.askHistory(ctx, p, conv.id)
		cancel()
		if err == nil {
			return
		}
		c.historyAnswered(conv, p)
	}
}

// historySources lists, in the order to ask them, the peers that may hold
// conv's history: this account's other devices, the member that welcomed
// this device, then the other members this device knows a peer of.
func (c *Chat) historySources(conv *conversation) []peer.ID {
	out := c.ownDevicePeers()
	c.mu.RLock()
	welcomer, ok := c.welcomedBy[string(conv.id)]
	c.mu.RUnlock()
	if ok && !slices.Contains(out, welcomer) {
		out = append(out, welcomer)
	}
	for _, p := range c.memberPeers(conv) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// historyAnswered ends the wait for p's history stream.
func (c *Chat) historyAnswered(conv *conversation, p peer.ID) {
	conv.mu.Lock()
	if conv.historyAsked == p {
		conv.historyAsked = ""
	}
	conv.mu.Unlock()
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

func (c *Chat) askHistory(ctx context.Context, p peer.ID, conv []byte) error {
	return request.Ack(ctx, c.n.Host, p, HistoryRequestProtocol, conv, 10*time.Second)
}

// handleHistoryRequest streams a conversation's history to another device
// of this account, or to a contact that is a current member (an added
// member gets the history anyway; this hands over what it could not open).
func (c *Chat) handleHistoryRequest(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	own := c.isOwnDevicePeer(from)
	if !own && !c.requests.Allow(from) {
		s.Reset()
		c.n.Penalize(from, 5, "history requests over the rate limit")
		return
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	id := make([]byte, 17)
	n, _ := io.ReadFull(s, id)
	conv, err := c.conversationByID(id[:n])
	if err != nil || n != 16 || (!own && !c.isMemberPeer(conv, from)) {
		s.Reset()
		return
	}
	_, _ = s.Write([]byte{1})
	c.wg.Go(func() {
		if err := c.sendHistory(c.ctx, conv, from); err != nil && c.ctx.Err() == nil {
			c.log.Debug("history for another device", "conv", conv.hexID, "err", err)
		}
	})
}

// historyFrame is one frame: the conversation id (first frame only) and
// pairs of envelope and inner block bytes, oldest first. A frame without
// blocks ends the transfer.
type historyFrame struct {
	Conversation []byte      `cbor:"1,keyasint,omitempty"`
	Blocks       [][2][]byte `cbor:"2,keyasint,omitempty"`
}

var errHistoryRefused = errors.New("history refused")

func writeHistoryFrame(w io.Writer, f historyFrame) error {
	b, err := canonicalEnc.Marshal(f)
	if err != nil {
		return err
	}
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readHistoryFrame(r *bufio.Reader) (historyFrame, error) {
	var f historyFrame
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return f, err
	}
	if n > maxHistoryFrame {
		return f, fmt.Errorf("%w: history frame of %d bytes", ErrBadPeer, n)
	}
	// Read what arrives rather than allocate what the peer declared: a
	// three-byte prefix must not cost 4 MiB.
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return f, err
	}
	if uint64(len(b)) != n {
		return f, io.ErrUnexpectedEOF
	}
	if err := historyDec.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: history frame: %w", ErrBadPeer, err)
	}
	return f, nil
}

// sendHistory streams conv's stored blocks to p.
func (c *Chat) sendHistory(ctx context.Context, conv *conversation, p peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	s, err := c.n.Host.NewStream(network.WithAllowLimitedConn(ctx, "glitr-history"), p, HistoryProtocol)
	if err != nil {
		return err
	}
	defer s.Close()
	w := bufio.NewWriterSize(s, 256<<10)
	f := historyFrame{Conversation: conv.id}
	size := 0
	flush := func() error {
		_ = s.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := writeHistoryFrame(w, f); err != nil {
			return err
		}
		f, size = historyFrame{}, 0
		return nil
	}
	for b, err := range c.store.Blocks(ctx, conv.dagID, dag.Position{}, false) {
		if err != nil {
			s.Reset()
			return err
		}
		env, err := b.EnvelopeBytes()
		if err != nil {
			s.Reset()
			return err
		}
		inner, err := b.InnerBytes()
		if err != nil {
			s.Reset()
			return err
		}
		if size+len(env)+len(inner) > maxHistoryFrame-4096 || len(f.Blocks) == historyBatch {
			if err := flush(); err != nil {
				s.Reset()
				return err
			}
		}
		f.Blocks = append(f.Blocks, [2][]byte{env, inner})
		size += len(env) + len(inner) + 16
	}
	if len(f.Blocks) > 0 || f.Conversation != nil {
		if err := flush(); err != nil {
			s.Reset()
			return err
		}
	}
	if err := flush(); err != nil { // the empty frame: done
		s.Reset()
		return err
	}
	if err := w.Flush(); err != nil {
		s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.ReadFull(s, ack); err != nil || ack[0] != 1 {
		return fmt.Errorf("history not acknowledged: %w", err)
	}
	return nil
}

// handleHistory receives a history stream from the device that welcomed
// us into the conversation; from anyone else it is refused.
func (c *Chat) handleHistory(s network.Stream) {
	from := s.Conn().RemotePeer()
	r := bufio.NewReaderSize(s, 256<<10)
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, err := readHistoryFrame(r)
	if err != nil {
		s.Reset()
		return
	}
	conv, err := c.conversationByID(first.Conversation)
	c.mu.RLock()
	welcomer := c.welcomedBy[string(first.Conversation)]
	c.mu.RUnlock()
	asked := false
	if err == nil {
		conv.mu.Lock()
		asked = conv.historyAsked == from && time.Since(conv.historyAskedAt) < historyAnswerWait
		conv.mu.Unlock()
	}
	if err != nil || (welcomer != from && !asked && !c.isOwnDevicePeer(from)) {
		c.log.Info("history refused", "peer", from.String(), "err", errHistoryRefused)
		s.Reset()
		return
	}
	defer c.historyAnswered(conv, from)
	total := 0
	f := first
	for len(f.Blocks) > 0 {
		total += len(f.Blocks)
		if total > maxHistoryBlocks {
			c.n.Penalize(from, 20, "endless history")
			s.Reset()
			return
		}
		if err := c.ingestHistory(c.ctx, conv, from, f.Blocks); err != nil {
			c.log.Warn("history", "conv", conv.hexID, "peer", from.String(), "err", err)
			if errors.Is(err, ErrBadPeer) {
				c.n.Penalize(from, 20, err.Error())
			}
			s.Reset()
			return
		}
		_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
		if f, err = readHistoryFrame(r); err != nil {
			s.Reset()
			return
		}
	}
	c.mu.Lock()
	delete(c.welcomedBy, string(first.Conversation))
	c.mu.Unlock()
	_, _ = s.Write([]byte{1})
	_ = s.Close()
	c.log.Debug("history received", "conv", conv.hexID, "blocks", total)
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

// ingestHistory commits blocks whose inner bytes came with them: each is
// checked against its author's signature (and a first block against its
// device certificate) instead of being decrypted.
func (c *Chat) ingestHistory(ctx context.Context, conv *conversation, from peer.ID, pairs [][2][]byte) error {
	blocks := make([]dag.Block, 0, len(pairs))
	for _, p := range pairs {
		inner := p[1]
		blk, err := dag.OpenBlock(p[0], openerFunc(func(dag.Sealed) ([]byte, error) { return inner, nil }))
		if err != nil {
			return fmt.Errorf("%w: history block: %w", ErrBadPeer, err)
		}
		if err := dag.VerifySignature(blk.Inner); err != nil {
			return fmt.Errorf("%w: history block %s: %w", ErrBadPeer, blk.CID, err)
		}
		if blk.Inner.Seq == 1 {
			cert, err := keyring.VerifyCertificate(blk.Inner.Cert)
			if err != nil || cert.Device != keyring.DeviceID(blk.Inner.Author) {
				return fmt.Errorf("%w: history block %s: first block of a device without a valid certificate", ErrBadPeer, blk.CID)
			}
		}
		blocks = append(blocks, blk)
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

var historyDec = protocol.MustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	IndefLength:       cbor.IndefLengthForbidden,
	MaxNestedLevels:   4,
	MaxArrayElements:  historyBatch,
	MaxMapPairs:       16,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})
