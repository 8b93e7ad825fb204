package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/devices"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/identity"
	"github.com/glitr-chat/glitr/node/people"
)

// Adopting another account, the node's lifecycle side of a link or a
// restore: the chat service stops, the data of the old account goes, the
// new account's bundle is written (pendingAdoption, so a crash half-way
// finishes it at the next start) and the chat service starts again under
// it.

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
