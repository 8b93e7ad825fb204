package crdt

import (
	"fmt"
	"slices"
	"strings"
)

// Conversation is the merged state of one conversation DAG. The zero value
// is not usable; call NewConversation. A Conversation is not safe for
// concurrent use: the node owns it from one goroutine (or behind a lock).
type Conversation struct {
	g graph
	m membership

	// Derived state, rebuilt from the valid events when membership
	// changes invalidate already-applied events.
	msgs      []msgRec
	display   []int32 // indices into msgs, in display order
	pending   map[MsgID][]opRef
	title     opRef // winning SetTitle, ev -1 if none
	avatar    opRef
	delivered map[int32]Position // by account index
	read      map[int32]Position
	rotations []opRef
	devices   map[devKey]opRef // winning DeviceAnnounce per (account, device)
	names     map[int32]opRef  // winning MemberProfile by account index
	dirty     bool
}

type opRef struct {
	ev int32
	op uint16
}

var noRef = opRef{ev: -1}

type devKey struct {
	acct int32
	dev  DeviceID
}

type msgRec struct {
	ev        int32
	op        uint16
	deleted   bool
	edit      opRef // winning edit, ev -1 if none
	reactions []reactRec
}

type reactRec struct {
	acct  int32
	emoji string
	tags  []opRef // live adds
}

// NewConversation returns an empty conversation state. The first applied
// event without parents becomes the root: its author's account is the
// creator and first admin.
func NewConversation() *Conversation {
	c := &Conversation{g: newGraph()}
	c.resetDerived()
	return c
}

func (c *Conversation) resetDerived() {
	c.msgs = c.msgs[:0]
	c.display = c.display[:0]
	c.pending = make(map[MsgID][]opRef)
	c.title, c.avatar = noRef, noRef
	c.delivered = make(map[int32]Position)
	c.read = make(map[int32]Position)
	c.rotations = c.rotations[:0]
	c.devices = make(map[devKey]opRef)
	c.names = make(map[int32]opRef)
}

// Apply merges one event. All parents must have been applied
// (ErrMissingParents otherwise). Applying an event twice is a no-op.
// An event rejected with an error leaves the state unchanged.
func (c *Conversation) Apply(e Event) error {
	err := c.apply(&e)
	if c.dirty {
		c.rebuild()
	}
	return err
}

// ApplyBatch applies events in order, as catch-up does. It stops at the
// first error and returns how many events were processed before it
// (duplicates included). Derived state is rebuilt at most once per batch.
func (c *Conversation) ApplyBatch(events []Event) (int, error) {
	c.reserve(events)
	for i := range events {
		if err := c.apply(&events[i]); err != nil {
			if c.dirty {
				c.rebuild()
			}
			return i, fmt.Errorf("event %d: %w", i, err)
		}
	}
	if c.dirty {
		c.rebuild()
	}
	return len(events), nil
}

// reserve sizes the arenas for a batch up front, so catch-up does not pay
// for repeated doubling and copying. Duplicates only over-reserve.
func (c *Conversation) reserve(events []Event) {
	if len(events) < reserveMin {
		return
	}
	msgs := 0
	for i := range events {
		for _, op := range events[i].Ops {
			if _, ok := op.(Message); ok {
				msgs++
			}
		}
	}
	c.g.reserve(events)
	c.msgs = slices.Grow(c.msgs, msgs)
	c.display = slices.Grow(c.display, msgs)
}

func (c *Conversation) apply(e *Event) error {
	ctl := len(e.Parents) == 0 || controlOps(e.Ops)
	idx, dup, err := c.g.add(e, ctl)
	if err != nil || dup {
		return err
	}
	if ctl {
		var snap map[memOp]bool
		var validCtl map[int32]bool
		if !c.dirty {
			snap = c.m.validSet()
			validCtl = make(map[int32]bool, len(c.m.controls))
			for _, x := range c.m.controls {
				validCtl[x] = c.g.events[x].valid
			}
		}
		c.m.controls = append(c.m.controls, idx)
		c.m.replay(&c.g)
		if !c.dirty && c.invalidates(snap, validCtl, idx) {
			c.dirty = true
		}
	}
	if c.dirty {
		return nil
	}
	c.g.events[idx].valid = c.m.eventValid(&c.g, idx)
	if c.g.events[idx].valid {
		c.reduce(idx)
	}
	c.g.events[idx].done = true
	return nil
}

