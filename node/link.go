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
	"github.com/glitr-chat/glitr/node/devices"
)

// The device registry and the account side of linking (the protocol is
// node/devices): the account's other devices as this one knows them, what
// a new device gets, sealing it in everywhere, the account DAG's epochs,
// and the conversations a restored device still has to rejoin. Adopting
// another account (a link or a restore) is the node's lifecycle: adopt.go.

var (
	ownDevicePrefix = ds.NewKey("/own-device")
	rejoinPrefix    = ds.NewKey("/rejoin") // conversation id -> sealed root
)

// Errors of device linking.
var (
	ErrLinkInvalid = card.ErrLinkInvalid
	ErrLinkExpired = card.ErrLinkExpired
	ErrLinkUsed    = devices.ErrLinkUsed
	ErrNotFresh    = devices.ErrNotFresh
)

// loadOwnDevices reads the account's other devices.
func (c *Chat) loadOwnDevices(ctx context.Context) error {
	return c.each(ctx, ownDevicePrefix, func(k string, v []byte) error {
		var d devices.Record
		if err := devices.Dec.Unmarshal(v, &d); err != nil || len(d.Device) != 32 {
			c.log.Warn("stored device record does not decode; ignoring it", "key", k)
			return nil
		}
		c.ownDevs[keyring.DeviceID(d.Device)] = d
		return nil
	})
}

func (c *Chat) putOwnDevice(ctx context.Context, d devices.Record) error {
	if keyring.DeviceID(d.Device) == c.id.DeviceID() {
		return nil
	}
	b, err := canonicalEnc.Marshal(d)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, ownDevicePrefix.ChildString(hex.EncodeToString(d.Device)), b); err != nil {
		return err
	}
	c.mu.Lock()
	c.ownDevs[keyring.DeviceID(d.Device)] = d
	c.mu.Unlock()
	if c.discovery != nil {
		c.discovery.ContactsChanged()
	}
	return nil
}

// ownDevicePeers returns the peers of the account's other devices.
func (c *Chat) ownDevicePeers() []peer.ID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]peer.ID, 0, len(c.ownDevs))
	for _, d := range c.ownDevs {
		if p, err := peer.IDFromBytes(d.Peer); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *Chat) isOwnDevicePeer(p peer.ID) bool {
	for _, q := range c.ownDevicePeers() {
		if q == p {
			return true
		}
	}
	return false
}

// linkBundle gathers what a newly linked device needs.
func (c *Chat) linkBundle(cert []byte) (devices.Bundle, error) {
	c.idMu.Lock()
	b := devices.Bundle{AccountSeed: c.id.Keyring.Account.Seed(), Cert: cert, Recovery: c.id.Keyring.Secrets[recoveryKeyName]}
	c.idMu.Unlock()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.account == nil {
		return b, errors.New("the account DAG is not open")
	}
	b.AccountConv = c.account.id
	for _, vc := range c.contacts {
		b.Contacts = append(b.Contacts, vc.Raw)
	}
	for a, s := range c.pairs {
		b.Pairs = append(b.Pairs, append(append([]byte{}, a[:]...), s[:]...))
	}
	self, err := c.id.Keyring.Device.SignPrekey(c.id.Keyring.Prekeys.Current())
	if err != nil {
		return b, err
	}
	b.Devices = append(b.Devices, devices.Record{Device: func() []byte { d := c.id.DeviceID(); return d[:] }(), Peer: []byte(c.net.Host.ID()), Prekey: self, Cert: c.id.Cert})
	for _, d := range c.ownDevs {
		b.Devices = append(b.Devices, d)
	}
	return b, nil
}

// addDeviceEverywhere adds a newly linked device to the account DAG and to
// every conversation: a new epoch sealed to it and the other devices, a
// welcome and the history.
func (c *Chat) addDeviceEverywhere(ctx context.Context, vc card.Verified) {
	c.mu.RLock()
	acct := c.account
	convs := make([]*conversation, 0, len(c.convs))
	for _, conv := range c.convs {
		convs = append(convs, conv)
	}
	c.mu.RUnlock()
	if acct != nil {
		parts, err := c.rotateAccount(ctx, acct, []crdt.Op{crdt.DeviceAdd{Device: crdt.DeviceID(vc.Cert.Device), Name: vc.Cert.Name, Cert: vc.Raw.Cert}})
		if err != nil {
			c.log.Error("add the linked device to the account DAG", "err", err)
		} else {
			c.sendWelcome(ctx, acct, vc, parts, true)
		}
	}
	for _, conv := range convs {
		parts, err := c.rotate(ctx, conv, []crdt.Op{announceOf(vc)}, []card.Verified{vc}, nil)
		if err != nil {
			c.log.Error("add the linked device to a conversation", "conv", conv.hexID, "err", err)
			continue
		}
		c.wg.Go(func() { c.sendWelcome(c.ctx, conv, vc, parts, true) })
	}
}

