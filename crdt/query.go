package crdt

import (
	"bytes"
	"cmp"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
)

// Member is one current member of a conversation.
type Member struct {
	Account AccountID
	Admin   bool
}

// Members returns the current members sorted by account.
func (c *Conversation) Members() []Member {
	var out []Member
	for a, st := range c.m.final {
		if st.member {
			out = append(out, Member{Account: c.g.accts[a], Admin: st.admin})
		}
	}
	slices.SortFunc(out, func(x, y Member) int { return bytes.Compare(x.Account[:], y.Account[:]) })
	return out
}

// IsMember reports whether a is a current member, and whether an admin.
func (c *Conversation) IsMember(a AccountID) (member, admin bool) {
	i, ok := c.g.acctIdx[a]
	if !ok {
		return false, false
	}
	st := c.m.finalStatus(i)
	return st.member, st.admin
}

// Title returns the current title ("" if unset).
func (c *Conversation) Title() string {
	if c.title.ev < 0 {
		return ""
	}
	return c.g.events[c.title.ev].ops[c.title.op].(SetTitle).Title
}

// Direct reports whether the conversation is a one-to-one chat: it has no
// title, and in all its history one account besides the creator was ever
// added. Adding a third account makes it a group for good.
func (c *Conversation) Direct() bool {
	if c.Title() != "" || c.g.root < 0 {
		return false
	}
	creator := c.g.events[c.g.root].acct
	other := int32(-1)
	for _, o := range c.m.valid {
		if o.kind != memAdd || o.target == creator {
			continue
		}
		if other >= 0 && other != o.target {
			return false
		}
		other = o.target
	}
	return other >= 0
}

// MemberName returns the display name account a published in the
// conversation ("" if none). It is a's own claim.
func (c *Conversation) MemberName(a AccountID) string {
	i, ok := c.g.acctIdx[a]
	if !ok {
		return ""
	}
	r, ok := c.names[i]
	if !ok {
		return ""
	}
	return c.g.events[r.ev].ops[r.op].(MemberProfile).Name
}

// Avatar returns the current avatar (empty data if unset). The slice is
// shared with the state: do not modify it.
func (c *Conversation) Avatar() (mime string, data []byte) {
	if c.avatar.ev < 0 {
		return "", nil
	}
	a := c.g.events[c.avatar.ev].ops[c.avatar.op].(SetAvatar)
	return a.Mime, a.Data
}

// Reaction is one emoji on a message and the accounts that put it there,
// sorted by account.
type Reaction struct {
	Emoji    string
	Accounts []AccountID
}

// MessageView is a message as displayed.
type MessageView struct {
	ID     MsgID
	Author AccountID
	Device DeviceID
	Seq    uint64 // the carrying event's per-device sequence number
	Height uint64
	Time   int64 // author's clock, unix ms; display only
	Text   string
	// Attachment is the message's encoded attachment manifest, nil for a
	// text-only message and for a deleted one.
	Attachment []byte
	ReplyTo    *MsgID
	Edited     bool
	Deleted    bool // tombstone: Text empty, no reactions
	// Reactions sorted by emoji; only emojis with at least one account.
	Reactions []Reaction
}

// Len returns the number of messages (deleted ones included, as tombstones).
func (c *Conversation) Len() int { return len(c.display) }

// At returns the message at display position i (0 = oldest).
func (c *Conversation) At(i int) MessageView { return c.view(c.display[i]) }

// Message returns the message with the given id.
func (c *Conversation) Message(id MsgID) (MessageView, bool) {
	mi, res := c.lookup(id)
	if res != lookupFound {
		return MessageView{}, false
	}
	return c.view(mi), true
}

// Position returns the display position of a message.
func (c *Conversation) Position(id MsgID) (int, bool) {
	mi, res := c.lookup(id)
	if res != lookupFound {
		return 0, false
	}
	m := &c.msgs[mi]
	e := &c.g.events[m.ev]
	i, ok := slices.BinarySearchFunc(c.display, mi, func(x, _ int32) int {
		mx := &c.msgs[x]
		ex := &c.g.events[mx.ev]
		return cmp.Or(cmp.Compare(ex.height, e.height),
			strings.Compare(ex.id.KeyString(), e.id.KeyString()),
			cmp.Compare(mx.op, m.op))
	})
	return i, ok
}

// Page returns up to n messages immediately before display position
// before (exclusive), oldest first. Use before = Len() for the newest page.
func (c *Conversation) Page(before, n int) []MessageView {
	before = min(max(before, 0), len(c.display))
	from := max(before-max(n, 0), 0)
	out := make([]MessageView, 0, before-from)
	for _, mi := range c.display[from:before] {
		out = append(out, c.view(mi))
	}
	return out
}

