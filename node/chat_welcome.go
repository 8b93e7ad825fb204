package node

// Welcomes: how a member gets a conversation's epoch (and, added later,
// its root secret and history) over /glitr/welcome/1.0.0.

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
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

// sendWelcome delivers an epoch's welcome to a member, retrying with
// backoff until it gets through (the member may be offline); with history,
// it then streams the conversation's blocks (a member added later).
func (c *Chat) sendWelcome(ctx context.Context, conv *conversation, to card.Verified, parts [][]byte, history bool) {
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
			if err = c.history.Send(ctx, conv.id, to.Peer.ID); err != nil {
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
		c.net.Host.Peerstore().AddAddrs(to.ID, to.Addrs, time.Hour)
	}
	return request.Ack(ctx, c.net.Host, to.ID, WelcomeProtocol, w, 20*time.Second)
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
	if err := card.Dec.Unmarshal(b, &w); err != nil {
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
	r, epoch, err := c.welcomeEpoch(w, true)
	if err != nil {
		return err
	}
	if epoch == nil {
		return errors.New("no box for this device")
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
	c.history.Welcomed(w.Conversation, from)
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
	return nil
}

// welcomeEpoch checks the rotation parts of w until the one with a box for
// this device (signed by a contact's device, for w's conversation; for a
// new conversation, refuseBlocked: not by a blocked contact) and opens its
// epoch. No part for this device: a nil epoch and no error.
func (c *Chat) welcomeEpoch(w Welcome, refuseBlocked bool) (keyring.Rotation, *keyring.Epoch, error) {
	for _, part := range w.Rotation {
		r, err := keyring.VerifyRotation(part)
		if err != nil {
			return keyring.Rotation{}, nil, err
		}
		if string(r.Conversation) != string(w.Conversation) {
			return keyring.Rotation{}, nil, errors.New("rotation for another conversation")
		}
		if !c.isContactDevice(r.Rotator) {
			return keyring.Rotation{}, nil, ErrNotContact
		}
		if refuseBlocked && c.blockedDevice(r.Rotator) {
			return keyring.Rotation{}, nil, ErrContactBlocked // no new conversations from a blocked contact
		}
		if !r.HasBoxFor(c.id.DeviceID()) {
			continue
		}
		c.idMu.Lock()
		epoch, err := keyring.OpenEpoch(r, c.id.DeviceID(), c.id.Keyring.Prekeys)
		c.idMu.Unlock()
		if err != nil {
			return keyring.Rotation{}, nil, err
		}
		return r, epoch, nil
	}
	return keyring.Rotation{}, nil, nil
}

// rejoin installs the epoch of a welcome into a conversation we already
// hold (we were removed and are added again), and takes the history we
// missed from the welcomer.
func (c *Chat) rejoin(conv *conversation, from peer.ID, w Welcome) error {
	_, epoch, err := c.welcomeEpoch(w, false)
	if err != nil || epoch == nil {
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
	c.history.Welcomed(w.Conversation, from)
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