// invalidates reports whether applying control event idx changed the
// validity of any earlier event, which forces a rebuild of derived state.
func (c *Conversation) invalidates(snap map[memOp]bool, validCtl map[int32]bool, idx int32) bool {
	for x, v := range validCtl {
		if c.g.events[x].valid != v {
			return true
		}
	}
	after := c.m.validSet()
	for o := range snap {
		if !after[o] {
			return true
		}
	}
	for o := range after {
		if o.ev != idx && !snap[o] {
			return true
		}
	}
	// A new removal undoes the removed account's events it has not seen.
	full := c.g.full[idx]
	for o := range after {
		if o.ev != idx || o.kind != memRemove {
			continue
		}
		for d := range c.g.devs {
			if c.g.devs[d].acct != o.target {
				continue
			}
			var seen uint64
			if d < len(full) {
				seen = full[d]
			}
			if uint64(len(c.g.devs[d].evs)) > seen {
				return true
			}
		}
	}
	return false
}

// rebuild recomputes derived state from scratch: validity of every event
// with the current membership, then the ops of the valid ones in apply
// order (a causal order, so the result equals any other causal order).
func (c *Conversation) rebuild() {
	c.dirty = false
	c.resetDerived()
	for i := range c.g.events {
		c.g.events[i].first = -1
		c.g.events[i].done = false
	}
	for i := range c.g.events {
		e := &c.g.events[i]
		e.valid = c.m.eventValid(&c.g, int32(i))
		if e.valid {
			c.reduce(int32(i))
		}
		e.done = true
	}
}

// lookupResult says what a MsgID refers to.
type lookupResult uint8

const (
	lookupFound   lookupResult = iota
	lookupPending              // event not applied (or not reduced) yet
	lookupNone                 // not a message of a valid event: ignore
)

func (c *Conversation) lookup(id MsgID) (int32, lookupResult) {
	ei, ok := c.g.byID[id.Event]
	if !ok {
		return -1, lookupPending
	}
	e := &c.g.events[ei]
	if !e.done {
		return -1, lookupPending
	}
	if !e.valid || e.first < 0 || int(id.Index) >= len(e.ops) {
		return -1, lookupNone
	}
	if _, ok := e.ops[id.Index].(Message); !ok {
		return -1, lookupNone
	}
	k := e.first
	for _, op := range e.ops[:id.Index] {
		if _, ok := op.(Message); ok {
			k++
		}
	}
	// An op aiming at a later message of its own event finds nothing.
	if int(k) >= len(c.msgs) || c.msgs[k].ev != ei || c.msgs[k].op != id.Index {
		return -1, lookupNone
	}
	return k, lookupFound
}

// reduce applies the ops of valid event i to derived state.
func (c *Conversation) reduce(i int32) {
	e := &c.g.events[i]
	for k, op := range e.ops {
		ref := opRef{i, uint16(k)}
		switch op := op.(type) {
		case Message:
			c.addMessage(ref)
		case Edit:
			c.targeted(op.Target, ref)
		case Delete:
			c.targeted(op.Target, ref)
		case ReactionAdd:
			c.targeted(op.Target, ref)
		case ReactionRemove:
			c.targeted(op.Target, ref)
		case Receipt:
			a := e.acct
			c.delivered[a] = c.delivered[a].Merge(op.Upto)
			if op.Read {
				c.read[a] = c.read[a].Merge(op.Upto)
			}
		case SetTitle:
			c.title = c.lwwMax(c.title, ref)
		case SetAvatar:
			c.avatar = c.lwwMax(c.avatar, ref)
		case Rotation:
			c.rotations = append(c.rotations, ref)
		case MemberProfile:
			cur, ok := c.names[e.acct]
			if !ok {
				cur = noRef
			}
			c.names[e.acct] = c.lwwMax(cur, ref)
		case DeviceAnnounce:
			key := devKey{c.g.internAcct(op.Account), op.Device}
			cur, ok := c.devices[key]
			if !ok {
				cur = noRef
			}
			c.devices[key] = c.lwwMax(cur, ref)
		}
	}
}

