package crdt

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
)

// Account is the merged state of a user's private account DAG, written by
// the account's own devices. The zero value is not usable; call
// NewAccount. Not safe for concurrent use.
//
// Device revocation is permanent and strong: events of a revoked device
// with a sequence number above the revocation's cutoff have no effect,
// even if they were applied before the revocation arrived.
type Account struct {
	g graph

	controls []int32          // root and revocation events, apply order
	cutoff   map[int32]uint64 // device index -> highest seq that counts
	dirty    bool

	name, avatar opRef
	prefs        map[string]opRef
	contacts     map[AccountID]*contactRec
	convs        map[string]*convRec
	devAdds      map[DeviceID]opRef
	readMarks    map[string]Position
	blocked      map[AccountID]opRef
}

type contactRec struct{ name, verif, status opRef }

type convRec struct{ typ, title, archived, muted, left opRef }

// NewAccount returns an empty account state. The first parentless event's
// account is the owner; events of other accounts have no effect.
func NewAccount() *Account {
	a := &Account{g: newGraph(), cutoff: map[int32]uint64{}}
	a.resetDerived()
	return a
}

func (a *Account) resetDerived() {
	a.name, a.avatar = noRef, noRef
	a.prefs = map[string]opRef{}
	a.contacts = map[AccountID]*contactRec{}
	a.convs = map[string]*convRec{}
	a.devAdds = map[DeviceID]opRef{}
	a.readMarks = map[string]Position{}
	a.blocked = map[AccountID]opRef{}
}

// Apply merges one event; see Conversation.Apply for the contract.
func (a *Account) Apply(e Event) error {
	err := a.apply(&e)
	if a.dirty {
		a.rebuild()
	}
	return err
}

// ApplyBatch applies events in order and stops at the first error,
// returning how many were processed before it.
func (a *Account) ApplyBatch(events []Event) (int, error) {
	if len(events) >= reserveMin {
		a.g.reserve(events)
	}
	for i := range events {
		if err := a.apply(&events[i]); err != nil {
			if a.dirty {
				a.rebuild()
			}
			return i, fmt.Errorf("event %d: %w", i, err)
		}
	}
	if a.dirty {
		a.rebuild()
	}
	return len(events), nil
}

func revokes(ops []Op) bool {
	for _, op := range ops {
		if _, ok := op.(DeviceRevoke); ok {
			return true
		}
	}
	return false
}

func (a *Account) apply(e *Event) error {
	ctl := len(e.Parents) == 0 || revokes(e.Ops)
	idx, dup, err := a.g.add(e, ctl)
	if err != nil || dup {
		return err
	}
	if ctl {
		old := maps.Clone(a.cutoff)
		a.controls = append(a.controls, idx)
		a.replay()
		if !maps.Equal(old, a.cutoff) {
			a.dirty = true
		}
	}
	if a.dirty {
		return nil
	}
	if a.g.events[idx].valid = a.eventValid(idx); a.g.events[idx].valid {
		a.reduce(idx)
	}
	return nil
}

// eventValid: authored by the owner account, by a device not revoked at
// or below this event's sequence number.
func (a *Account) eventValid(i int32) bool {
	e := &a.g.events[i]
	if a.g.root < 0 || e.acct != a.g.events[a.g.root].acct {
		return false
	}
	if c, ok := a.cutoff[e.dev]; ok && e.seq > c {
		return false
	}
	return true
}

// replay recomputes the revocation cutoffs. Revocation events are taken in
// the total order (height, CID); one counts if its own device is not
// revoked at its sequence number by an already-accepted revocation. When a
// device is revoked, accepted revocations it issued beyond the cutoff are
// excluded and the replay restarts (so of two devices revoking each other
// concurrently, the one first in the order wins). Deterministic.
func (a *Account) replay() {
	ctl := slices.Clone(a.controls)
	slices.SortFunc(ctl, a.g.order)
	excluded := map[int32]bool{}
	owner := a.g.events[a.g.root].acct
	for {
		restart := false
		cut := map[int32]uint64{}
		var accepted []int32
		for _, c := range ctl {
			e := &a.g.events[c]
			if excluded[c] || e.acct != owner {
				continue
			}
			if v, ok := cut[e.dev]; ok && e.seq > v {
				continue
			}
			accepted = append(accepted, c)
			for _, op := range e.ops {
				r, ok := op.(DeviceRevoke)
				if !ok {
					continue
				}
				di, known := a.g.devIdx[r.Device]
				if !known {
					// Never wrote here: revoked from the start.
					di = a.g.internDev(r.Device, owner)
				}
				limit := r.Cutoff
				if limit == 0 {
					if full := a.g.full[c]; int(di) < len(full) {
						limit = full[di]
					}
				}
				if v, ok := cut[di]; !ok || limit < v {
					cut[di] = limit
				}
				for _, p := range accepted {
					if pe := &a.g.events[p]; pe.dev == di && pe.seq > cut[di] {
						excluded[p] = true
						restart = true
					}
				}
			}
			if restart {
				break
			}
		}
		if !restart {
			a.cutoff = cut
			return
		}
	}
}

