package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
)

// Key upkeep: the schedules that keep forward secrecy and post-compromise
// security from decaying on a node that runs for months.
//
//   - Prekeys. A device's prekey is current for keyring.PrekeyRotationPeriod
//     and its private part is kept for keyring.PrekeyGracePeriod after its
//     successor appears; deleting it is what makes an epoch box recorded
//     today unopenable by a thief next month. The node rotates and prunes
//     while it runs (not only at start), announces the new prekey in every
//     conversation it belongs to, and contacts refresh each other's cards
//     (CardProtocol) whenever they connect, so new conversations and epochs
//     are sealed to a prekey the device still holds.
//   - Epochs. A conversation's epoch is replaced on the first send after it
//     is EpochMaxAge old or after this device sealed EpochMaxSends blocks
//     under it, as Megolm rotates its sessions. A thief of one device's key
//     state reads at most that much once the device and its prekeys have
//     moved on. The replacement is only made when it reaches every device
//     the current epoch reaches: one whose prekey expired (a phone left in a
//     drawer) would otherwise be locked out of the conversation. It comes
//     back with a fresh prekey, and the next send rotates.

const (
	// EpochMaxAge is how long a conversation keeps one epoch.
	EpochMaxAge = 7 * 24 * time.Hour
	// EpochMaxSends is how many blocks this device seals under one epoch
	// before the next send replaces it.
	EpochMaxSends = 1000
	// EpochHealBound is how much longer a due replacement waits for a
	// member device that has no valid prekey (one switched off for more
	// than two weeks); EpochMaxSends more blocks end the wait too. Then the
	// epoch is replaced without that device, which is sealed back in when
	// it returns and announces a fresh prekey (maybeHealEpoch), and gets
	// what it missed through the history. So no epoch outlives
	// EpochMaxAge+EpochHealBound (14 days) or 2·EpochMaxSends of this
	// device's blocks: the bound of post-compromise security.
	EpochHealBound = 7 * 24 * time.Hour
	// keyUpkeepEvery is how often a running node checks its prekey.
	keyUpkeepEvery = time.Hour
	// CardProtocol exchanges current contact cards between contacts.
	CardProtocol = "/glitr/card/1.0.0"
)

// ErrContactKeyExpired reports a contact whose stored prekey is past its
// validity: nothing can be sealed to it until the two devices meet (they
// swap current cards on connecting) or the contact writes in a shared
// conversation.
var ErrContactKeyExpired = errors.New("the contact's key has expired: it is renewed the next time you are both online")

// usableCard checks that a contact's card can receive an epoch now.
func usableCard(vc card.Verified, now time.Time) error {
	if err := vc.Prekey.ValidAt(now); err != nil {
		return fmt.Errorf("%w (%s): %w", ErrContactKeyExpired, vc.Cert.Account.String()[:16], err)
	}
	return nil
}

// epochDue reports whether an epoch created at created, under which this
// device sealed sent blocks, is due for replacement at now.
func epochDue(created, now time.Time, sent uint32) bool {
	return !now.Before(created.Add(EpochMaxAge)) || sent >= EpochMaxSends
}

// signedPrekeyCache holds this device's current prekey signed, so the
// announcement check on every own block costs no signature.
type signedPrekeyCache struct {
	id       keyring.PrekeyID
	signed   []byte
	verified keyring.SignedPrekey
}

// currentPrekey returns this device's current prekey, signed and verified.
func (c *Chat) currentPrekey() ([]byte, keyring.SignedPrekey, error) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	cur := c.id.Keyring.Prekeys.Current()
	if c.spk.signed != nil && c.spk.id == cur.ID() {
		return c.spk.signed, c.spk.verified, nil
	}
	signed, err := c.id.Keyring.Device.SignPrekey(cur)
	if err != nil {
		return nil, keyring.SignedPrekey{}, err
	}
	v, err := keyring.VerifyPrekey(signed)
	if err != nil {
		return nil, keyring.SignedPrekey{}, err
	}
	c.spk = signedPrekeyCache{id: cur.ID(), signed: signed, verified: v}
	return signed, v, nil
}

// keyUpkeep runs maintainKeys at start and then every keyUpkeepEvery.
func (c *Chat) keyUpkeep() {
	for {
		if err := c.maintainKeys(c.ctx); err != nil && c.ctx.Err() == nil {
			c.log.Warn("key upkeep", "err", err)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(keyUpkeepEvery):
		}
	}
}

