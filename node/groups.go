package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
)

// Epochs and membership. A conversation's key changes with a Rotation op
// (keyring.NewRotation, sealed with HPKE to every member device's announced
// prekey). Every replica installs the epochs sealed to it as the rotation
// blocks commit, and seals its own blocks under the epoch the CRDT picks
// (crdt.Conversation.CurrentEpoch: the untainted rotation with the greatest
// Lamport clock), so concurrent rotations converge. Adding a member rotates
// so the newcomer gets a key; removing one rotates so the removed member
// reads nothing sent afterwards.

// ownAnnounce is this device's DeviceAnnounce with its current signed
// prekey, or nil when the conversation already has exactly that one.
// conv.mu is held.
func (c *Chat) ownAnnounce(conv *conversation) (crdt.Op, error) {
	if conv.acct != nil {
		return nil, nil // the account DAG records devices with DeviceAdd
	}
	signed, _, err := c.currentPrekey()
	if err != nil {
		return nil, err
	}
	self := crdt.AccountID(c.id.AccountID())
	me := []byte(c.net.Host.ID())
	for _, d := range conv.state.Devices(self) {
		if d.Device == crdt.DeviceID(c.id.DeviceID()) && bytes.Equal(d.Prekey, signed) && bytes.Equal(d.Peer, me) && bytes.Equal(d.Mailbox, c.mailboxAddr) {
			return nil, nil
		}
	}
	return crdt.DeviceAnnounce{Account: self, Device: crdt.DeviceID(c.id.DeviceID()), Cert: c.id.Cert, Prekey: signed, Peer: me, Mailbox: c.mailboxAddr}, nil
}

// ownProfile is the MemberProfile op that publishes name in conv, or nil
// when conv shows it already (or there is no name). conv.mu is held.
func ownProfile(conv *conversation, self crdt.AccountID, name string) crdt.Op {
	if conv.acct != nil || name == "" || conv.state.MemberName(self) == name {
		return nil
	}
	return crdt.MemberProfile{Name: name}
}

// profileName is this account's display name ("" if none yet).
func (c *Chat) profileName() string {
	c.mu.RLock()
	acct := c.account
	c.mu.RUnlock()
	if acct == nil {
		return ""
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	name, _, _ := acct.acct.Profile()
	return name
}

// hasRotationOps reports whether events carry rotations or membership
// changes, the only ops that can change which epoch to use.
func hasRotationOps(events []crdt.Event) bool {
	for _, ev := range events {
		for _, op := range ev.Ops {
			switch op.(type) {
			case crdt.Rotation, crdt.RemoveMember, crdt.AddMember, crdt.DeviceAnnounce:
				return true
			}
		}
	}
	return false
}

// noteRotations installs the epochs sealed to this device and switches
// sending to the CRDT's current epoch. conv.mu is held. It reports whether
// an epoch was installed (blocks under it may have been refused before).
//
// Only the newest keyring.MaxEpochs rotations sealed to this device are
// considered, oldest first: the cipher holds no more, and an older one was
// dropped to make room. Rotations are in (Lamport, CID, op) order, which a
// new arrival does not change, so a rotation that left that window never
// comes back into it; one dropped inside it (installed out of that order)
// is on the cipher's record and is not installed again either, since that
// would restart its chains and re-derive message keys already used.
func (c *Chat) noteRotations(conv *conversation) (installed bool) {
	if conv.acct != nil {
		return false
	}
	self := c.id.DeviceID()
	rots := conv.state.Rotations()
	window := make([]keyring.Rotation, 0, keyring.MaxEpochs)
	for i := len(rots) - 1; i >= 0 && len(window) < keyring.MaxEpochs; i-- {
		rv := rots[i]
		r, err := keyring.VerifyRotation(rv.Payload)
		if err != nil || !bytes.Equal(r.Conversation, conv.id) || r.Rotator != keyring.DeviceID(rv.Device) || !r.HasBoxFor(self) {
			continue
		}
		window = append(window, r)
	}
	for i := len(window) - 1; i >= 0; i-- {
		r := window[i]
		if conv.cipher.HasEpoch(r.Epoch) || conv.cipher.WasDropped(r.Epoch) {
			continue
		}
		c.idMu.Lock()
		ep, err := keyring.OpenEpoch(r, self, c.id.Keyring.Prekeys)
		c.idMu.Unlock()
		if err != nil {
			c.log.Warn("cannot open an epoch sealed to this device", "conv", conv.hexID, "epoch", r.Epoch.String(), "err", err)
			continue
		}
		if err := conv.cipher.Install(ep); err != nil {
			c.log.Warn("install epoch", "conv", conv.hexID, "err", err)
			continue
		}
		installed = true
	}
	if cur, ok := conv.state.CurrentEpoch(); ok {
		if r, err := keyring.VerifyRotation(cur.Payload); err == nil && conv.cipher.HasEpoch(r.Epoch) {
			prev, _, _ := conv.cipher.Sent()
			if err := conv.cipher.SetSendingEpoch(r.Epoch); err != nil {
				c.log.Warn("switch sending epoch", "conv", conv.hexID, "err", err)
			} else if prev != r.Epoch {
				c.topicsChanged(conv)
			}
		}
	}
	if installed {
		if err := c.persistKeys(c.ctx, conv, true); err != nil {
			c.log.Error("persist key state", "conv", conv.hexID, "err", err)
		}
		// A device that just got a key of a conversation announces its
		// prekey there at once (if it has not yet), so members that do
		// not know it as a contact can seal the next epochs to it.
		c.wg.Go(func() { c.announcePrekeyIn(c.ctx, conv) })
	}
	c.maybeHealEpoch(conv)
	return installed
}

// maybeHealEpoch schedules a rotation when the current epoch leaves out a
// device that belongs in it: two rotations made concurrently (a device
// linked on each side of a conversation, say) each seal to the devices
// their author knew, and the one the CRDT picks may miss the other's new
// device, which would then read nothing. Every member that notices waits a
// random moment and, if the gap is still there, seals a new epoch to every
// device it knows; the CRDT picks one, and it covers them all. conv.mu is
// held.
func (c *Chat) maybeHealEpoch(conv *conversation) {
	if conv.acct != nil || conv.healPending {
		return
	}
	cur, ok := conv.state.CurrentEpoch()
	if !ok {
		return
	}
	if member, _ := conv.state.IsMember(crdt.AccountID(c.id.AccountID())); !member {
		return
	}
	if len(c.missingFromEpoch(conv, cur)) == 0 {
		return
	}
	conv.healPending = true
	c.wg.Go(func() {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(500*time.Millisecond + time.Duration(mrand.Int64N(int64(1500*time.Millisecond)))):
		}
		conv.mu.Lock()
		conv.healPending = false
		cur, ok := conv.state.CurrentEpoch()
		missing := ok && len(c.missingFromEpoch(conv, cur)) > 0
		conv.mu.Unlock()
		if !missing {
			return
		}
		if _, err := c.rotate(c.ctx, conv, nil, nil, nil); err != nil && c.ctx.Err() == nil {
			c.log.Warn("seal a new epoch to devices the current one misses", "conv", conv.hexID, "err", err)
		}
	})
}