func (a *Account) rebuild() {
	a.dirty = false
	a.resetDerived()
	for i := range a.g.events {
		e := &a.g.events[i]
		if e.valid = a.eventValid(int32(i)); e.valid {
			a.reduce(int32(i))
		}
	}
}

func (a *Account) max(cur, cand opRef) opRef {
	if cur.ev < 0 || a.g.lwwKey(cur.ev, int(cur.op)).less(a.g.lwwKey(cand.ev, int(cand.op))) {
		return cand
	}
	return cur
}

func (a *Account) reduce(i int32) {
	for k, op := range a.g.events[i].ops {
		ref := opRef{i, uint16(k)}
		switch op := op.(type) {
		case ProfileName:
			a.name = a.max(a.name, ref)
		case ProfileAvatar:
			a.avatar = a.max(a.avatar, ref)
		case SetPreference:
			cur, ok := a.prefs[op.Key]
			if !ok {
				cur = noRef
			}
			a.prefs[op.Key] = a.max(cur, ref)
		case ContactUpdate:
			r := a.contacts[op.Account]
			if r == nil {
				r = &contactRec{noRef, noRef, noRef}
				a.contacts[op.Account] = r
			}
			if op.Name != nil {
				r.name = a.max(r.name, ref)
			}
			if op.Verification != nil {
				r.verif = a.max(r.verif, ref)
			}
			if op.Status != nil {
				r.status = a.max(r.status, ref)
			}
		case ConversationUpdate:
			r := a.convs[string(op.ID)]
			if r == nil {
				r = &convRec{noRef, noRef, noRef, noRef, noRef}
				a.convs[string(op.ID)] = r
			}
			set := func(p *opRef, present bool) {
				if present {
					*p = a.max(*p, ref)
				}
			}
			set(&r.typ, op.Type != nil)
			set(&r.title, op.TitleHint != nil)
			set(&r.archived, op.Archived != nil)
			set(&r.muted, op.Muted != nil)
			set(&r.left, op.Left != nil)
		case DeviceAdd:
			cur, ok := a.devAdds[op.Device]
			if !ok {
				cur = noRef
			}
			a.devAdds[op.Device] = a.max(cur, ref)
		case ContactBlock:
			cur, ok := a.blocked[op.Account]
			if !ok {
				cur = noRef
			}
			a.blocked[op.Account] = a.max(cur, ref)
		case ReadMark:
			k := string(op.Conversation)
			a.readMarks[k] = a.readMarks[k].Merge(op.Position)
		}
	}
}

func (a *Account) op(r opRef) Op { return a.g.events[r.ev].ops[r.op] }

// Profile returns the display name and avatar.
func (a *Account) Profile() (name, mime string, avatar []byte) {
	if a.name.ev >= 0 {
		name = a.op(a.name).(ProfileName).Name
	}
	if a.avatar.ev >= 0 {
		av := a.op(a.avatar).(ProfileAvatar)
		mime, avatar = av.Mime, av.Data
	}
	return name, mime, avatar
}

// Preferences returns the set preferences (unset keys omitted).
func (a *Account) Preferences() map[string]string {
	out := map[string]string{}
	for k, r := range a.prefs {
		if v := a.op(r).(SetPreference).Value; v != "" {
			out[k] = v
		}
	}
	return out
}

// Contact is one entry of the contact list.
type Contact struct {
	Account      AccountID
	Name         string
	Verification uint8 // Unverified, Verified, KeyChanged
	Status       uint8 // 0 (never set), ContactAdded, ContactRemoved
}