// maintainKeys rotates this device's prekey when its period is over,
// deletes replaced prekeys whose grace period ended, and announces the
// current prekey in every conversation that does not have it yet.
func (c *Chat) maintainKeys(ctx context.Context) error {
	now := c.now()
	c.idMu.Lock()
	ring := c.id.Keyring.Prekeys
	held := ring.Len()
	rotated := false
	if ring.NeedsRotation(now) {
		if _, err := ring.Rotate(rand.Reader, now); err != nil {
			c.idMu.Unlock()
			return fmt.Errorf("rotate prekey: %w", err)
		}
		rotated = true
	}
	ring.Prune(now)
	var err error
	if rotated || ring.Len() != held {
		err = c.id.Save()
	}
	c.idMu.Unlock()
	if err != nil {
		return fmt.Errorf("save keyring after prekey upkeep: %w", err)
	}
	if rotated {
		c.log.Info("prekey rotated")
	}
	return c.announcePrekey(ctx)
}

// announcePrekey commits this device's announcement, alone, in every
// conversation it belongs to whose members do not have its current prekey.
func (c *Chat) announcePrekey(ctx context.Context) error {
	if c.revokedSelf.Load() {
		return nil // a revoked device writes nothing more
	}
	convs := c.conversationList()
	for _, conv := range convs {
		if err := c.announcePrekeyIn(ctx, conv); err != nil {
			return err
		}
	}
	return nil
}

// announcePrekeyIn commits this device's announcement and this account's
// display name, alone, in conv if this device is a member that can write
// there and conv lacks either.
func (c *Chat) announcePrekeyIn(ctx context.Context, conv *conversation) error {
	if c.revokedSelf.Load() {
		return nil
	}
	name := c.profileName()
	self := crdt.AccountID(c.id.AccountID())
	conv.mu.Lock()
	member, _ := conv.state.IsMember(self)
	ann, err := c.ownAnnounce(conv)
	profile := ownProfile(conv, self, name)
	_, _, sending := conv.cipher.Sent()
	conv.mu.Unlock()
	if err != nil || !member || (ann == nil && profile == nil) || !sending {
		return err
	}
	if _, _, err := c.commitOwnAt(ctx, conv, nil, true); err != nil && ctx.Err() == nil {
		return fmt.Errorf("announce prekey in %s: %w", conv.hexID, err)
	}
	return nil
}

// epochStale reports whether the conversation's current epoch is due for
// replacement and a replacement would reach every device it reaches.
// conv.mu is held.
func (c *Chat) epochStale(conv *conversation, cur crdt.RotationView) bool {
	// Every send asks; the rotation's signature is checked once per
	// current rotation, not per message.
	if !conv.curRotation.Equals(cur.Event) || conv.curRotationOp != cur.Op {
		r, err := keyring.VerifyRotation(cur.Payload)
		if err != nil {
			return false
		}
		conv.curRotation, conv.curRotationOp = cur.Event, cur.Op
		conv.curEpoch, conv.curEpochCreated = r.Epoch, r.Created
	}
	var sent uint32
	if id, n, ok := conv.cipher.Sent(); ok && id == conv.curEpoch {
		sent = n
	}
	now := c.now()
	if !epochDue(conv.curEpochCreated, now, sent) {
		return false
	}
	_, next, err := c.memberRecipients(conv, nil, now)
	if err != nil {
		return false
	}
	reached := map[crdt.DeviceID]bool{}
	for _, d := range next {
		reached[d.Device] = true
	}
	overdue := !now.Before(conv.curEpochCreated.Add(EpochMaxAge+EpochHealBound)) || sent >= 2*EpochMaxSends
	for _, d := range cur.Recipients {
		if reached[d.Device] {
			continue
		}
		member, _ := conv.state.IsMember(d.Account)
		_, revoked := conv.revoked[keyring.DeviceID(d.Device)]
		if !member || revoked {
			continue
		}
		if !overdue {
			c.log.Debug("epoch replacement postponed: a member device has no current prekey", "conv", conv.hexID, "device", keyring.DeviceID(d.Device).String())
			return false
		}
		c.log.Info("epoch replaced without a member device that has no current prekey: it is sealed back in when it returns", "conv", conv.hexID, "device", keyring.DeviceID(d.Device).String())
	}
	return true
}