// rotateAccount commits ops to the account DAG with a new epoch sealed to
// every device of the account.
func (c *Chat) rotateAccount(ctx context.Context, conv *conversation, ops []crdt.Op) ([][]byte, error) {
	own, err := c.ownPrekey()
	if err != nil {
		return nil, err
	}
	recips := []keyring.SignedPrekey{own}
	self := crdt.AccountID(c.id.AccountID())
	crdtRecips := []crdt.Recipient{{Account: self, Device: crdt.DeviceID(c.id.DeviceID())}}
	c.mu.RLock()
	for _, d := range c.ownDevs {
		spk, err := keyring.VerifyPrekey(d.Prekey)
		if err != nil || spk.Device != keyring.DeviceID(d.Device) {
			continue
		}
		recips = append(recips, spk)
		crdtRecips = append(crdtRecips, crdt.Recipient{Account: self, Device: crdt.DeviceID(spk.Device)})
	}
	c.mu.RUnlock()
	parts, epoch, err := keyring.NewRotation(rand.Reader, c.id.Keyring.Device, keyring.RotationParams{
		Conversation: conv.id, Recipients: recips, Created: c.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("seal a new account epoch: %w", err)
	}
	for _, p := range parts {
		ops = append(ops, crdt.Rotation{Payload: p, Recipients: crdtRecips})
	}
	// The rotation block is sealed under the current epoch (the other
	// devices learn the new one from it); later blocks under the new one.
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return nil, err
	}
	conv.mu.Lock()
	err = conv.cipher.Install(epoch)
	if err == nil {
		err = conv.cipher.SetSendingEpoch(epoch.ID)
	}
	conv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return parts, c.persistKeys(ctx, conv, true)
}

// noteAccountRotations installs account-DAG epochs sealed to this device
// and sends under the newest one. conv.mu is held.
func (c *Chat) noteAccountRotations(conv *conversation, events []crdt.Event) {
	self := c.id.DeviceID()
	for _, ev := range events {
		for _, op := range ev.Ops {
			rot, ok := op.(crdt.Rotation)
			if !ok {
				continue
			}
			r, err := keyring.VerifyRotation(rot.Payload)
			if err != nil || string(r.Conversation) != string(conv.id) || !r.HasBoxFor(self) || conv.cipher.HasEpoch(r.Epoch) {
				continue
			}
			c.idMu.Lock()
			ep, err := keyring.OpenEpoch(r, self, c.id.Keyring.Prekeys)
			c.idMu.Unlock()
			if err != nil || conv.cipher.Install(ep) != nil {
				continue
			}
			if ev.Lamport >= conv.acctEpochLamport {
				conv.acctEpochLamport = ev.Lamport
				if conv.cipher.SetSendingEpoch(r.Epoch) == nil {
					c.topicsChanged(conv)
				}
			}
			if err := c.persistKeys(c.ctx, conv, true); err != nil {
				c.log.Error("persist key state", "err", err)
			}
		}
	}
}

// devicesChat is the chat service as node/devices sees it.
type devicesChat struct{ c *Chat }

func (d devicesChat) Self() devices.Self {
	c := d.c
	return devices.Self{Account: c.id.AccountID(), Device: c.id.DeviceID(), Cert: c.id.Cert, HoldsAccountKey: c.id.Keyring.Account != nil}
}

func (d devicesChat) SignedPrekey() ([]byte, error) { return d.c.ownPrekeySigned() }

func (d devicesChat) OpenBox(purpose string, ad, box []byte) ([]byte, error) {
	return peopleChat(d).OpenBox(purpose, ad, box)
}

// Fresh: no name, no contacts, no conversations.
func (d devicesChat) Fresh() bool {
	c := d.c
	v := c.accountSnapshot()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return v.name == "" && len(c.contacts) == 0 && len(c.convs) == 0
}

func (d devicesChat) CertifyDevice(dev keyring.DeviceID, name string) ([]byte, error) {
	c := d.c
	if c.id.Keyring.Account == nil {
		return nil, devices.ErrNoAccountKey
	}
	return c.id.Keyring.Account.Certify(dev, name, c.now(), time.Time{})
}

