package devices

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"time"

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

const backupStateSecret = "glitr-state"

// State is the account's shared state in a backup.
type State struct {
	Name          string            `cbor:"1,keyasint,omitempty"`
	AvatarMime    string            `cbor:"2,keyasint,omitempty"`
	Avatar        []byte            `cbor:"3,keyasint,omitempty"`
	Prefs         map[string]string `cbor:"4,keyasint,omitempty"`
	Contacts      []card.Card       `cbor:"5,keyasint,omitempty"`
	ContactNames  [][]byte          `cbor:"6,keyasint,omitempty"` // account (32) ‖ name
	Pairs         [][]byte          `cbor:"7,keyasint,omitempty"` // account (32) ‖ pair secret (32)
	Conversations [][]byte          `cbor:"8,keyasint,omitempty"` // id (16) ‖ root (32)
	Devices       [][]byte          `cbor:"9,keyasint,omitempty"` // device ids known to the account
	// Account is the account DAG's visible state as op batches (each
	// crdt.EncodeOps, at most 64 ops): profile, preferences, contacts,
	// blocks, the conversation list and read positions (crdt.Account's
	// SnapshotOps). A backup that has it restores from it; the fields
	// above are read only from older backups.
	Account [][]byte `cbor:"10,keyasint,omitempty"`
}

// maxBatch is the most ops in one batch of State.Account.
const maxBatch = 64

// EncodeAccount splits an account's snapshot ops into State.Account
// batches, each small enough for one block.
func EncodeAccount(ops []crdt.Op) ([][]byte, error) {
	var out [][]byte
	for len(ops) > 0 {
		n := min(maxBatch, len(ops))
		for {
			b, err := crdt.EncodeOps(ops[:n])
			if err == nil {
				out = append(out, b)
				break
			}
			if n == 1 {
				return nil, fmt.Errorf("backup: account state: %w", err)
			}
			n /= 2 // too large for one block (avatars): fewer at a time
		}
		ops = ops[n:]
	}
	return out, nil
}

// Backup writes the account's backup, encrypted under its recovery key.
func (s *Service) Backup(ctx context.Context) ([]byte, error) {
	st, rk, acct, err := s.chat.BackupState()
	if err != nil {
		return nil, err
	}
	raw, err := enc.Marshal(st)
	if err != nil {
		return nil, err
	}
	return keyring.SealBackup(rand.Reader, rk, keyring.Backup{
		Account: acct, Secrets: map[string][]byte{backupStateSecret: raw}, Created: s.now(),
	})
}

// Restored is a backup opened with its recovery words.
type Restored struct {
	Account  *keyring.AccountKey
	Recovery keyring.RecoveryKey
	State    State
}

// OpenBackup opens a backup with its 24 recovery words. Wrong words or a
// damaged file are ErrBadBackup, with the reason.
func OpenBackup(words string, data []byte) (Restored, error) {
	var r Restored
	rk, err := keyring.ParseRecoveryWords(words)
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	b, err := keyring.OpenBackup(rk, data)
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	if err := Dec.Unmarshal(b.Secrets[backupStateSecret], &r.State); err != nil {
		return r, fmt.Errorf("%w: backup state: %w", ErrBadBackup, err)
	}
	r.Account, r.Recovery = b.Account, rk
	return r, nil
}

// RestoreBundle certifies device (this one) with the backup's account root
// and returns the bundle it adopts, and the conversations (id ‖ root) it
// asks to rejoin.
func (r Restored) RestoreBundle(device keyring.DeviceID, now time.Time) (Bundle, [][]byte, error) {
	host, _ := os.Hostname()
	cert, err := r.Account.Certify(device, host, now, time.Time{})
	if err != nil {
		return Bundle{}, nil, err
	}
	rejoin := r.State.Conversations
	if rejoin == nil {
		rejoin = [][]byte{}
	}
	return Bundle{AccountSeed: r.Account.Seed(), Cert: cert, Recovery: r.Recovery[:], Contacts: r.State.Contacts, Pairs: r.State.Pairs}, rejoin, nil
}

// AccountOps are the batches of ops that seed a restored account DAG from
// the backup, each for one block: the account's state as it was backed up
// (State.Account), or, from a backup older than that, its profile,
// preferences and contacts' names.
func (st State) AccountOps() ([][]crdt.Op, error) {
	if len(st.Account) > 0 {
		out := make([][]crdt.Op, 0, len(st.Account))
		for i, b := range st.Account {
			ops, err := crdt.DecodeOps(b)
			if err != nil {
				return nil, fmt.Errorf("%w: account state batch %d: %w", ErrBadBackup, i, err)
			}
			out = append(out, ops)
		}
		return out, nil
	}
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
	if len(ops) == 0 {
		return nil, nil
	}
	return [][]crdt.Op{ops}, nil
}

type rejoinRequest struct {
	Conversation []byte    `cbor:"1,keyasint"`
	Card         card.Card `cbor:"2,keyasint"`
}

// rejoinLoop asks connected contacts to seal this device into each
// conversation it was restored into, until every one has arrived.
func (s *Service) rejoinLoop() {
	for {
		pending := s.chat.PendingRejoins(s.ctx)
		if len(pending) == 0 {
			return
		}
		if signed, err := s.chat.SignedPrekey(); err == nil {
			me := card.Of(s.chat.Self().Cert, signed, peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()})
			peers := s.chat.ConnectedContacts()
			for _, id := range pending {
				for _, p := range peers {
					if s.askRejoin(s.ctx, p, id, me) == nil {
						break
					}
				}
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
	}
}

func (s *Service) askRejoin(ctx context.Context, p peer.ID, conv []byte, me card.Card) error {
	req, err := enc.Marshal(rejoinRequest{Conversation: conv, Card: me})
	if err != nil {
		return err
	}
	return request.Ack(ctx, s.host, p, RejoinProtocol, req, 10*time.Second)
}

// handleRejoin lets a certified device of a member account into a
// conversation: a new epoch sealed to it, a welcome with the root and the
// history. Anything else is refused without detail.
func (s *Service) handleRejoin(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	b, ok := s.requests.Read(st, "rejoin", 15*time.Second)
	if !ok {
		return
	}
	var req rejoinRequest
	if err := card.Dec.Unmarshal(b, &req); err != nil {
		st.Reset()
		return
	}
	vc, err := card.Verify(req.Card, s.now())
	if err != nil || vc.Peer.ID != from || !s.chat.Readmit(s.ctx, req.Conversation, vc) {
		st.Reset()
		return
	}
	_, _ = st.Write([]byte{1})
}