// Contacts returns all contacts, removed ones included, sorted by account.
func (a *Account) Contacts() []Contact {
	out := make([]Contact, 0, len(a.contacts))
	for id, r := range a.contacts {
		c := Contact{Account: id}
		if r.name.ev >= 0 {
			c.Name = *a.op(r.name).(ContactUpdate).Name
		}
		if r.verif.ev >= 0 {
			c.Verification = *a.op(r.verif).(ContactUpdate).Verification
		}
		if r.status.ev >= 0 {
			c.Status = *a.op(r.status).(ContactUpdate).Status
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Contact) int { return bytes.Compare(x.Account[:], y.Account[:]) })
	return out
}

// ConversationEntry is one entry of the conversation list.
type ConversationEntry struct {
	ID        []byte
	Type      uint8 // 0 (unset), ConvDirect, ConvGroup
	TitleHint string
	Archived  bool
	Muted     bool
	Left      bool
}

// Conversations returns the conversation list sorted by id.
func (a *Account) Conversations() []ConversationEntry {
	out := make([]ConversationEntry, 0, len(a.convs))
	for id, r := range a.convs {
		c := ConversationEntry{ID: []byte(id)}
		if r.typ.ev >= 0 {
			c.Type = *a.op(r.typ).(ConversationUpdate).Type
		}
		if r.title.ev >= 0 {
			c.TitleHint = *a.op(r.title).(ConversationUpdate).TitleHint
		}
		if r.archived.ev >= 0 {
			c.Archived = *a.op(r.archived).(ConversationUpdate).Archived
		}
		if r.muted.ev >= 0 {
			c.Muted = *a.op(r.muted).(ConversationUpdate).Muted
		}
		if r.left.ev >= 0 {
			c.Left = *a.op(r.left).(ConversationUpdate).Left
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y ConversationEntry) int { return bytes.Compare(x.ID, y.ID) })
	return out
}

// Blocked reports whether the account blocked acct.
func (a *Account) Blocked(acct AccountID) bool {
	r, ok := a.blocked[acct]
	return ok && a.op(r).(ContactBlock).Blocked
}

// BlockedAccounts returns the blocked accounts, sorted.
func (a *Account) BlockedAccounts() []AccountID {
	var out []AccountID
	for id := range a.blocked {
		if a.Blocked(id) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(x, y AccountID) int { return bytes.Compare(x[:], y[:]) })
	return out
}

// AccountDevice is a device of the account.
type AccountDevice struct {
	Device  DeviceID
	Name    string
	Cert    []byte // shared with the state: do not modify
	Revoked bool
	Cutoff  uint64 // when revoked: events above this sequence number are void
}

// Devices returns the devices added or revoked, sorted by device id.
func (a *Account) Devices() []AccountDevice {
	byDev := map[DeviceID]*AccountDevice{}
	for d, r := range a.devAdds {
		op := a.op(r).(DeviceAdd)
		byDev[d] = &AccountDevice{Device: d, Name: op.Name, Cert: op.Cert}
	}
	for di, c := range a.cutoff {
		id := a.g.devs[di].id
		if byDev[id] == nil {
			byDev[id] = &AccountDevice{Device: id}
		}
		byDev[id].Revoked, byDev[id].Cutoff = true, c
	}
	out := make([]AccountDevice, 0, len(byDev))
	for _, d := range byDev {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(x, y AccountDevice) int { return bytes.Compare(x.Device[:], y.Device[:]) })
	return out
}

// ReadPosition returns the read position in a conversation: the merge of
// every device's read marks.
func (a *Account) ReadPosition(conversation []byte) Position {
	return a.readMarks[string(conversation)]
}

