package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/devices"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/identity"
	"github.com/glitr-chat/glitr/node/people"
)

// The device registry and the account side of linking (the protocol is
// node/devices): the account's other devices as this one knows them, what
// a new device gets, sealing it in everywhere, the account DAG's epochs,
// and adopting another account (a link or a restore).

var ownDevicePrefix = ds.NewKey("/own-device")

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

// Link links this (fresh) node to the account of the device that showed
// code: afterwards it is one more device of that account. It implements
// webui.DevicesBackend; errors also match the API's sentinels.
func (n *Node) Link(ctx context.Context, code string) error {
	return devicesErr(n.link(ctx, code))
}

func (n *Node) link(ctx context.Context, code string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	account, bundle, err := c.devices.Link(ctx, code)
	if err != nil {
		return err
	}
	return n.adoptAccount(ctx, account, bundle, nil)
}

// adoptAccount makes this device one of the bundle's account: it checks
// the bundle, rewrites the keyring, replaces the provisional account's
// chat state and restarts the chat service. rejoin (conversation id ‖
// root secret) names conversations to ask members for (a restore).
func (n *Node) adoptAccount(ctx context.Context, want keyring.AccountID, b devices.Bundle, rejoin [][]byte) error {
	acct, err := keyring.AccountKeyFromSeed(b.AccountSeed)
	if err != nil || acct.ID() != want {
		return fmt.Errorf("%w: the bundle's account key is not the account of the code", ErrBadPeer)
	}
	n.unlockMu.Lock()
	defer n.unlockMu.Unlock()
	old := n.chatService()
	if old == nil {
		return errNoChat
	}
	cert, err := keyring.VerifyCertificate(b.Cert)
	if err != nil || cert.Account != want || cert.Device != old.id.DeviceID() {
		return fmt.Errorf("%w: the bundle's certificate is not for this device", ErrBadPeer)
	}
	if len(b.AccountConv) != 16 && rejoin == nil {
		return fmt.Errorf("%w: the bundle names no account DAG", ErrBadPeer)
	}
	old.close()
	old.catchup.Close()
	n.chatMu.Lock()
	n.Chat = nil
	n.chatMu.Unlock()

	// The adoption is recorded first (synced), then carried out; a crash
	// in between is finished at the next start (startChat), so a device
	// is never left half in one account and half in the other.
	id := old.id
	pa := pendingAdoption{Bundle: b, Rejoin: rejoin}
	raw, err := canonicalEnc.Marshal(pa)
	if err != nil {
		return err
	}
	sealed, err := keyring.SealAtRest(id.StoreKey(), adoptingKey.String(), raw)
	if err != nil {
		return err
	}
	if err := n.Store.Put(ctx, adoptingKey, sealed); err != nil {
		return err
	}
	if err := n.Store.Sync(ctx, adoptingKey); err != nil {
		return err
	}
	if err := n.applyAdoption(ctx, id, pa); err != nil {
		return err
	}
	if err := n.Store.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	if err := n.startChat(ctx, id.Passphrase()); err != nil {
		return fmt.Errorf("restart under the linked account: %w", err)
	}
	n.log.Info("this device is now linked to the account", "account", want.String()[:16])
	return nil
}