// missingFromEpoch lists the devices of members, certified by their
// account and not revoked, that the rotation rv was not sealed to. conv.mu
// is held.
func (c *Chat) missingFromEpoch(conv *conversation, rv crdt.RotationView) []crdt.DeviceID {
	sealed := map[crdt.DeviceID]bool{}
	for _, r := range rv.Recipients {
		sealed[r.Device] = true
	}
	now := c.now()
	var out []crdt.DeviceID
	for _, m := range conv.state.Members() {
		for _, d := range conv.state.Devices(m.Account) {
			if sealed[d.Device] || len(d.Prekey) == 0 {
				continue
			}
			if _, revoked := conv.revoked[keyring.DeviceID(d.Device)]; revoked {
				continue
			}
			cert, err := keyring.VerifyCertificate(d.Cert)
			if err != nil || cert.Device != keyring.DeviceID(d.Device) || cert.Account != keyring.AccountID(m.Account) || cert.ValidAt(now) != nil {
				continue
			}
			// Only a device a new epoch could be sealed to counts, or
			// healing would rotate again and again.
			if spk, err := keyring.VerifyPrekey(d.Prekey); err != nil || spk.Device != keyring.DeviceID(d.Device) || spk.ValidAt(now) != nil {
				continue
			}
			out = append(out, d.Device)
		}
	}
	return out
}

