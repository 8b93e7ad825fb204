package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/request"
)

// Backup and restore (docs/devices.md). A backup, encrypted under the
// recovery key shown at account set-up (keyring.SealBackup), holds the
// account root key and the account's shared state: profile, preferences,
// contacts with their pair secrets, and each conversation's id and root
// secret. It holds no message keys and no history: a restored device
// certifies itself with the account root (contacts see the same account,
// so no safety number changes), asks the members of each conversation to
// let it back in (RejoinProtocol), and gets a new epoch, the conversation
// root and the history from whichever member answers, as a linked device
// does from its own account's devices.

// RejoinProtocol carries a certified device's request to be sealed into a
// conversation of its account.
const RejoinProtocol = "/glitr/rejoin/1.0.0"

const backupStateSecret = "glitr-state"

var rejoinPrefix = ds.NewKey("/rejoin") // conversation id -> sealed root

// ErrNoRecoveryKey: the account was never set up on this device.
var ErrNoRecoveryKey = errors.New("no recovery key on this device: finish setting up the account first")

// backupState is the account's shared state in a backup.
type backupState struct {
	Name          string            `cbor:"1,keyasint,omitempty"`
	AvatarMime    string            `cbor:"2,keyasint,omitempty"`
	Avatar        []byte            `cbor:"3,keyasint,omitempty"`
	Prefs         map[string]string `cbor:"4,keyasint,omitempty"`
	Contacts      []card.Card       `cbor:"5,keyasint,omitempty"`
	ContactNames  [][]byte          `cbor:"6,keyasint,omitempty"` // account (32) ‖ name
	Pairs         [][]byte          `cbor:"7,keyasint,omitempty"` // account (32) ‖ pair secret (32)
	Conversations [][]byte          `cbor:"8,keyasint,omitempty"` // id (16) ‖ root (32)
	Devices       [][]byte          `cbor:"9,keyasint,omitempty"` // device ids known to the account
}