// refreshCard swaps current cards with a contact's device over
// CardProtocol: ours goes out, theirs comes back and replaces the stored
// one when its prekey is newer.
func (c *Chat) refreshCard(ctx context.Context, p peer.ID) error {
	mine, err := c.cardBytes()
	if err != nil {
		return err
	}
	b, err := request.Exchange(ctx, c.net.Host, p, CardProtocol, mine, request.MaxSize, 10*time.Second)
	if errors.Is(err, request.ErrTooLong) {
		return fmt.Errorf("card from %s: %w: too long", p, card.ErrBadCard)
	}
	if err != nil {
		return fmt.Errorf("card from %s: %w", p, err)
	}
	return c.takeCard(ctx, p, b)
}

// handleCardRequest answers a contact's card with ours. Anyone else gets
// the stream reset: a card names the account, which strangers must not
// learn from a peer id.
func (c *Chat) handleCardRequest(s network.Stream) {
	from := s.Conn().RemotePeer()
	b, ok := c.requests.Read(s, "card", 10*time.Second)
	if !ok {
		return
	}
	if err := c.takeCard(c.ctx, from, b); err != nil {
		c.log.Debug("card refresh refused", "peer", from.String(), "err", err)
		s.Reset()
		return
	}
	mine, err := c.cardBytes()
	if err != nil {
		s.Reset()
		return
	}
	if _, err := s.Write(mine); err != nil {
		s.Reset()
		return
	}
	_ = s.Close()
}

// cardBytes is this device's current card (without addresses: contacts
// find those through discovery), CBOR-encoded.
func (c *Chat) cardBytes() ([]byte, error) {
	signed, _, err := c.currentPrekey()
	if err != nil {
		return nil, err
	}
	return canonicalEnc.Marshal(card.Card{Cert: c.id.Cert, Prekey: signed, Peer: []byte(c.net.Host.ID())})
}

// errNotThisContact refuses a card that is not the one stored contact's
// device speaking for itself.
var errNotThisContact = fmt.Errorf("%w: not from the contact's own device", card.ErrBadCard)

// takeCard checks a card received from peer from and stores it when it
// belongs to a contact (same account, device and peer as the stored card)
// and carries a newer prekey.
func (c *Chat) takeCard(ctx context.Context, from peer.ID, b []byte) error {
	var cd card.Card
	if err := card.Dec.Unmarshal(b, &cd); err != nil {
		return fmt.Errorf("%w: %w", card.ErrBadCard, err)
	}
	// Signatures first (who is speaking); a card whose prekey is out of
	// date still identifies the contact, it is just not taken.
	vc, err := card.Verify(cd, time.Time{})
	if err != nil {
		return err
	}
	c.mu.RLock()
	old, ok := c.contacts[vc.Cert.Account]
	c.mu.RUnlock()
	if !ok || vc.Peer.ID != from || old.Peer.ID != from || old.Cert.Device != vc.Cert.Device {
		return errNotThisContact
	}
	now := c.now()
	if !vc.Prekey.Created.After(old.Prekey.Created) || vc.Prekey.ValidAt(now) != nil || vc.Cert.ValidAt(now) != nil {
		return nil
	}
	// Keep the addresses we know; the card carries none.
	vc.Raw.Addrs = old.Raw.Addrs
	vc.Peer.Addrs = old.Peer.Addrs
	if err := c.putContactCard(ctx, vc); err != nil {
		return err
	}
	c.mu.Lock()
	if cur, ok := c.contacts[vc.Cert.Account]; ok && cur.Cert.Device == vc.Cert.Device && vc.Prekey.Created.After(cur.Prekey.Created) {
		c.contacts[vc.Cert.Account] = vc
	}
	c.mu.Unlock()
	c.log.Debug("contact card refreshed", "account", vc.Cert.Account.String()[:16])
	return nil
}

// putContactCard stores a contact's card.
func (c *Chat) putContactCard(ctx context.Context, vc card.Verified) error {
	raw, err := canonicalEnc.Marshal(vc.Raw)
	if err != nil {
		return err
	}
	return c.ds.Put(ctx, contactKey(vc.Cert.Account), raw)
}

// contactKey is where a contact's card is stored.
func contactKey(a keyring.AccountID) ds.Key {
	return contactPrefix.ChildString(hex.EncodeToString(a[:]))
}