// memberRecipients returns the verified prekeys of every device of every
// member (from the devices' announcements, or a contact card when that
// is newer), this device's own first, plus the crdt recipients list.
// conv.mu is held.
func (c *Chat) memberRecipients(conv *conversation, extra []card.Verified, now time.Time) ([]keyring.SignedPrekey, []crdt.Recipient, error) {
	own, err := c.ownPrekey()
	if err != nil {
		return nil, nil, err
	}
	selfAcct, selfDev := c.id.AccountID(), c.id.DeviceID()
	keys := map[keyring.DeviceID]keyring.SignedPrekey{selfDev: own}
	accountOf := map[keyring.DeviceID]keyring.AccountID{selfDev: selfAcct}
	consider := func(a keyring.AccountID, spk keyring.SignedPrekey) {
		if spk.ValidAt(now) != nil {
			return
		}
		if cur, ok := keys[spk.Device]; !ok || spk.Created.After(cur.Created) {
			keys[spk.Device] = spk
			accountOf[spk.Device] = a
		}
	}
	for _, m := range conv.state.Members() {
		a := keyring.AccountID(m.Account)
		for _, d := range conv.state.Devices(m.Account) {
			if d.Device == crdt.DeviceID(selfDev) || len(d.Prekey) == 0 {
				continue
			}
			if _, revoked := conv.revoked[keyring.DeviceID(d.Device)]; revoked {
				continue
			}
			// A device counts only with a certificate from the member's
			// account root: anyone can announce a device in the name of
			// an account, nobody can certify it without that root.
			cert, err := keyring.VerifyCertificate(d.Cert)
			if err != nil || cert.Device != keyring.DeviceID(d.Device) || cert.Account != a || cert.ValidAt(now) != nil {
				continue
			}
			if spk, err := keyring.VerifyPrekey(d.Prekey); err == nil && spk.Device == keyring.DeviceID(d.Device) {
				consider(a, spk)
			}
		}
		c.mu.RLock()
		vc, ok := c.contacts[a]
		c.mu.RUnlock()
		if ok && a != selfAcct {
			consider(a, vc.Prekey)
		}
	}
	for _, vc := range extra {
		consider(vc.Cert.Account, vc.Prekey)
	}
	for d := range conv.revoked {
		delete(keys, d) // a contact's card may name a revoked device
	}
	recips := []keyring.SignedPrekey{own}
	crdtRecips := []crdt.Recipient{{Account: crdt.AccountID(selfAcct), Device: crdt.DeviceID(selfDev)}}
	for d, spk := range keys {
		if d == selfDev {
			continue
		}
		recips = append(recips, spk)
		crdtRecips = append(crdtRecips, crdt.Recipient{Account: crdt.AccountID(accountOf[d]), Device: crdt.DeviceID(d)})
	}
	return recips, crdtRecips, nil
}

// rotate commits ops together with a new epoch sealed to the members
// (after ops take effect: extra are newcomers, drop are removed accounts).
func (c *Chat) rotate(ctx context.Context, conv *conversation, ops []crdt.Op, extra []card.Verified, drop map[keyring.AccountID]bool) ([][]byte, error) {
	now := c.now()
	conv.mu.Lock()
	recips, crdtRecips, err := c.memberRecipients(conv, extra, now)
	var prev []keyring.EpochID
	if cur, ok := conv.state.CurrentEpoch(); ok {
		if r, err := keyring.VerifyRotation(cur.Payload); err == nil {
			prev = append(prev, r.Epoch)
		}
	}
	conv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if len(drop) > 0 {
		keptK, keptR := recips[:0], crdtRecips[:0]
		for i, r := range crdtRecips {
			if !drop[keyring.AccountID(r.Account)] {
				keptK, keptR = append(keptK, recips[i]), append(keptR, r)
			}
		}
		recips, crdtRecips = keptK, keptR
	}
	parts, epoch, err := keyring.NewRotation(rand.Reader, c.id.Keyring.Device, keyring.RotationParams{
		Conversation: conv.id, Prev: prev, Recipients: recips, Created: now,
	})
	if err != nil {
		return nil, fmt.Errorf("seal a new epoch: %w", err)
	}
	conv.mu.Lock()
	err = conv.cipher.Install(epoch)
	conv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		ops = append(ops, crdt.Rotation{Payload: p, Recipients: crdtRecips})
	}
	// The rotation block itself is sealed under the current epoch, so every
	// current member (the removed one too) learns of the change; everything
	// after it is sealed under the new one.
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return nil, err
	}
	return parts, nil
}

// announceOf announces another device (a newcomer's, a linked or returning
// one) with its certificate and prekey, so every member can seal the next
// epochs to it before it writes anything itself.
func announceOf(vc card.Verified) crdt.Op {
	return crdt.DeviceAnnounce{Account: crdt.AccountID(vc.Cert.Account), Device: crdt.DeviceID(vc.Cert.Device), Cert: vc.Raw.Cert, Prekey: vc.Raw.Prekey, Peer: vc.Raw.Peer}
}

// requireAdmin checks that this account may change the membership.
func (c *Chat) requireAdmin(conv *conversation) error {
	conv.mu.Lock()
	member, admin := conv.state.IsMember(crdt.AccountID(c.id.AccountID()))
	conv.mu.Unlock()
	switch {
	case !member:
		return ErrNotMember
	case !admin:
		return ErrNotAdmin
	}
	return nil
}