func (c *Conversation) view(mi int32) MessageView {
	m := &c.msgs[mi]
	e := &c.g.events[m.ev]
	op := e.ops[m.op].(Message)
	v := MessageView{
		ID:      MsgID{Event: e.id, Index: m.op},
		Author:  c.g.accts[e.acct],
		Device:  c.g.devs[e.dev].id,
		Seq:     e.seq,
		Height:  e.height,
		Time:    e.time,
		ReplyTo: op.ReplyTo,
		Deleted: m.deleted,
	}
	if m.deleted {
		return v
	}
	v.Text = op.Text
	v.Attachment = op.Attachment
	if m.edit.ev >= 0 {
		v.Text = c.g.events[m.edit.ev].ops[m.edit.op].(Edit).Text
		v.Edited = true
	}
	for _, r := range m.reactions {
		if len(r.tags) == 0 {
			continue
		}
		i, found := slices.BinarySearchFunc(v.Reactions, r.emoji, func(x Reaction, t string) int { return strings.Compare(x.Emoji, t) })
		if !found {
			v.Reactions = slices.Insert(v.Reactions, i, Reaction{Emoji: r.emoji})
		}
		v.Reactions[i].Accounts = append(v.Reactions[i].Accounts, c.g.accts[r.acct])
	}
	for _, r := range v.Reactions {
		slices.SortFunc(r.Accounts, func(x, y AccountID) int { return bytes.Compare(x[:], y[:]) })
	}
	return v
}

// Receipts returns what account a has acknowledged: delivered covers read.
func (c *Conversation) Receipts(a AccountID) (delivered, read Position) {
	i, ok := c.g.acctIdx[a]
	if !ok {
		return nil, nil
	}
	return c.delivered[i], c.read[i]
}

// Status is the delivery state of a message for one recipient. "Sending"
// is an outbox state of the node and never appears here.
type Status uint8

// Delivery states, in increasing order.
const (
	StatusSent      Status = 1 // in the DAG
	StatusDelivered Status = 2 // recipient's receipt covers it
	StatusRead      Status = 3 // recipient's read receipt covers it
)

// RecipientStatus is one recipient's state for a message.
type RecipientStatus struct {
	Account AccountID
	Status  Status
}

// MessageStatus returns the state of a message for every current member
// other than its author, and the overall state (the minimum; Read if
// there is no other member). Cost: O(members · log devices).
func (c *Conversation) MessageStatus(id MsgID) (overall Status, per []RecipientStatus, ok bool) {
	mi, res := c.lookup(id)
	if res != lookupFound {
		return 0, nil, false
	}
	e := &c.g.events[c.msgs[mi].ev]
	dev := c.g.devs[e.dev].id
	overall = StatusRead
	for a, st := range c.m.final {
		if !st.member || int32(a) == e.acct {
			continue
		}
		s := StatusSent
		switch {
		case c.read[int32(a)].Covers(dev, e.seq):
			s = StatusRead
		case c.delivered[int32(a)].Covers(dev, e.seq):
			s = StatusDelivered
		}
		per = append(per, RecipientStatus{Account: c.g.accts[a], Status: s})
		overall = min(overall, s)
	}
	slices.SortFunc(per, func(x, y RecipientStatus) int { return bytes.Compare(x.Account[:], y.Account[:]) })
	return overall, per, true
}

// UnreadCount returns how many messages by other accounts, not deleted,
// are not covered by position read. Cost: O(devices · log + unread).
func (c *Conversation) UnreadCount(a AccountID, read Position) int {
	self, hasSelf := c.g.acctIdx[a]
	n := 0
	for d := range c.g.devs {
		dr := &c.g.devs[d]
		if hasSelf && dr.acct == self {
			continue
		}
		seen := read.Get(dr.id)
		for s := len(dr.evs); s > 0 && uint64(s) > seen; s-- {
			e := &c.g.events[dr.evs[s-1]]
			if !e.valid || e.first < 0 {
				continue
			}
			for mi := e.first; int(mi) < len(c.msgs) && c.msgs[mi].ev == dr.evs[s-1]; mi++ {
				if !c.msgs[mi].deleted {
					n++
				}
			}
		}
	}
	return n
}

// RotationView is one recorded epoch rotation.
type RotationView struct {
	Event      cid.Cid
	Op         uint16
	Author     AccountID
	Device     DeviceID
	Lamport    uint64
	Payload    []byte // shared with the state: do not modify
	Recipients []Recipient
	// Tainted: sealed to an account that has a removal outside this
	// rotation's causal past, so the removed member may hold the secret.
	Tainted bool
}