// SnapshotOps returns ops that rebuild this account's visible state in a
// fresh account DAG: profile, preferences, contacts, blocks, the
// conversation list and read positions, in a deterministic order. It is
// what a backup carries, so that an account restored with no other device
// alive keeps its preferences, read marks and lists. Devices are not among
// them: a restored device certifies itself anew.
func (a *Account) SnapshotOps() []Op {
	var ops []Op
	if a.name.ev >= 0 {
		ops = append(ops, a.op(a.name))
	}
	if a.avatar.ev >= 0 {
		ops = append(ops, a.op(a.avatar))
	}
	for _, k := range slices.Sorted(maps.Keys(a.prefs)) {
		ops = append(ops, a.op(a.prefs[k]))
	}
	for _, id := range slices.SortedFunc(maps.Keys(a.contacts), func(x, y AccountID) int { return bytes.Compare(x[:], y[:]) }) {
		r := a.contacts[id]
		u := ContactUpdate{Account: id}
		if r.name.ev >= 0 {
			u.Name = a.op(r.name).(ContactUpdate).Name
		}
		if r.verif.ev >= 0 {
			u.Verification = a.op(r.verif).(ContactUpdate).Verification
		}
		if r.status.ev >= 0 {
			u.Status = a.op(r.status).(ContactUpdate).Status
		}
		ops = append(ops, u)
	}
	for _, id := range slices.SortedFunc(maps.Keys(a.blocked), func(x, y AccountID) int { return bytes.Compare(x[:], y[:]) }) {
		ops = append(ops, a.op(a.blocked[id]))
	}
	for _, id := range slices.Sorted(maps.Keys(a.convs)) {
		r := a.convs[id]
		u := ConversationUpdate{ID: []byte(id)}
		if r.typ.ev >= 0 {
			u.Type = a.op(r.typ).(ConversationUpdate).Type
		}
		if r.title.ev >= 0 {
			u.TitleHint = a.op(r.title).(ConversationUpdate).TitleHint
		}
		if r.archived.ev >= 0 {
			u.Archived = a.op(r.archived).(ConversationUpdate).Archived
		}
		if r.muted.ev >= 0 {
			u.Muted = a.op(r.muted).(ConversationUpdate).Muted
		}
		if r.left.ev >= 0 {
			u.Left = a.op(r.left).(ConversationUpdate).Left
		}
		ops = append(ops, u)
	}
	for _, id := range slices.Sorted(maps.Keys(a.readMarks)) {
		if p := a.readMarks[id]; len(p) > 0 {
			ops = append(ops, ReadMark{Conversation: []byte(id), Position: p})
		}
	}
	return ops
}

// StateHash returns SHA-256 over a canonical serialization of the visible
// account state: profile, preferences (sorted by key), contacts, the
// conversation list, devices with revocation cutoffs, and read positions
// (sorted by conversation id).
func (a *Account) StateHash() [32]byte {
	w := newHasher("glitr/v1/crdt/account-state")
	name, mime, av := a.Profile()
	w.str(name)
	w.str(mime)
	w.bytes(av)
	prefs := a.Preferences()
	keys := slices.Sorted(maps.Keys(prefs))
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(prefs[k])
	}
	cs := a.Contacts()
	w.uint(uint64(len(cs)))
	for _, c := range cs {
		w.bytes(c.Account[:])
		w.str(c.Name)
		w.uint(uint64(c.Verification))
		w.uint(uint64(c.Status))
	}
	convs := a.Conversations()
	w.uint(uint64(len(convs)))
	for _, c := range convs {
		w.bytes(c.ID)
		w.uint(uint64(c.Type))
		w.str(c.TitleHint)
		w.bool(c.Archived)
		w.bool(c.Muted)
		w.bool(c.Left)
	}
	ds := a.Devices()
	w.uint(uint64(len(ds)))
	for _, d := range ds {
		w.bytes(d.Device[:])
		w.str(d.Name)
		w.bytes(d.Cert)
		w.bool(d.Revoked)
		w.uint(d.Cutoff)
	}
	rk := slices.Sorted(maps.Keys(a.readMarks))
	w.uint(uint64(len(rk)))
	for _, k := range rk {
		w.str(k)
		w.position(a.readMarks[k])
	}
	bl := a.BlockedAccounts()
	w.uint(uint64(len(bl)))
	for _, b := range bl {
		w.bytes(b[:])
	}
	return w.sum()
}

// internDev returns the index of device d of account acct, adding a
// record without events if needed (a device revoked before it wrote).
func (g *graph) internDev(d DeviceID, acct int32) int32 {
	if i, ok := g.devIdx[d]; ok {
		return i
	}
	i := int32(len(g.devs))
	g.devs = append(g.devs, devRec{id: d, acct: acct, slot: -1})
	g.devIdx[d] = i
	return i
}