// Backup writes the account's backup, encrypted under its recovery key.
func (c *Chat) Backup(ctx context.Context) ([]byte, error) {
	c.idMu.Lock()
	rkBytes := c.id.Keyring.Secrets[recoveryKeyName]
	acct := c.id.Keyring.Account
	c.idMu.Unlock()
	if len(rkBytes) != keyring.KeySize {
		return nil, ErrNoRecoveryKey
	}
	if acct == nil {
		return nil, errors.New("this device does not hold the account root key")
	}
	v := c.accountSnapshot()
	st := backupState{Name: v.name, AvatarMime: v.mime, Avatar: v.avatar, Prefs: v.prefs}
	for a, ct := range v.contacts {
		if ct.Name != "" {
			st.ContactNames = append(st.ContactNames, append(append([]byte{}, a[:]...), ct.Name...))
		}
	}
	for _, d := range v.devices {
		st.Devices = append(st.Devices, append([]byte{}, d.Device[:]...))
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
	raw, err := canonicalEnc.Marshal(st)
	if err != nil {
		return nil, err
	}
	return keyring.SealBackup(rand.Reader, keyring.RecoveryKey(rkBytes), keyring.Backup{
		Account: acct, Secrets: map[string][]byte{backupStateSecret: raw}, Created: c.now(),
	})
}

// Backup implements webui.BackupBackend.
func (n *Node) Backup(ctx context.Context) ([]byte, error) {
	c, err := n.readyChat()
	if err != nil {
		return nil, devicesErr(err)
	}
	b, err := c.Backup(ctx)
	return b, devicesErr(err)
}

// Restore brings an account back on this fresh node from a backup and its
// 24 recovery words. Wrong words or a damaged file give a precise error
// and change nothing. The node then asks contacts to let it back into
// each conversation. It implements webui.BackupBackend.
func (n *Node) Restore(ctx context.Context, words string, data []byte) error {
	return devicesErr(n.restore(ctx, words, data))
}

func (n *Node) restore(ctx context.Context, words string, data []byte) error {
	rk, err := keyring.ParseRecoveryWords(words)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	b, err := keyring.OpenBackup(rk, data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	var st backupState
	if err := linkDec.Unmarshal(b.Secrets[backupStateSecret], &st); err != nil {
		return fmt.Errorf("%w: backup state: %w", ErrBadInput, err)
	}
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	v := c.accountSnapshot()
	c.mu.RLock()
	fresh := v.name == "" && len(c.contacts) == 0 && len(c.convs) == 0
	c.mu.RUnlock()
	if !fresh {
		return ErrNotFresh
	}
	host, _ := os.Hostname()
	cert, err := b.Account.Certify(c.id.DeviceID(), host, c.now(), time.Time{})
	if err != nil {
		return err
	}
	bundle := linkBundle{AccountSeed: b.Account.Seed(), Cert: cert, Recovery: rk[:], Contacts: st.Contacts, Pairs: st.Pairs}
	if st.Conversations == nil {
		st.Conversations = [][]byte{}
	}
	if err := n.adoptAccount(ctx, b.Account.ID(), bundle, st.Conversations); err != nil {
		return err
	}
	c, err = n.readyChat()
	if err != nil {
		return err
	}
	// The account DAG starts anew, seeded from the backup.
	ops := []crdt.Op{}
	if st.Name != "" {
		ops = append(ops, crdt.ProfileName{Name: st.Name})
	}
	if len(st.Avatar) > 0 {
		ops = append(ops, crdt.ProfileAvatar{Mime: st.AvatarMime, Data: st.Avatar})
	}
	for k, val := range st.Prefs {
		ops = append(ops, crdt.SetPreference{Key: k, Value: val})
	}
	added := crdt.ContactAdded
	for _, cn := range st.ContactNames {
		if len(cn) <= 32 {
			continue
		}
		name := string(cn[32:])
		ops = append(ops, crdt.ContactUpdate{Account: crdt.AccountID(cn[:32]), Name: &name, Status: &added})
	}
	if len(ops) > 0 {
		if err := c.commitAccount(ctx, ops...); err != nil {
			return err
		}
	}
	n.log.Info("account restored from a backup", "account", b.Account.ID().String()[:16], "conversations", len(st.Conversations))
	return nil
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

// rejoinLoop asks connected contacts to seal this device into each
// conversation it was restored into, until every one has arrived.
func (c *Chat) rejoinLoop() {
	for {
		pending := c.pendingRejoins(c.ctx)
		if len(pending) == 0 {
			return
		}
		card, err := c.myCardRaw()
		if err == nil {
			c.mu.RLock()
			var peers []peer.ID
			for _, vc := range c.contacts {
				if c.n.Host.Network().Connectedness(vc.Peer.ID) == network.Connected {
					peers = append(peers, vc.Peer.ID)
				}
			}
			c.mu.RUnlock()
			for _, id := range pending {
				for _, p := range peers {
					if c.askRejoin(c.ctx, p, id, card) == nil {
						break
					}
				}
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
	}
}

type rejoinRequest struct {
	Conversation []byte    `cbor:"1,keyasint"`
	Card         card.Card `cbor:"2,keyasint"`
}

func (c *Chat) askRejoin(ctx context.Context, p peer.ID, conv []byte, card card.Card) error {
	req, err := canonicalEnc.Marshal(rejoinRequest{Conversation: conv, Card: card})
	if err != nil {
		return err
	}
	return request.Ack(ctx, c.n.Host, p, RejoinProtocol, req, 10*time.Second)
}

// handleRejoin lets a certified device of a member account into a
// conversation: a new epoch sealed to it, a welcome with the root and the
// history. Anything else is refused without detail.
func (c *Chat) handleRejoin(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	b, ok := c.requests.Read(s, "rejoin", 15*time.Second)
	if !ok {
		return
	}
	var req rejoinRequest
	if err := card.Dec.Unmarshal(b, &req); err != nil {
		s.Reset()
		return
	}
	vc, err := card.Verify(req.Card, c.now())
	if err != nil || vc.Peer.ID != from {
		s.Reset()
		return
	}
	conv, err := c.conversationByID(req.Conversation)
	if err != nil || conv.acct != nil {
		s.Reset()
		return
	}
	conv.mu.Lock()
	member, _ := conv.state.IsMember(crdt.AccountID(vc.Cert.Account))
	_, revoked := conv.revoked[vc.Cert.Device]
	conv.mu.Unlock()
	if !member || revoked {
		s.Reset()
		return
	}
	_, _ = s.Write([]byte{1})
	c.wg.Go(func() {
		parts, err := c.rotate(c.ctx, conv, []crdt.Op{announceOf(vc)}, []card.Verified{vc}, nil)
		if err != nil {
			c.log.Warn("seal a returning device into a conversation", "conv", conv.hexID, "err", err)
			return
		}
		c.sendWelcome(c.ctx, conv, vc, parts, true)
	})
}