func deletePrefix(ctx context.Context, d ds.Batching, prefix ds.Key) error {
	res, err := d.Query(ctx, query.Query{Prefix: prefix.String(), KeysOnly: true})
	if err != nil {
		return err
	}
	var keys []ds.Key
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		keys = append(keys, ds.NewKey(r.Key))
	}
	res.Close()
	if err := d.Delete(ctx, prefix); err != nil && !errors.Is(err, ds.ErrNotFound) {
		return err
	}
	for _, k := range keys {
		if err := d.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// pendingAdoption is an adoption recorded before it is carried out.
type pendingAdoption struct {
	Bundle devices.Bundle `cbor:"1,keyasint"`
	Rejoin [][]byte       `cbor:"2,keyasint,omitempty"`
}

var adoptingKey = ds.NewKey("/adopting")

// finishAdoption completes an adoption a crash interrupted. It runs at
// start, with the keyring as it is on disk.
func (n *Node) finishAdoption(ctx context.Context, id *identity.Identity) error {
	sealed, err := n.Store.Get(ctx, adoptingKey)
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	raw, err := keyring.OpenAtRest(id.StoreKey(), adoptingKey.String(), sealed)
	if err != nil {
		return fmt.Errorf("interrupted link: %w", err)
	}
	var pa pendingAdoption
	if err := devices.Dec.Unmarshal(raw, &pa); err != nil {
		return fmt.Errorf("interrupted link: %w", err)
	}
	n.log.Info("finishing a link or restore that was interrupted")
	return n.applyAdoption(ctx, id, pa)
}

// applyAdoption replaces the provisional account with the adopted one:
// chat state cleared, keyring rewritten, contacts, pair secrets, devices
// and conversations to rejoin stored, then the record removed. It is
// idempotent.
func (n *Node) applyAdoption(ctx context.Context, id *identity.Identity, pa pendingAdoption) error {
	b, rejoin := pa.Bundle, pa.Rejoin
	acct, err := keyring.AccountKeyFromSeed(b.AccountSeed)
	if err != nil {
		return err
	}
	want := acct.ID()
	// The provisional account's chat state goes; the store key stays.
	for _, prefix := range append([]ds.Key{convPrefix, keysPrefix, contactPrefix, pairPrefix, ownDevicePrefix, rejoinPrefix, accountKey}, people.StorePrefixes...) {
		if err := deletePrefix(ctx, n.Store, prefix); err != nil {
			return fmt.Errorf("clear the provisional account: %w", err)
		}
	}
	id.Keyring.Account = acct
	id.Keyring.Secrets["device-cert"] = b.Cert
	if len(b.Recovery) > 0 {
		id.Keyring.Secrets[recoveryKeyName] = b.Recovery
	}
	if err := id.Save(); err != nil {
		return err
	}
	storeKey := id.StoreKey()
	if len(b.AccountConv) == 16 {
		if err := n.Store.Put(ctx, accountKey, []byte(hex.EncodeToString(b.AccountConv))); err != nil {
			return err
		}
	}
	for _, r := range rejoin {
		if len(r) != 16+32 {
			continue
		}
		k := rejoinPrefix.ChildString(hex.EncodeToString(r[:16]))
		sealed, err := keyring.SealAtRest(storeKey, k.String(), r[16:])
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, k, sealed); err != nil {
			return err
		}
	}
	for _, cd := range b.Contacts {
		vc, err := card.Verify(cd, time.Time{})
		if err != nil || vc.Cert.Account == want {
			continue
		}
		raw, err := canonicalEnc.Marshal(cd)
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, contactPrefix.ChildString(hex.EncodeToString(vc.Cert.Account[:])), raw); err != nil {
			return err
		}
	}
	for _, p := range b.Pairs {
		if len(p) != 32+discovery.PairSecretSize {
			continue
		}
		k := pairPrefix.ChildString(hex.EncodeToString(p[:32]))
		sealed, err := keyring.SealAtRest(storeKey, k.String(), p[32:])
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, k, sealed); err != nil {
			return err
		}
	}
	for _, d := range b.Devices {
		if len(d.Device) != 32 || keyring.DeviceID(d.Device) == id.DeviceID() {
			continue
		}
		raw, err := canonicalEnc.Marshal(d)
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, ownDevicePrefix.ChildString(hex.EncodeToString(d.Device)), raw); err != nil {
			return err
		}
	}
	if err := n.Store.Delete(ctx, adoptingKey); err != nil {
		return err
	}
	return n.Store.Sync(ctx, ds.NewKey("/"))
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
