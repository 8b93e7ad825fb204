package crdt

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	"pgregory.net/rapid"
)

// randomHistory builds a random multi-author history: 3–5 accounts (one
// with two devices), messages, edits and deletes (also by non-authors),
// reactions, receipts, titles, rotations and membership changes including
// concurrent add/remove, with devices syncing at random.
func randomHistory(t *rapid.T) *world {
	w := newWorld(t)
	n := rapid.IntRange(3, 5).Draw(t, "accounts")
	var devs []DeviceID
	for i := 1; i <= n; i++ {
		w.device(dev(byte(i)), acct(byte(i)))
		devs = append(devs, dev(byte(i)))
	}
	w.device(dev(100), acct(2)) // second device of account 2
	devs = append(devs, dev(100))
	var init []Op
	for i := 2; i <= n; i++ {
		if rapid.Bool().Draw(t, "initial") {
			init = append(init, AddMember{acct(byte(i))})
		}
	}
	w.emit(dev(1), init...)
	for _, d := range devs[1:] {
		w.sync(d, dev(1))
	}
	var msgs []MsgID
	steps := rapid.IntRange(5, 40).Draw(t, "steps")
	for s := 0; s < steps; s++ {
		d := rapid.SampledFrom(devs).Draw(t, "dev")
		if rapid.IntRange(0, 3).Draw(t, "sync?") == 0 {
			w.sync(d, rapid.SampledFrom(devs).Draw(t, "from"))
		}
		target := acct(byte(rapid.IntRange(1, n).Draw(t, "target")))
		var op Op
		pick := func() (MsgID, bool) {
			if len(msgs) == 0 {
				return MsgID{}, false
			}
			return rapid.SampledFrom(msgs).Draw(t, "msg"), true
		}
		switch rapid.IntRange(0, 11).Draw(t, "op") {
		case 0, 1:
			op = Message{Text: rapid.StringMatching(`[a-z]{1,8}`).Draw(t, "text")}
		case 2:
			// An attachment, with or without a caption.
			op = Message{Attachment: []byte(rapid.StringMatching(`[a-z]{1,8}`).Draw(t, "manifest")),
				Text: rapid.StringMatching(`[a-z]{0,4}`).Draw(t, "caption")}
		case 3:
			if m, ok := pick(); ok {
				// Unique texts let checkInvariants tell whose edit won.
				op = Edit{m, fmt.Sprintf("edit %d", s)}
			}
		case 4:
			if m, ok := pick(); ok {
				op = Delete{m}
			}
		case 5:
			if m, ok := pick(); ok {
				op = ReactionAdd{m, rapid.SampledFrom([]string{"+1", "<3"}).Draw(t, "emoji")}
			}
		case 6:
			if m, ok := pick(); ok {
				op = ReactionRemove{m, rapid.SampledFrom([]string{"+1", "<3"}).Draw(t, "emoji")}
			}
		case 7:
			op = Receipt{Read: rapid.Bool().Draw(t, "read"), Upto: Position{{Device: rapid.SampledFrom(devs).Draw(t, "rdev"), Seq: uint64(rapid.IntRange(1, 5).Draw(t, "rseq"))}}}
		case 8:
			op = AddMember{target}
		case 9:
			op = RemoveMember{target}
		case 10:
			op = SetAdmin{target, rapid.Bool().Draw(t, "admin")}
		case 11:
			switch rapid.IntRange(0, 2).Draw(t, "ctl") {
			case 0:
				op = Rotation{Payload: []byte{1}, Recipients: []Recipient{{Account: target}}}
			case 1:
				op = SetTitle{rapid.StringMatching(`[a-z]{0,4}`).Draw(t, "title")}
			case 2:
				op = MemberProfile{rapid.StringMatching(`[a-z]{0,4}`).Draw(t, "name")}
			}
		}
		if op == nil {
			continue
		}
		e := w.emit(d, op)
		if _, ok := op.(Message); ok {
			msgs = append(msgs, msgOf(e, 0))
		}
	}
	return w
}