func (d devicesChat) Bundle(cert []byte) (devices.Bundle, error) { return d.c.linkBundle(cert) }

func (d devicesChat) DeviceLinked(ctx context.Context, vc card.Verified) error {
	c := d.c
	dev := vc.Cert.Device
	if err := c.putOwnDevice(ctx, devices.Record{Device: dev[:], Peer: vc.Raw.Peer, Prekey: vc.Raw.Prekey, Cert: vc.Raw.Cert}); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "devices"})
	c.wg.Go(func() { c.addDeviceEverywhere(c.ctx, vc) })
	return nil
}

func (d devicesChat) BackupState() (devices.State, keyring.RecoveryKey, *keyring.AccountKey, error) {
	c := d.c
	var st devices.State
	c.idMu.Lock()
	rkBytes := c.id.Keyring.Secrets[recoveryKeyName]
	acct := c.id.Keyring.Account
	c.idMu.Unlock()
	if len(rkBytes) != keyring.KeySize {
		return st, keyring.RecoveryKey{}, nil, devices.ErrNoRecoveryKey
	}
	if acct == nil {
		return st, keyring.RecoveryKey{}, nil, devices.ErrNoAccountKey
	}
	v := c.accountSnapshot()
	st = devices.State{Name: v.name, AvatarMime: v.mime, Avatar: v.avatar, Prefs: v.prefs}
	c.mu.RLock()
	acctConv := c.account
	c.mu.RUnlock()
	if acctConv != nil {
		acctConv.mu.Lock()
		ops := acctConv.acct.SnapshotOps()
		acctConv.mu.Unlock()
		var err error
		if st.Account, err = devices.EncodeAccount(ops); err != nil {
			return st, keyring.RecoveryKey{}, nil, err
		}
	}
	for a, ct := range v.contacts {
		if ct.Name != "" {
			st.ContactNames = append(st.ContactNames, append(append([]byte{}, a[:]...), ct.Name...))
		}
	}
	for _, dv := range v.devices {
		st.Devices = append(st.Devices, append([]byte{}, dv.Device[:]...))
	}
	c.mu.RLock()
	for _, vc := range c.contacts {
		st.Contacts = append(st.Contacts, vc.Raw)
	}
	for a, s := range c.pairs {
		st.Pairs = append(st.Pairs, append(append([]byte{}, a[:]...), s[:]...))
	}
	for _, conv := range c.convs {
		st.Conversations = append(st.Conversations, append(append([]byte{}, conv.id...), conv.root...))
	}
	c.mu.RUnlock()
	return st, keyring.RecoveryKey(rkBytes), acct, nil
}

func (d devicesChat) PendingRejoins(ctx context.Context) [][]byte { return d.c.pendingRejoins(ctx) }

func (d devicesChat) ConnectedContacts() []peer.ID {
	c := d.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	var peers []peer.ID
	for _, vc := range c.contacts {
		if c.net.Host.Network().Connectedness(vc.Peer.ID) == network.Connected {
			peers = append(peers, vc.Peer.ID)
		}
	}
	return peers
}

// Readmit seals a returning device of a member account back into a
// conversation (not the account DAG).
func (d devicesChat) Readmit(_ context.Context, id []byte, vc card.Verified) bool {
	c := d.c
	conv, err := c.conversationByID(id)
	if err != nil || conv.acct != nil {
		return false
	}
	conv.mu.Lock()
	member, _ := conv.state.IsMember(crdt.AccountID(vc.Cert.Account))
	_, revoked := conv.revoked[vc.Cert.Device]
	conv.mu.Unlock()
	if !member || revoked {
		return false
	}
	c.wg.Go(func() {
		parts, err := c.rotate(c.ctx, conv, []crdt.Op{announceOf(vc)}, []card.Verified{vc}, nil)
		if err != nil {
			c.log.Warn("seal a returning device into a conversation", "conv", conv.hexID, "err", err)
			return
		}
		c.sendWelcome(c.ctx, conv, vc, parts, true)
	})
	return true
}

// pendingRejoins lists the conversations this device was restored into
// but holds no key for yet.
func (c *Chat) pendingRejoins(ctx context.Context) [][]byte {
	var out [][]byte
	_ = c.each(ctx, rejoinPrefix, func(k string, _ []byte) error {
		id, err := hex.DecodeString(ds.RawKey(k).BaseNamespace())
		if err == nil && len(id) == 16 {
			if _, err := c.conversationByID(id); err != nil {
				out = append(out, id)
			} else {
				_ = c.ds.Delete(ctx, ds.RawKey(k))
			}
		}
		return nil
	})
	return out
}
