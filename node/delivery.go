package node

// The conversation service's side of attachments (node/files) and of
// mailboxes (node/offline): the narrow interfaces those services own,
// implemented on Chat, and the hooks that tell them what happened.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/files"
	"github.com/glitr-chat/glitr/node/mailbox"
	"github.com/glitr-chat/glitr/node/offline"
)

// AttachmentsDirName holds the attachment chunks, one file each
// (docs/attachments.md §6).
const AttachmentsDirName = "attachments"

// DefaultAutoDownload is the auto-download cap until the user sets one.
const DefaultAutoDownload = 16 << 20

// startDelivery starts the attachment and mailbox services of a personal
// node; the conversations are loaded.
func (n *Node) startDelivery(ctx context.Context, c *Chat) error {
	quota := uint64(n.Config.Attachments.QuotaMB) << 20
	fs, err := files.New(ctx, n.Host, n.Store, filesChat{c}, files.Options{
		Dir: filepath.Join(n.Dir.Path, AttachmentsDirName), Quota: quota,
		AutoDownload: func() uint64 { return DefaultAutoDownload },
		Penalize:     n.Penalize, Logger: n.log, Now: c.now,
		Changed: func(conv string, id crdt.MsgID) {
			c.events.publish(Event{Kind: "message", Conversation: conv, Message: id.String()})
		},
	})
	if err != nil {
		return fmt.Errorf("attachments: %w", err)
	}
	c.files = fs
	fs.Start()
	c.offline.Start()
	return nil
}

// prepareOffline makes the mailbox service and this device's mailbox
// address before the conversations load (loading can announce this
// device in them); startDelivery starts it.
func (n *Node) prepareOffline(ctx context.Context, c *Chat) error {
	secret, err := c.mailboxSecret(ctx)
	if err != nil {
		return err
	}
	relays, _ := parsePeers(n.Config.Mailbox.Relays) // validated at load
	c.offline = offline.New(n.Host, n.Store, offlineChat{c}, offline.Options{Secret: secret, Relays: relays, Logger: n.log, Now: c.now})
	if c.mailboxAddr, err = c.offline.Address(); err != nil {
		return fmt.Errorf("mailbox address: %w", err)
	}
	return nil
}

// mailboxSecretKey holds this device's mailbox secret, sealed under the
// store key like the rest of the device's secrets at rest.
var mailboxSecretKey = ds.NewKey("/offline/secret")

func (c *Chat) mailboxSecret(ctx context.Context) ([mailbox.SecretSize]byte, error) {
	var s [mailbox.SecretSize]byte
	sealed, err := c.ds.Get(ctx, mailboxSecretKey)
	switch {
	case err == nil:
		plain, err := keyring.OpenAtRest(c.storeKey(), "mailbox-secret", sealed)
		if err != nil || len(plain) != len(s) {
			return s, fmt.Errorf("mailbox secret does not open: %v", err)
		}
		copy(s[:], plain)
		return s, nil
	case !errors.Is(err, ds.ErrNotFound):
		return s, err
	}
	if _, err := rand.Read(s[:]); err != nil {
		return s, err
	}
	sealed, err = keyring.SealAtRest(c.storeKey(), "mailbox-secret", s[:])
	if err != nil {
		return s, err
	}
	if err := c.ds.Put(ctx, mailboxSecretKey, sealed); err != nil {
		return s, err
	}
	return s, c.ds.Sync(ctx, mailboxSecretKey)
}

// closeDelivery stops both services (the mailbox one deposits what is
// queued first).
func (c *Chat) closeDelivery() {
	if c.offline != nil {
		c.offline.Close()
	}
	if c.files != nil {
		c.files.Close()
	}
}

// noteApplied tells the services what applied events changed: messages
// with attachments arrived, messages were deleted. conv.mu is held, so
// they are told from another goroutine (they call back into Chat).
func (c *Chat) noteApplied(conv *conversation, events []crdt.Event) {
	if c.files == nil || conv.acct != nil {
		return
	}
	var arrived, deleted []crdt.MsgID
	for _, ev := range events {
		for i, op := range ev.Ops {
			switch o := op.(type) {
			case crdt.Message:
				if len(o.Attachment) > 0 {
					arrived = append(arrived, crdt.MsgID{Event: ev.ID, Index: uint16(i)})
				}
			case crdt.Delete:
				deleted = append(deleted, o.Target)
			}
		}
	}
	if len(arrived)+len(deleted) == 0 {
		return
	}
	hexID := conv.hexID
	c.wg.Go(func() {
		if len(arrived) > 0 {
			c.files.Arrived(hexID, arrived)
		}
		if len(deleted) > 0 {
			c.files.Deleted(hexID, deleted)
		}
	})
}

// depositOffline hands an own block to the mailbox service for the
// member devices that are not online.
func (c *Chat) depositOffline(conv *conversation, blk dag.Block) {
	if c.offline == nil || conv.acct != nil {
		return
	}
	env, err := blk.EnvelopeBytes()
	if err != nil {
		return
	}
	self := crdt.DeviceID(c.id.DeviceID())
	var to []offline.Recipient
	conv.mu.Lock()
	syncID := bytes.Clone(conv.syncID)
	for _, m := range conv.state.Members() {
		for _, d := range conv.state.Devices(m.Account) {
			if _, revoked := conv.revoked[keyring.DeviceID(d.Device)]; d.Device == self || len(d.Mailbox) == 0 || revoked {
				continue
			}
			if p, err := peer.IDFromBytes(d.Peer); err == nil {
				to = append(to, offline.Recipient{Peer: p, Mailbox: bytes.Clone(d.Mailbox)})
			}
		}
	}
	conv.mu.Unlock()
	if len(to) > 0 {
		c.offline.Deposit(syncID, env, to)
	}
}

