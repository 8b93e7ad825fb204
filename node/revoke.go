package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
)

// Revoking a device (docs/devices.md). Any device of the account revokes
// another: a DeviceRevoke op in the account DAG and a new account epoch
// without it; in every conversation a DeviceRevoked op carrying a
// revocation signed by the account root — its LastSeq is what this
// conversation holds of the device, its cutoff now — and a new epoch sealed
// to every device but the revoked one. Every member records the
// revocation and refuses the device's blocks beyond it; the revoked device
// reads nothing sent afterwards and, once it learns of it, shows that it
// was removed and writes nothing more.

// Errors of device revocation.
var (
	ErrDeviceRevoked = errors.New("this device was removed from its account")
	ErrNotOwnDevice  = errors.New("not another device of this account")
)

// AccountRevoked is the account state of a device that was removed.
const AccountRevoked = "revoked"

var revokedSelfKey = ds.NewKey("/revoked-self")

// selfRevoked records that this device was revoked.
type selfRevoked struct{ atomic.Bool }

func (c *Chat) markSelfRevoked() {
	if c.revokedSelf.Swap(true) {
		return
	}
	if err := c.ds.Put(c.ctx, revokedSelfKey, []byte{1}); err != nil {
		c.log.Error("record the revocation of this device", "err", err)
	}
	c.log.Warn("this device was removed from its account by another device")
	c.events.publish(Event{Kind: "account"})
}

func (c *Chat) loadSelfRevoked(ctx context.Context) error {
	ok, err := c.ds.Has(ctx, revokedSelfKey)
	if err != nil {
		return err
	}
	c.revokedSelf.Store(ok)
	return nil
}

// noteRevocations records the revocations carried by events. conv.mu is
// held.
func (c *Chat) noteRevocations(conv *conversation, events []crdt.Event) {
	self := c.id.DeviceID()
	for _, ev := range events {
		for _, op := range ev.Ops {
			switch op := op.(type) {
			case crdt.DeviceRevoked:
				r, err := keyring.VerifyRevocation(op.Revocation)
				if err != nil {
					continue
				}
				// Only the device's own account root can revoke it.
				if acct, ok := conv.accounts[dag.DeviceID(r.Device)]; ok && keyring.AccountID(acct) != r.Account {
					continue
				}
				if cur, ok := conv.revoked[r.Device]; !ok || r.LastSeq < cur.LastSeq {
					conv.revoked[r.Device] = r
				}
				if r.Device == self && r.Account == c.id.AccountID() {
					c.markSelfRevoked()
				}
			case crdt.DeviceRevoke:
				if conv.acct != nil && keyring.DeviceID(op.Device) == self && ev.Account == crdt.AccountID(c.id.AccountID()) {
					c.markSelfRevoked()
				}
			}
		}
	}
}

// revokedBlock reports whether a block is beyond its author's revocation.
// conv.mu is held.
func (conv *conversation) revokedBlock(in *dag.Inner) bool {
	r, ok := conv.revoked[keyring.DeviceID(in.Author)]
	return ok && r.Accepts(keyring.DeviceID(in.Author), in.Seq, time.UnixMilli(in.Time)) != nil
}