func (c *Conversation) lwwMax(cur, cand opRef) opRef {
	if cur.ev < 0 || c.g.lwwKey(cur.ev, int(cur.op)).less(c.g.lwwKey(cand.ev, int(cand.op))) {
		return cand
	}
	return cur
}

func (c *Conversation) addMessage(ref opRef) {
	e := &c.g.events[ref.ev]
	mi := int32(len(c.msgs))
	if e.first < 0 {
		e.first = mi
	}
	c.msgs = append(c.msgs, msgRec{ev: ref.ev, op: ref.op, edit: noRef})
	// Display order (height, CID, op index). Catch-up and live delivery
	// almost always append; concurrent events land near the end.
	pos := len(c.display)
	for pos > 0 && c.displayLess(mi, c.display[pos-1]) {
		pos--
	}
	c.display = append(c.display, 0)
	copy(c.display[pos+1:], c.display[pos:])
	c.display[pos] = mi
	if len(c.pending) > 0 {
		id := MsgID{Event: e.id, Index: ref.op}
		if refs, ok := c.pending[id]; ok {
			delete(c.pending, id)
			for _, r := range refs {
				c.onMessage(mi, r)
			}
		}
	}
}

func (c *Conversation) displayLess(a, b int32) bool {
	ma, mb := &c.msgs[a], &c.msgs[b]
	ea, eb := &c.g.events[ma.ev], &c.g.events[mb.ev]
	if ea.height != eb.height {
		return ea.height < eb.height
	}
	if ma.ev != mb.ev {
		return strings.Compare(ea.id.KeyString(), eb.id.KeyString()) < 0
	}
	return ma.op < mb.op
}

// targeted routes an op aimed at a message. An op whose target event is
// not applied yet waits in pending, so the outcome never depends on
// arrival order.
func (c *Conversation) targeted(target MsgID, ref opRef) {
	mi, res := c.lookup(target)
	switch res {
	case lookupFound:
		c.onMessage(mi, ref)
	case lookupPending:
		c.pending[target] = append(c.pending[target], ref)
	}
}

// onMessage applies an edit, delete or reaction op to message mi.
func (c *Conversation) onMessage(mi int32, ref opRef) {
	m := &c.msgs[mi]
	if m.deleted {
		return // tombstone: later and concurrent edits and reactions are void
	}
	e := &c.g.events[ref.ev]
	author := c.g.events[m.ev].acct
	switch op := e.ops[ref.op].(type) {
	case Edit:
		if e.acct == author {
			m.edit = c.lwwMax(m.edit, ref)
		}
	case Delete:
		if e.acct == author {
			m.deleted = true
			m.edit = noRef
			m.reactions = nil
		}
	case ReactionAdd:
		r := m.reaction(e.acct, op.Emoji, true)
		r.tags = append(r.tags, ref)
	case ReactionRemove:
		r := m.reaction(e.acct, op.Emoji, false)
		if r == nil {
			return
		}
		// Observed-remove: drop only the adds in this op's causal past;
		// a concurrent add survives (add wins).
		live := r.tags[:0]
		for _, t := range r.tags {
			if !c.g.before(t.ev, ref.ev) {
				live = append(live, t)
			}
		}
		r.tags = live
	}
}

func (m *msgRec) reaction(acct int32, emoji string, create bool) *reactRec {
	for i := range m.reactions {
		if r := &m.reactions[i]; r.acct == acct && r.emoji == emoji {
			return r
		}
	}
	if !create {
		return nil
	}
	m.reactions = append(m.reactions, reactRec{acct: acct, emoji: emoji})
	return &m.reactions[len(m.reactions)-1]
}