// shuffledWithDuplicates returns all events in a random order with some
// events repeated; deliver's causal buffer turns it into a causal order.
func shuffledWithDuplicates(t *rapid.T, all []Event) []Event {
	out := slices.Clone(all)
	for range rapid.IntRange(0, 5).Draw(t, "dups") {
		out = append(out, rapid.SampledFrom(all).Draw(t, "dup"))
	}
	perm := rapid.Permutation(out).Draw(t, "order")
	return perm
}

func TestPropertyConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := randomHistory(t)
		ref := NewConversation()
		if _, err := ref.ApplyBatch(w.all); err != nil {
			t.Fatal(err)
		}
		want := ref.StateHash()
		for k := range 3 {
			c := NewConversation()
			deliver(t, c, shuffledWithDuplicates(t, w.all))
			if got := c.StateHash(); got != want {
				t.Fatalf("order %d: state hash differs", k)
			}
		}
		checkInvariants(t, w, ref)
	})
}

// checkInvariants verifies rules that must hold in any final state: a
// tombstone shows nothing, an edit shown is one by the message's author
// account, and a message is deleted only by its author account.
func checkInvariants(t *rapid.T, w *world, c *Conversation) {
	edits := map[string]Event{} // edit text (unique) -> event
	deletedBy := map[MsgID][]AccountID{}
	for _, e := range w.all {
		for _, op := range e.Ops {
			switch op := op.(type) {
			case Edit:
				edits[op.Text] = e
			case Delete:
				deletedBy[op.Target] = append(deletedBy[op.Target], e.Account)
			}
		}
	}
	for i := 0; i < c.Len(); i++ {
		v := c.At(i)
		if v.Deleted {
			if v.Text != "" || len(v.Reactions) > 0 || v.Edited {
				t.Fatalf("tombstone leaks content: %+v", v)
			}
			if !slices.Contains(deletedBy[v.ID], v.Author) {
				t.Fatalf("message %v deleted, but only by %x", v.ID, deletedBy[v.ID])
			}
			continue
		}
		if v.Edited {
			e, ok := edits[v.Text]
			if !ok {
				t.Fatalf("edited message %v shows text %q that no edit wrote", v.ID, v.Text)
			}
			if e.Account != v.Author {
				t.Fatalf("edit by non-author %x took effect on %v", e.Account[:1], v.ID)
			}
		}
	}
	for _, m := range c.Members() {
		if mem, adm := c.IsMember(m.Account); !mem || adm != m.Admin {
			t.Fatalf("member view inconsistent for %x", m.Account[:1])
		}
	}
}

// TestPropertyBatchEqualsSingle: one ApplyBatch equals event-by-event apply.
func TestPropertyBatchEqualsSingle(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := randomHistory(t)
		a := NewConversation()
		for _, e := range w.all {
			if err := a.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		b := NewConversation()
		if _, err := b.ApplyBatch(w.all); err != nil {
			t.Fatal(err)
		}
		if a.StateHash() != b.StateHash() {
			t.Fatal("batch and single apply differ")
		}
		// A batch long enough to reserve arenas (duplicates included), on
		// top of a state that already holds a prefix.
		k := rapid.IntRange(0, len(w.all)).Draw(t, "prefix")
		d := NewConversation()
		if _, err := d.ApplyBatch(w.all[:k]); err != nil {
			t.Fatal(err)
		}
		var long []Event
		for len(long) < reserveMin && len(w.all) > 0 {
			long = append(long, w.all...)
		}
		if n, err := d.ApplyBatch(long); err != nil || n != len(long) {
			t.Fatal(n, err)
		}
		if a.StateHash() != d.StateHash() {
			t.Fatal("reserved batch and single apply differ")
		}
	})
}

