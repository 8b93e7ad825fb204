package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	ds "github.com/ipfs/go-datastore"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
)

// The account DAG is a conversation whose only members are this account's
// own devices. It holds the profile, preferences, contacts with their
// verification state, the conversation list and read positions; its state
// is a crdt.Account. It syncs like any conversation (same blocks, same
// catch-up, its own unlinkable gossip topic), which is what lets every
// device of the account share it.

// accountKey stores the hex id of the account conversation.
var accountKey = ds.NewKey("/account")

// Preference keys in the account DAG.
const (
	prefTheme         = "theme"
	prefLanguage      = "language"
	prefNotifications = "notifications"
	prefPresence      = "presence"
	prefReadReceipts  = "read-receipts"
)

func (conv *conversation) apply(ev crdt.Event) error {
	if conv.acct != nil {
		return conv.acct.Apply(ev)
	}
	return conv.state.Apply(ev)
}

func (conv *conversation) applyBatch(evs []crdt.Event) (int, error) {
	if conv.acct != nil {
		return conv.acct.ApplyBatch(evs)
	}
	return conv.state.ApplyBatch(evs)
}

// accountConversationID returns the stored id of the account DAG, or "".
func (c *Chat) accountConversationID(ctx context.Context) (string, error) {
	v, err := c.ds.Get(ctx, accountKey)
	switch {
	case errors.Is(err, ds.ErrNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("account conversation: %w", err)
	}
	return string(v), nil
}

func (c *Chat) setAccount(conv *conversation) {
	c.mu.Lock()
	c.account = conv
	c.bySync[string(conv.syncID)] = conv
	c.mu.Unlock()
}

// ensureAccount creates the account DAG on the first start of an account:
// an epoch sealed to this device alone and a genesis block that records
// the device.
func (c *Chat) ensureAccount(ctx context.Context) error {
	c.mu.RLock()
	have := c.account != nil
	c.mu.RUnlock()
	if have {
		return nil
	}
	if id, err := c.accountConversationID(ctx); err != nil || id != "" {
		// Linked to an account whose DAG is on its way from the linking
		// device (its welcome installs it).
		return err
	}
	convID := make([]byte, 16)
	if _, err := rand.Read(convID); err != nil {
		return err
	}
	own, err := c.ownPrekey()
	if err != nil {
		return err
	}
	parts, epoch, err := keyring.NewRotation(rand.Reader, c.id.Keyring.Device, keyring.RotationParams{
		Conversation: convID, Recipients: []keyring.SignedPrekey{own}, Created: c.now(),
	})
	if err != nil {
		return fmt.Errorf("seal the account epoch: %w", err)
	}
	conv, err := c.installConversation(ctx, convID, epoch, nil)
	if err != nil {
		return err
	}
	conv.acct = crdt.NewAccount()
	if err := c.ds.Put(ctx, accountKey, []byte(conv.hexID)); err != nil {
		return err
	}
	if err := c.ds.Sync(ctx, accountKey); err != nil {
		return err
	}
	self := crdt.Recipient{Account: crdt.AccountID(c.id.AccountID()), Device: crdt.DeviceID(c.id.DeviceID())}
	ops := []crdt.Op{
		crdt.DeviceAnnounce{Account: self.Account, Device: self.Device, Cert: c.id.Cert},
		crdt.DeviceAdd{Device: self.Device, Name: c.deviceName(), Cert: c.id.Cert},
	}
	for _, p := range parts {
		ops = append(ops, crdt.Rotation{Payload: p, Recipients: []crdt.Recipient{self}})
	}
	c.setAccount(conv)
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return fmt.Errorf("account genesis: %w", err)
	}
	return nil
}

func (c *Chat) deviceName() string {
	cert, err := keyring.VerifyCertificate(c.id.Cert)
	if err != nil {
		return ""
	}
	return cert.Name
}

// ownPrekey is this device's current prekey, signed.
func (c *Chat) ownPrekey() (keyring.SignedPrekey, error) {
	_, v, err := c.currentPrekey()
	return v, err
}

// commitAccount appends ops to the account DAG.
func (c *Chat) commitAccount(ctx context.Context, ops ...crdt.Op) error {
	c.mu.RLock()
	conv := c.account
	c.mu.RUnlock()
	if conv == nil {
		return errors.New("account DAG is not open")
	}
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "account"})
	return nil
}

// accountView is a consistent snapshot of the account DAG's state.
type accountView struct {
	name, mime string
	avatar     []byte
	prefs      map[string]string
	contacts   map[keyring.AccountID]crdt.Contact
	convs      map[string]crdt.ConversationEntry
	devices    []crdt.AccountDevice
	blocked    map[keyring.AccountID]bool
	// cards holds the contacts whose cards this node verified (Chat.contacts).
	cards map[keyring.AccountID]bool
}

func (c *Chat) accountSnapshot() accountView {
	c.mu.RLock()
	conv := c.account
	cards := make(map[keyring.AccountID]bool, len(c.contacts))
	for a := range c.contacts {
		cards[a] = true
	}
	c.mu.RUnlock()
	v := accountView{prefs: map[string]string{}, contacts: map[keyring.AccountID]crdt.Contact{}, convs: map[string]crdt.ConversationEntry{}, blocked: map[keyring.AccountID]bool{}, cards: cards}
	if conv == nil {
		return v
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	v.name, v.mime, v.avatar = conv.acct.Profile()
	v.prefs = conv.acct.Preferences()
	for _, ct := range conv.acct.Contacts() {
		v.contacts[keyring.AccountID(ct.Account)] = ct
	}
	for _, e := range conv.acct.Conversations() {
		v.convs[hex.EncodeToString(e.ID)] = e
	}
	v.devices = conv.acct.Devices()
	for _, b := range conv.acct.BlockedAccounts() {
		v.blocked[keyring.AccountID(b)] = true
	}
	return v
}

func (v accountView) preferences() Preferences {
	p := DefaultPreferences()
	if t := v.prefs[prefTheme]; t != "" {
		p.Theme = t
	}
	p.Language = v.prefs[prefLanguage]
	// Off until the user turns them on: the browser asks for permission
	// then, and not before.
	p.Notifications = v.prefs[prefNotifications] == "on"
	p.ShowPresence = v.prefs[prefPresence] != "off"
	p.ReadReceipts = v.prefs[prefReadReceipts] != "off"
	return p
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// preferenceOps returns the ops that change the stored preferences to p.
func (v accountView) preferenceOps(p Preferences) ([]crdt.Op, error) {
	switch p.Theme {
	case "system", "light", "dark":
	default:
		return nil, fmt.Errorf("%w: theme %q (want system, light or dark)", ErrBadInput, p.Theme)
	}
	if len(p.Language) > 35 || strings.ContainsFunc(p.Language, func(r rune) bool {
		return !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		return nil, fmt.Errorf("%w: language %q is not a language tag", ErrBadInput, p.Language)
	}
	want := map[string]string{
		prefTheme: p.Theme, prefLanguage: p.Language, prefNotifications: onOff(p.Notifications),
		prefPresence: onOff(p.ShowPresence), prefReadReceipts: onOff(p.ReadReceipts),
	}
	var ops []crdt.Op
	for _, k := range []string{prefTheme, prefLanguage, prefNotifications, prefPresence, prefReadReceipts} {
		if v.prefs[k] != want[k] {
			ops = append(ops, crdt.SetPreference{Key: k, Value: want[k]})
		}
	}
	return ops, nil
}

// ErrBadInput marks a request with an invalid value.
var ErrBadInput = errors.New("invalid input")