// filesChat is the conversation service as node/files sees it.
type filesChat struct{ c *Chat }

func (f filesChat) PostFile(ctx context.Context, conv string, msg crdt.Message, clientID string) (crdt.MsgID, bool, error) {
	return f.c.postOnce(ctx, conv, msg, clientID)
}

func (f filesChat) Attachment(hexID string, id crdt.MsgID) ([]byte, crdt.AccountID, bool, bool) {
	conv, err := f.c.conversation(hexID)
	if err != nil || conv.acct != nil {
		return nil, crdt.AccountID{}, false, false
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if member, _ := conv.state.IsMember(crdt.AccountID(f.c.id.AccountID())); !member {
		return nil, crdt.AccountID{}, false, false
	}
	manifest, deleted, ok := conv.state.Attachment(id)
	if !ok {
		return nil, crdt.AccountID{}, false, false
	}
	var author crdt.AccountID
	if v, ok := conv.state.Message(id); ok {
		author = v.Author
	}
	return manifest, author, deleted, true
}

func (f filesChat) EachAttachment(fn func(conv string, id crdt.MsgID, manifest []byte, deleted bool)) {
	for _, conv := range f.c.conversationList() {
		if conv.acct != nil {
			continue
		}
		type item struct {
			id       crdt.MsgID
			manifest []byte
			deleted  bool
		}
		var items []item
		conv.mu.Lock()
		conv.state.EachAttachment(func(id crdt.MsgID, m []byte, deleted bool) { items = append(items, item{id, m, deleted}) })
		conv.mu.Unlock()
		for _, it := range items {
			fn(conv.hexID, it.id, it.manifest, it.deleted)
		}
	}
}

func (f filesChat) IsMemberDevice(hexID string, p peer.ID) bool {
	conv, err := f.c.conversation(hexID)
	return err == nil && conv.acct == nil && f.c.maySync(conv, p)
}

func (f filesChat) MemberPeers(hexID string, author crdt.AccountID) []peer.ID {
	conv, err := f.c.conversation(hexID)
	if err != nil {
		return nil
	}
	self := crdt.DeviceID(f.c.id.DeviceID())
	var first, rest []peer.ID
	conv.mu.Lock()
	for _, m := range conv.state.Members() {
		for _, d := range conv.state.Devices(m.Account) {
			p, err := peer.IDFromBytes(d.Peer)
			if _, revoked := conv.revoked[keyring.DeviceID(d.Device)]; d.Device == self || err != nil || revoked {
				continue
			}
			if m.Account == author {
				first = append(first, p)
			} else {
				rest = append(rest, p)
			}
		}
	}
	conv.mu.Unlock()
	// Connected peers before the others, the author's first of all.
	h := f.c.net.Host
	connected := func(ps []peer.ID) (on, off []peer.ID) {
		for _, p := range ps {
			if h.Network().Connectedness(p) == network.Connected {
				on = append(on, p)
			} else {
				off = append(off, p)
			}
		}
		return on, off
	}
	fOn, fOff := connected(first)
	rOn, rOff := connected(rest)
	return append(append(append(fOn, rOn...), fOff...), rOff...)
}

// offlineChat is the conversation service as node/offline sees it.
type offlineChat struct{ c *Chat }

func (o offlineChat) IngestMailbox(ctx context.Context, syncID []byte, envs [][]byte) error {
	o.c.mu.RLock()
	conv := o.c.bySync[string(syncID)]
	o.c.mu.RUnlock()
	if conv == nil {
		return offline.ErrUnknownConversation
	}
	// A catch-up batch: bad envelopes come back as ErrBadPeer (dropped),
	// blocks under an epoch not here yet as another error (kept at the
	// relay, drained again later).
	res, err := o.c.ingest(ctx, conv, mailboxPeer, envs, false)
	for try := 0; try < 3 && (errors.Is(err, errEpochArrived) || (err == nil && res.notReady > 0 && res.committed > 0)); try++ {
		// The batch installed an epoch (or the links) that later
		// envelopes of it needed: once more, now that it is here.
		res, err = o.c.ingest(ctx, conv, mailboxPeer, envs, false)
	}
	switch {
	case errors.Is(err, errDuplicate):
		return nil
	case err == nil && (res.staged > 0 || res.notReady > 0):
		// Held only in memory, waiting for parents or an epoch: acked
		// once committed, so a restart loses none of them.
		return fmt.Errorf("%w: %d staged, %d whose links are not here", offline.ErrNotReady, res.staged, res.notReady)
	case err != nil && !errors.Is(err, ErrBadPeer) && o.c.ctx.Err() == nil:
		// An epoch not here yet, or the like: not the store's fault.
		return fmt.Errorf("%w: %w", offline.ErrNotReady, err)
	}
	return err
}

// mailboxPeer stands for "a mailbox" where ingest wants the peer a batch
// came from: nobody to penalise or to sync with.
const mailboxPeer = peer.ID("")