// AddMember adds a contact to a conversation: a new epoch sealed to every
// member device and the newcomer's, a welcome, and the history so far
// (history.go), since the newcomer cannot open the blocks written before.
func (c *Chat) AddMember(ctx context.Context, hexID string, account keyring.AccountID) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	if err := c.requireAdmin(conv); err != nil {
		return err
	}
	c.mu.RLock()
	vc, ok := c.contacts[account]
	c.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotContact, account.String()[:16])
	}
	if err := usableCard(vc, c.now()); err != nil {
		return err
	}
	conv.mu.Lock()
	already, _ := conv.state.IsMember(crdt.AccountID(account))
	conv.mu.Unlock()
	if already {
		return nil
	}
	parts, err := c.rotate(ctx, conv, []crdt.Op{crdt.AddMember{Account: crdt.AccountID(account)}, announceOf(vc)}, []card.Verified{vc}, nil)
	if err != nil {
		return err
	}
	c.wg.Go(func() { c.sendWelcome(c.ctx, conv, vc, parts, true) })
	c.events.publish(Event{Kind: "conversation", Conversation: conv.hexID})
	return nil
}

// RemoveMember removes a member (or, with this account, leaves) and seals
// a new epoch to the remaining members.
func (c *Chat) RemoveMember(ctx context.Context, hexID string, account keyring.AccountID) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	self := c.id.AccountID()
	if account != self {
		if err := c.requireAdmin(conv); err != nil {
			return err
		}
	}
	conv.mu.Lock()
	member, _ := conv.state.IsMember(crdt.AccountID(account))
	conv.mu.Unlock()
	if !member {
		return fmt.Errorf("%w: %s", ErrNotMember, account.String()[:16])
	}
	op := crdt.RemoveMember{Account: crdt.AccountID(account)}
	if account == self {
		// Leaving: the others rotate when they see it (they are the
		// ones who must stop sealing to us).
		if _, err := c.commitOwn(ctx, conv, []crdt.Op{op}); err != nil {
			return err
		}
	} else if _, err := c.rotate(ctx, conv, []crdt.Op{op}, nil, map[keyring.AccountID]bool{account: true}); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "conversation", Conversation: conv.hexID})
	return nil
}

// SetInfo sets the title and avatar of a conversation.
func (c *Chat) SetInfo(ctx context.Context, hexID, title, mime string, avatar []byte) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	conv.mu.Lock()
	member, _ := conv.state.IsMember(crdt.AccountID(c.id.AccountID()))
	curTitle := conv.state.Title()
	curMime, curAvatar := conv.state.Avatar()
	conv.mu.Unlock()
	if !member {
		return ErrNotMember
	}
	var ops []crdt.Op
	if title != curTitle {
		ops = append(ops, crdt.SetTitle{Title: title})
	}
	if mime != curMime || !bytes.Equal(avatar, curAvatar) {
		ops = append(ops, crdt.SetAvatar{Mime: mime, Data: avatar})
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "conversation", Conversation: conv.hexID})
	return nil
}

// ensureUsableEpoch rotates before a send when the conversation has no
// usable epoch (every one is tainted: a member left, or an epoch was sealed
// to a device removed concurrently) or when the current one is due for
// replacement (keys.go). Members rotate lazily: the first of them to send
// does, and the CRDT picks one of concurrent rotations. conv.mu is not
// held.
func (c *Chat) ensureUsableEpoch(ctx context.Context, conv *conversation) error {
	conv.mu.Lock()
	cur, ok := conv.state.CurrentEpoch()
	member, _ := conv.state.IsMember(crdt.AccountID(c.id.AccountID()))
	stale := ok && member && conv.acct == nil && c.epochStale(conv, cur)
	conv.mu.Unlock()
	if !member || (ok && !stale) {
		return nil
	}
	_, err := c.rotate(ctx, conv, nil, nil, nil)
	if err != nil && stale {
		// The current epoch still works; send under it and try again at
		// the next send.
		c.log.Warn("replace a stale epoch", "conv", conv.hexID, "err", err)
		return nil
	}
	return err
}

// SetAdmin grants or revokes a member's admin right (admins only).
func (c *Chat) SetAdmin(ctx context.Context, hexID string, account keyring.AccountID, admin bool) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	if err := c.requireAdmin(conv); err != nil {
		return err
	}
	conv.mu.Lock()
	member, _ := conv.state.IsMember(crdt.AccountID(account))
	conv.mu.Unlock()
	if !member {
		return fmt.Errorf("%w: %s", ErrNotMember, account.String()[:16])
	}
	if _, err := c.commitOwn(ctx, conv, []crdt.Op{crdt.SetAdmin{Account: crdt.AccountID(account), Admin: admin}}); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "conversation", Conversation: conv.hexID})
	return nil
}