// TestPropertyNonMemberNoEffect: adding events by an outsider changes nothing.
func TestPropertyNonMemberNoEffect(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := randomHistory(t)
		base := applyAllRapid(t, w.all).StateHash()
		w.device(dev(200), acct(200))
		w.sync(dev(200), dev(1))
		w.emit(dev(200), Message{Text: "x"}, SetTitle{"y"}, AddMember{acct(200)}, RemoveMember{acct(1)})
		if applyAllRapid(t, w.all).StateHash() != base {
			t.Fatal("outsider changed state")
		}
	})
}

func applyAllRapid(t *rapid.T, es []Event) *Conversation {
	c := NewConversation()
	if _, err := c.ApplyBatch(es); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPropertyStrongRemove: once the creator (an admin nobody can remove
// or demote here) removes account X, none of X's events outside the
// removal's causal past has any effect, in any delivery order — even X's
// events that arrive before the removal, and X's concurrent or later
// adds, titles and messages.
func TestPropertyStrongRemove(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t)
		n := rapid.IntRange(3, 5).Draw(t, "accounts")
		devs := []DeviceID{dev(1)}
		w.device(dev(1), acct(1))
		var init []Op
		for i := 2; i <= n; i++ {
			w.device(dev(byte(i)), acct(byte(i)))
			devs = append(devs, dev(byte(i)))
			init = append(init, AddMember{acct(byte(i))})
			if rapid.Bool().Draw(t, "admin") {
				init = append(init, SetAdmin{acct(byte(i)), true})
			}
		}
		w.device(dev(100), acct(2)) // a second device of account 2
		devs = append(devs, dev(100))
		w.emit(dev(1), init...)
		for _, d := range devs[1:] {
			w.sync(d, dev(1))
		}
		victim := acct(byte(rapid.IntRange(2, n).Draw(t, "victim")))
		var rmPast map[cid.Cid]bool
		steps := rapid.IntRange(2, 30).Draw(t, "steps")
		at := rapid.IntRange(0, steps-1).Draw(t, "removal at")
		for s := range steps {
			if s == at {
				if rapid.Bool().Draw(t, "creator syncs") {
					w.sync(dev(1), rapid.SampledFrom(devs).Draw(t, "from"))
				}
				w.emit(dev(1), RemoveMember{victim})
				rmPast = maps.Clone(w.views[dev(1)].known)
				continue
			}
			d := rapid.SampledFrom(devs).Draw(t, "dev")
			if rapid.IntRange(0, 2).Draw(t, "sync?") == 0 {
				w.sync(d, rapid.SampledFrom(devs).Draw(t, "from"))
			}
			// Accounts other than the creator only: the creator stays admin.
			target := acct(byte(rapid.IntRange(2, n).Draw(t, "target")))
			var op Op
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0, 1:
				op = Message{Text: fmt.Sprintf("m%d", s)}
			case 2:
				op = SetTitle{fmt.Sprintf("t%d", s)}
			case 3:
				if rmPast != nil && target == victim {
					continue // a re-add after the removal would be legitimate
				}
				op = AddMember{target}
			case 4:
				op = SetAdmin{target, rapid.Bool().Draw(t, "grant")}
			}
			w.emit(d, op)
		}
		check := func(c *Conversation) {
			if m, _ := c.IsMember(victim); m {
				t.Fatalf("removed account %x is still a member", victim[:1])
			}
			for i := 0; i < c.Len(); i++ {
				if v := c.At(i); v.Author == victim && !rmPast[v.ID.Event] {
					t.Fatalf("message %q of the removed account outside the removal's past took effect", v.Text)
				}
			}
			if title := c.Title(); title != "" {
				for _, e := range w.all {
					if st, ok := e.Ops[0].(SetTitle); ok && st.Title == title && e.Account == victim && !rmPast[e.ID] {
						t.Fatalf("title %q of the removed account outside the removal's past took effect", title)
					}
				}
			}
		}
		ref := applyAllRapid(t, w.all)
		check(ref)
		c := NewConversation()
		deliver(t, c, shuffledWithDuplicates(t, w.all))
		check(c)
		if c.StateHash() != ref.StateHash() {
			t.Fatal("state hash depends on delivery order")
		}
	})
}