// Rotations returns every rotation of a valid event, sorted by (Lamport, CID, op).
func (c *Conversation) Rotations() []RotationView {
	out := make([]RotationView, 0, len(c.rotations))
	for _, r := range c.rotations {
		out = append(out, c.rotationView(r))
	}
	slices.SortFunc(out, func(x, y RotationView) int {
		return cmp.Or(cmp.Compare(x.Lamport, y.Lamport), strings.Compare(x.Event.KeyString(), y.Event.KeyString()), cmp.Compare(x.Op, y.Op))
	})
	return out
}

// CurrentEpoch returns the untainted rotation with the greatest (Lamport,
// CID, op): every replica picks the same one. ok is false when there is
// none, which tells the node that it must rotate.
func (c *Conversation) CurrentEpoch() (RotationView, bool) {
	rs := c.Rotations()
	for i := len(rs) - 1; i >= 0; i-- {
		if !rs[i].Tainted {
			return rs[i], true
		}
	}
	return RotationView{}, false
}

func (c *Conversation) rotationView(r opRef) RotationView {
	e := &c.g.events[r.ev]
	op := e.ops[r.op].(Rotation)
	return RotationView{
		Event: e.id, Op: r.op, Author: c.g.accts[e.acct], Device: c.g.devs[e.dev].id,
		Lamport: e.lamport, Payload: op.Payload, Recipients: op.Recipients,
		Tainted: c.tainted(r.ev, op),
	}
}

func (c *Conversation) tainted(ev int32, op Rotation) bool {
	for _, rm := range c.m.removals {
		if c.g.before(rm.ev, ev) {
			continue
		}
		for _, rc := range op.Recipients {
			if i, ok := c.g.acctIdx[rc.Account]; ok && i == rm.target {
				return true
			}
		}
	}
	return false
}

// DeviceCert is a device announced in the conversation.
type DeviceCert struct {
	Device DeviceID
	Cert   []byte // shared with the state: do not modify
	Prekey []byte // the announced signed prekey, if any; shared likewise
	Peer   []byte // the announced peer id, if any; shared likewise
	// Mailbox is the announced mailbox address, if any; shared likewise.
	Mailbox []byte
}

// Devices returns the devices announced for account a, sorted by device.
// When a device was announced twice, the LWW winner's certificate is kept.
func (c *Conversation) Devices(a AccountID) []DeviceCert {
	i, ok := c.g.acctIdx[a]
	if !ok {
		return nil
	}
	var out []DeviceCert
	for k, r := range c.devices {
		if k.acct == i {
			da := c.g.events[r.ev].ops[r.op].(DeviceAnnounce)
			out = append(out, DeviceCert{Device: k.dev, Cert: da.Cert, Prekey: da.Prekey, Peer: da.Peer, Mailbox: da.Mailbox})
		}
	}
	slices.SortFunc(out, func(x, y DeviceCert) int { return bytes.Compare(x.Device[:], y.Device[:]) })
	return out
}

// Heads returns the applied events that no applied event names as parent,
// sorted by CID. Handy for tests and for building the next event.
func (c *Conversation) Heads() []cid.Cid { return c.g.heads() }

func (g *graph) heads() []cid.Cid {
	child := make([]bool, len(g.events))
	for _, p := range g.parents {
		child[p] = true
	}
	var out []cid.Cid
	for i, has := range child {
		if !has {
			out = append(out, g.events[i].id)
		}
	}
	slices.SortFunc(out, func(x, y cid.Cid) int { return strings.Compare(x.KeyString(), y.KeyString()) })
	return out
}

// Attachment returns the attachment manifest the message was posted with,
// even after a delete for everyone (whose view shows nothing): the node
// needs it to drop the file. ok is false for an unknown message or one
// without an attachment.
func (c *Conversation) Attachment(id MsgID) (manifest []byte, deleted, ok bool) {
	mi, res := c.lookup(id)
	if res != lookupFound {
		return nil, false, false
	}
	m := &c.msgs[mi]
	op := c.g.events[m.ev].ops[m.op].(Message)
	if op.Attachment == nil {
		return nil, false, false
	}
	return op.Attachment, m.deleted, true
}

// EachAttachment calls fn for every message posted with an attachment, in
// display order, deleted ones included (see Attachment). It builds no
// views, so a scan of a long history is cheap.
func (c *Conversation) EachAttachment(fn func(id MsgID, manifest []byte, deleted bool)) {
	for _, mi := range c.display {
		m := &c.msgs[mi]
		e := &c.g.events[m.ev]
		if op := e.ops[m.op].(Message); op.Attachment != nil {
			fn(MsgID{Event: e.id, Index: m.op}, op.Attachment, m.deleted)
		}
	}
}