// RevokeDevice removes another device of this account.
func (c *Chat) RevokeDevice(ctx context.Context, d keyring.DeviceID) error {
	if d == c.id.DeviceID() {
		return fmt.Errorf("%w: this is the device you are using; revoke it from another one", ErrNotOwnDevice)
	}
	c.mu.RLock()
	_, ok := c.ownDevs[d]
	acct := c.account
	convs := make([]*conversation, 0, len(c.convs))
	for _, conv := range c.convs {
		convs = append(convs, conv)
	}
	c.mu.RUnlock()
	if !ok && !c.seenOwnDevice(d) {
		return fmt.Errorf("%w: %s", ErrNotOwnDevice, d.String()[:16])
	}
	if c.id.Keyring.Account == nil {
		return errors.New("this device does not hold the account root key")
	}
	// Forget it first: the new epochs below are not sealed to it.
	if err := c.ds.Delete(ctx, ownDevicePrefix.ChildString(d.String())); err != nil && !errors.Is(err, ds.ErrNotFound) {
		return err
	}
	c.mu.Lock()
	delete(c.ownDevs, d)
	c.mu.Unlock()
	if c.discovery != nil {
		c.discovery.ContactsChanged()
	}
	now := c.now()
	var errs []error
	for _, conv := range convs {
		vec, err := c.store.SeqVector(ctx, conv.dagID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rev, err := c.id.Keyring.Account.Revoke(d, vec[dag.DeviceID(d)], now, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := keyring.VerifyRevocation(rev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conv.mu.Lock()
		conv.revoked[d] = r
		conv.mu.Unlock()
		if _, err := c.rotate(ctx, conv, []crdt.Op{crdt.DeviceRevoked{Revocation: rev}}, nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("conversation %s: %w", conv.hexID, err))
		}
	}
	if acct != nil {
		if _, err := c.rotateAccount(ctx, acct, []crdt.Op{crdt.DeviceRevoke{Device: crdt.DeviceID(d)}}); err != nil {
			errs = append(errs, fmt.Errorf("account DAG: %w", err))
		}
	}
	c.events.publish(Event{Kind: "devices"})
	c.log.Info("device revoked", "device", d.String()[:16])
	return errors.Join(errs...)
}

// noteSeen records the latest block time of each of this account's
// devices among events.
func (c *Chat) noteSeen(events []crdt.Event) {
	self := crdt.AccountID(c.id.AccountID())
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	for _, ev := range events {
		if ev.Account != self {
			continue
		}
		t := time.UnixMilli(ev.Time)
		if d := keyring.DeviceID(ev.Device); t.After(c.lastSeen[d]) {
			c.lastSeen[d] = t
		}
	}
}

// seenOwnDevice reports whether d announced itself as a device of this
// account in some conversation (a device from before a restore).
func (c *Chat) seenOwnDevice(d keyring.DeviceID) bool {
	for _, dc := range c.conversationDevices() {
		if keyring.DeviceID(dc.Device) == d {
			return true
		}
	}
	return false
}

// conversationDevices lists this account's devices announced in its
// conversations.
func (c *Chat) conversationDevices() []crdt.DeviceCert {
	self := crdt.AccountID(c.id.AccountID())
	convs := c.conversationList()
	var out []crdt.DeviceCert
	for _, conv := range convs {
		conv.mu.Lock()
		out = append(out, conv.state.Devices(self)...)
		conv.mu.Unlock()
	}
	return out
}

// DeviceInfo describes a device of this account for the device list.
type DeviceInfo struct {
	Device  string    // hex device key
	Name    string    // from its certificate
	Added   time.Time // its certificate's creation
	Self    bool      // the device answering
	Online  bool      // connected right now
	Revoked bool
	// LastSeen is the time of the device's latest block this device
	// holds (zero when none).
	LastSeen time.Time
}

// Devices lists the account's devices: this one, the linked ones and the
// revoked ones, from the account DAG and what this device knows of them.
func (c *Chat) Devices() []DeviceInfo {
	v := c.accountSnapshot()
	self := c.id.DeviceID()
	byDev := map[keyring.DeviceID]*DeviceInfo{}
	add := func(d keyring.DeviceID, cert []byte) *DeviceInfo {
		di := byDev[d]
		if di == nil {
			di = &DeviceInfo{Device: d.String(), Self: d == self}
			byDev[d] = di
		}
		if vc, err := keyring.VerifyCertificate(cert); err == nil && vc.Device == d {
			di.Name, di.Added = vc.Name, vc.Created
		}
		return di
	}
	add(self, c.id.Cert)
	for _, d := range c.conversationDevices() {
		add(keyring.DeviceID(d.Device), d.Cert)
	}
	for _, d := range v.devices {
		di := add(keyring.DeviceID(d.Device), d.Cert)
		di.Revoked = d.Revoked
	}
	c.mu.RLock()
	for d, od := range c.ownDevs {
		di := add(d, od.Cert)
		if p, err := peer.IDFromBytes(od.Peer); err == nil {
			di.Online = c.net.Host.Network().Connectedness(p) == network.Connected
		}
	}
	c.mu.RUnlock()
	byDev[self].Online = true
	c.seenMu.Lock()
	for d, di := range byDev {
		di.LastSeen = c.lastSeen[d]
	}
	c.seenMu.Unlock()
	out := make([]DeviceInfo, 0, len(byDev))
	for _, di := range byDev {
		out = append(out, *di)
	}
	slices.SortFunc(out, func(a, b DeviceInfo) int {
		if a.Self != b.Self {
			if a.Self {
				return -1
			}
			return 1
		}
		return a.Added.Compare(b.Added)
	})
	return out
}
