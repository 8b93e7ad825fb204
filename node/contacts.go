package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/people"
	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Contacts: the cards, names and pair secrets the conversation service
// keeps for the people service (node/people), and the adapter through which
// that service reaches them (peopleChat).

var pairPrefix = ds.NewKey("/pair")

// putPairSecret stores the secret shared with a contact: the root of the
// pair's rendezvous keys (discovery.go).
func (c *Chat) putPairSecret(ctx context.Context, a keyring.AccountID, secret []byte) error {
	if len(secret) != discovery.PairSecretSize {
		return fmt.Errorf("pair secret of %d bytes", len(secret))
	}
	k := pairPrefix.ChildString(a.String())
	sealed, err := keyring.SealAtRest(c.storeKey(), k.String(), secret)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, k, sealed); err != nil {
		return err
	}
	c.mu.Lock()
	c.pairs[a] = [discovery.PairSecretSize]byte(secret)
	c.mu.Unlock()
	if d := c.discovery; d != nil {
		d.ContactsChanged()
	}
	return nil
}

// loadPairSecrets reads the stored pair secrets.
func (c *Chat) loadPairSecrets(ctx context.Context) error {
	return c.each(ctx, pairPrefix, func(k string, v []byte) error {
		a, err := parseAccountKey(ds.RawKey(k).BaseNamespace())
		if err != nil {
			return nil
		}
		b, err := keyring.OpenAtRest(c.storeKey(), k, v)
		if err != nil || len(b) != discovery.PairSecretSize {
			c.log.Warn("stored pair secret does not open; ignoring it", "key", k, "err", err)
			return nil
		}
		c.pairs[a] = [discovery.PairSecretSize]byte(b)
		return nil
	})
}

// discoveryContacts lists the contacts that share a pair secret with us,
// for the DHT rendezvous.
func (c *Chat) discoveryContacts() []discovery.Contact {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]discovery.Contact, 0, len(c.pairs)+1)
	for a, secret := range c.pairs {
		dc := discovery.Contact{Account: a, PairSecret: secret}
		if vc, ok := c.contacts[a]; ok {
			dc.Devices = []discovery.Device{{ID: vc.Cert.Device, Peer: vc.Peer.ID}}
		}
		out = append(out, dc)
	}
	// The account's own devices find each other the same way, under a
	// secret derived from the account DAG's root.
	if c.account != nil && len(c.ownDevs) > 0 {
		dc := discovery.Contact{Account: c.id.AccountID(), PairSecret: [discovery.PairSecretSize]byte(deriveSecret(c.account.root, "own-devices-rendezvous", discovery.PairSecretSize))}
		for _, d := range c.ownDevs {
			p, _ := peer.IDFromBytes(d.Peer)
			dc.Devices = append(dc.Devices, discovery.Device{ID: keyring.DeviceID(d.Device), Peer: p})
		}
		out = append(out, dc)
	}
	return out
}

// addVerifiedContact stores a contact and records it in the account DAG.
func (c *Chat) addVerifiedContact(ctx context.Context, vc card.Verified, name string) error {
	if err := c.putContactCard(ctx, vc); err != nil {
		return err
	}
	c.mu.Lock()
	c.contacts[vc.Cert.Account] = vc
	c.mu.Unlock()
	if len(vc.Peer.Addrs) > 0 {
		c.net.Host.Peerstore().AddAddrs(vc.Peer.ID, vc.Peer.Addrs, time.Hour)
	}
	added := crdt.ContactAdded
	upd := crdt.ContactUpdate{Account: crdt.AccountID(vc.Cert.Account), Status: &added}
	if name != "" {
		upd.Name = &name
		if c.takesNameOfAnother(vc.Cert.Account, name) {
			// Someone we know by this name now has another account key:
			// a reinstall without backup, or an impostor. The contact
			// is marked so the UI warns loudly until the users compare
			// safety numbers again.
			changed := crdt.KeyChanged
			upd.Verification = &changed
			c.log.Warn("a new contact uses the name of an existing contact with another account key", "account", vc.Cert.Account.String()[:16])
			c.events.publish(Event{Kind: "contact-key-changed"})
		}
	}
	return c.commitAccount(ctx, upd)
}

// takesNameOfAnother reports whether another current contact already goes
// by name (case-insensitively).
func (c *Chat) takesNameOfAnother(a keyring.AccountID, name string) bool {
	for other, ct := range c.accountSnapshot().contacts {
		if other != a && ct.Status != crdt.ContactRemoved && ct.Name != "" && strings.EqualFold(ct.Name, name) {
			return true
		}
	}
	return false
}

func (c *Chat) myCardRaw() (card.Card, error) {
	signed, err := c.ownPrekeySigned()
	if err != nil {
		return card.Card{}, err
	}
	return card.Of(c.id.Cert, signed, peer.AddrInfo{ID: c.net.Host.ID(), Addrs: c.net.Host.Addrs()}), nil
}

// contactName is a contact's display name from the account DAG, falling
// back to the device name in its certificate.
func (c *Chat) contactName(a keyring.AccountID) string {
	if ct, ok := c.accountSnapshot().contacts[a]; ok && ct.Name != "" {
		return ct.Name
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.contacts[a].Cert.Name
}

// peopleChat is the chat service as node/people sees it.
type peopleChat struct{ c *Chat }

func (p peopleChat) Self() people.Self {
	return people.Self{Account: p.c.id.AccountID(), Cert: p.c.id.Cert}
}

func (p peopleChat) SignedPrekey() ([]byte, error) { return p.c.ownPrekeySigned() }

func (p peopleChat) OpenBox(purpose string, ad, box []byte) ([]byte, error) {
	p.c.idMu.Lock()
	defer p.c.idMu.Unlock()
	return p.c.id.Keyring.Prekeys.OpenBox(p.c.id.DeviceID(), purpose, ad, box)
}

func (p peopleChat) ProfileName() string { return p.c.accountSnapshot().name }

func (p peopleChat) AddContact(ctx context.Context, vc card.Verified, name string) error {
	return p.c.addVerifiedContact(ctx, vc, name)
}

func (p peopleChat) PutPairSecret(ctx context.Context, a keyring.AccountID, secret []byte) error {
	return p.c.putPairSecret(ctx, a, secret)
}

func (p peopleChat) CreateConversation(ctx context.Context, title string, members []keyring.AccountID) (string, error) {
	return p.c.CreateConversation(ctx, title, members)
}

// AwaitConversation waits until a conversation someone else started has
// arrived (its welcome) and caught up.
func (p peopleChat) AwaitConversation(ctx context.Context, hexID string) error {
	for {
		if conv, err := p.c.conversation(hexID); err == nil {
			return p.c.synced(ctx, conv)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the conversation: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p peopleChat) ContactAdded(conversation string) {
	p.c.events.publish(Event{Kind: "contact", Conversation: conversation})
}

func (c *Chat) ownPrekeySigned() ([]byte, error) {
	signed, _, err := c.currentPrekey()
	return signed, err
}
