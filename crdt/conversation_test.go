package crdt

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// group: creator A (dev 1) adds B (dev 2) and C (dev 3); everyone synced.
func group(t *testing.T) (*world, Event) {
	w := newWorld(t)
	w.device(dev(1), acct(1))
	w.device(dev(2), acct(2))
	w.device(dev(3), acct(3))
	g := w.emit(dev(1), AddMember{acct(2)}, AddMember{acct(3)}, SetTitle{"g"})
	w.sync(dev(2), dev(1))
	w.sync(dev(3), dev(1))
	return w, g
}

func applyAll(t *testing.T, w *world) *Conversation {
	t.Helper()
	c := NewConversation()
	if n, err := c.ApplyBatch(w.all); err != nil {
		t.Fatalf("batch stopped at %d: %v", n, err)
	}
	return c
}

func TestMessageEditDelete(t *testing.T) {
	w, _ := group(t)
	m := w.emit(dev(2), Message{Text: "hello"})
	id := msgOf(m, 0)
	w.sync(dev(3), dev(2))
	w.sync(dev(1), dev(2))
	tests := []struct {
		name    string
		ops     func() // emits
		text    string
		edited  bool
		deleted bool
	}{
		{"plain", func() {}, "hello", false, false},
		{"author edit", func() { w.emit(dev(2), Edit{id, "hi"}) }, "hi", true, false},
		{"non-author edit ignored", func() { w.emit(dev(3), Edit{id, "pwned"}) }, "hello", false, false},
		{"non-author delete ignored", func() { w.emit(dev(1), Delete{id}) }, "hello", false, false},
		{"author delete", func() { w.emit(dev(2), Delete{id}) }, "", false, true},
		{"edit after delete ignored", func() { w.emit(dev(2), Delete{id}); w.emit(dev(2), Edit{id, "back"}) }, "", false, true},
		{"last edit wins", func() { w.emit(dev(2), Edit{id, "one"}); w.emit(dev(2), Edit{id, "two"}) }, "two", true, false},
	}
	base := len(w.all)
	seqs := map[DeviceID]uint64{}
	for k, v := range w.seqs {
		seqs[k] = v
	}
	heads := map[DeviceID]*view{}
	for k, v := range w.views {
		cp := *v
		cp.heads = append(cp.heads[:0:0], v.heads...)
		heads[k] = &cp
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.all = w.all[:base]
			for k, v := range seqs {
				w.seqs[k] = v
			}
			for k, v := range heads {
				cp := *v
				cp.heads = append(cp.heads[:0:0], v.heads...)
				w.views[k] = &cp
			}
			tc.ops()
			c := applyAll(t, w)
			v, ok := c.Message(id)
			if !ok {
				t.Fatal("message missing")
			}
			if v.Text != tc.text || v.Edited != tc.edited || v.Deleted != tc.deleted {
				t.Fatalf("got text=%q edited=%v deleted=%v", v.Text, v.Edited, v.Deleted)
			}
		})
	}
}

func TestConcurrentEditsLWW(t *testing.T) {
	w := newWorld(t)
	w.device(dev(1), acct(1))
	w.device(dev(9), acct(1)) // second device of the same account
	m := w.emit(dev(1), Message{Text: "x"})
	w.sync(dev(9), dev(1))
	e1 := w.emit(dev(1), Edit{msgOf(m, 0), "from-1"})
	e2 := w.emit(dev(9), Edit{msgOf(m, 0), "from-9"})
	want := "from-1"
	if (lww{lamport: e1.Lamport, dev: e1.Device, id: e1.ID, set: true}).less(lww{lamport: e2.Lamport, dev: e2.Device, id: e2.ID, set: true}) {
		want = "from-9"
	}
	for _, order := range [][]Event{{w.all[0], e1, e2}, {w.all[0], e2, e1}} {
		c := NewConversation()
		deliver(t, c, order)
		v, _ := c.Message(msgOf(m, 0))
		if v.Text != want {
			t.Fatalf("got %q want %q", v.Text, want)
		}
	}
	// Lamport decides before anything else: an edit whose device wrote
	// more in between carries the higher clock and wins, from either
	// device, in either order.
	for _, late := range []DeviceID{dev(1), dev(9)} {
		w := newWorld(t)
		w.device(dev(1), acct(1))
		w.device(dev(9), acct(1))
		m := w.emit(dev(1), Message{Text: "x"})
		w.sync(dev(9), dev(1))
		early := dev(1)
		if late == dev(1) {
			early = dev(9)
		}
		e1 := w.emit(early, Edit{msgOf(m, 0), "lower clock"})
		w.emit(late, Message{Text: "y"})
		e2 := w.emit(late, Edit{msgOf(m, 0), "higher clock"})
		if e2.Lamport <= e1.Lamport {
			t.Fatal("test setup: clocks")
		}
		for _, order := range [][]Event{w.all, {w.all[0], w.all[2], w.all[3], w.all[1]}} {
			c := NewConversation()
			deliver(t, c, order)
			if v, _ := c.Message(msgOf(m, 0)); v.Text != "higher clock" {
				t.Fatalf("late device %x: got %q, want the edit with the higher Lamport clock", late[:1], v.Text)
			}
		}
	}
}

func TestReactionsAddWins(t *testing.T) {
	w := newWorld(t)
	w.device(dev(1), acct(1))
	w.device(dev(9), acct(1))
	m := w.emit(dev(1), Message{Text: "x"})
	id := msgOf(m, 0)
	add := w.emit(dev(1), ReactionAdd{id, "👍"})
	w.sync(dev(9), dev(1))
	rm := w.emit(dev(9), ReactionRemove{id, "👍"}) // observed the add: removes it
	readd := w.emit(dev(1), ReactionAdd{id, "👍"}) // concurrent re-add: survives
	// Either order: a replica that applies the re-add before the remove
	// must keep it too.
	for _, order := range [][]Event{{m, add, rm, readd}, {m, add, readd, rm}} {
		c := NewConversation()
		deliver(t, c, order)
		v, _ := c.Message(id)
		if len(v.Reactions) != 1 || v.Reactions[0].Emoji != "👍" || len(v.Reactions[0].Accounts) != 1 {
			t.Fatalf("reactions %+v", v.Reactions)
		}
	}
	w.sync(dev(9), dev(1))
	w.emit(dev(9), ReactionRemove{id, "👍"})
	c := applyAll(t, w)
	if v, _ := c.Message(id); len(v.Reactions) != 0 {
		t.Fatalf("reactions after remove %+v", v.Reactions)
	}
}

func TestMembershipAuthority(t *testing.T) {
	w, _ := group(t)
	// B is not admin: its add of D has no effect.
	w.emit(dev(2), AddMember{acct(4)})
	c := applyAll(t, w)
	if m, _ := c.IsMember(acct(4)); m {
		t.Fatal("non-admin add took effect")
	}
	// A grants B admin; now B's add works.
	w.sync(dev(1), dev(2))
	w.emit(dev(1), SetAdmin{acct(2), true})
	w.sync(dev(2), dev(1))
	w.emit(dev(2), AddMember{acct(4)})
	c = applyAll(t, w)
	if m, _ := c.IsMember(acct(4)); !m {
		t.Fatal("admin add had no effect")
	}
	if _, a := c.IsMember(acct(2)); !a {
		t.Fatal("B not admin")
	}
	// C leaves.
	w.sync(dev(3), dev(2))
	w.emit(dev(3), RemoveMember{acct(3)})
	c = applyAll(t, w)
	if m, _ := c.IsMember(acct(3)); m {
		t.Fatal("leave had no effect")
	}
	if got := len(c.Members()); got != 3 {
		t.Fatalf("members %d", got)
	}
}

func TestNonMemberIgnored(t *testing.T) {
	w, _ := group(t)
	w.device(dev(7), acct(7))
	w.sync(dev(7), dev(1))
	w.emit(dev(7), Message{Text: "spam"}, SetTitle{"spam"})
	c := applyAll(t, w)
	if c.Len() != 0 || c.Title() != "g" {
		t.Fatalf("non-member ops took effect: len=%d title=%q", c.Len(), c.Title())
	}
}

// TestDirect: two accounts and no title is a direct chat; a title or a
// third account ever added makes a group, even after that account left.
func TestDirect(t *testing.T) {
	w := newWorld(t)
	w.device(dev(1), acct(1))
	w.device(dev(2), acct(2))
	w.emit(dev(1), AddMember{acct(2)})
	if !applyAll(t, w).Direct() {
		t.Fatal("a two-account conversation without title is not direct")
	}
	w.emit(dev(1), AddMember{acct(3)})
	w.emit(dev(1), RemoveMember{acct(3)})
	c := applyAll(t, w)
	if c.Direct() || len(c.Members()) != 2 {
		t.Fatalf("direct %v with %d members after a third account came and went", c.Direct(), len(c.Members()))
	}
	if g, _ := group(t); applyAll(t, g).Direct() {
		t.Fatal("a group of three is direct")
	}
	w = newWorld(t)
	w.device(dev(1), acct(1))
	w.emit(dev(1), AddMember{acct(2)}, SetTitle{"us"})
	if applyAll(t, w).Direct() {
		t.Fatal("a titled conversation is direct")
	}
}

// TestMemberNames: each member publishes its own name (LWW per account);
// a non-member's claim and another account's op change nothing.
func TestMemberNames(t *testing.T) {
	w, g := group(t)
	w.device(dev(7), acct(7))
	w.sync(dev(7), dev(1))
	w.emit(dev(2), MemberProfile{"Bea"})
	w.emit(dev(3), MemberProfile{"Cy"})
	w.emit(dev(7), MemberProfile{"Mallory"}) // not a member
	w.emit(dev(2), MemberProfile{"Beatrice"})
	c := applyAll(t, w)
	if got := c.MemberName(acct(2)); got != "Beatrice" {
		t.Fatalf("B's name %q, want the later claim", got)
	}
	if got := c.MemberName(acct(3)); got != "Cy" {
		t.Fatalf("C's name %q", got)
	}
	if got := c.MemberName(acct(7)); got != "" {
		t.Fatalf("a non-member's name took effect: %q", got)
	}
	if got := c.MemberName(acct(1)); got != "" {
		t.Fatalf("A published no name, got %q", got)
	}
	// Order of delivery does not matter.
	r := NewConversation()
	deliver(t, r, append([]Event{g}, reverse(w.all[1:])...))
	if r.StateHash() != c.StateHash() || r.MemberName(acct(2)) != "Beatrice" {
		t.Fatalf("order changed the names: %q", r.MemberName(acct(2)))
	}
}

func TestRemoveWinsOverConcurrentAdd(t *testing.T) {
	w, _ := group(t)
	w.emit(dev(1), SetAdmin{acct(2), true})
	w.sync(dev(2), dev(1))
	w.emit(dev(1), RemoveMember{acct(3)})
	w.emit(dev(2), AddMember{acct(3)}) // concurrent re-add
	c := applyAll(t, w)
	if m, _ := c.IsMember(acct(3)); m {
		t.Fatal("concurrent add beat remove")
	}
	// A later add (that has seen the remove) works.
	w.sync(dev(2), dev(1))
	w.emit(dev(2), AddMember{acct(3)})
	c = applyAll(t, w)
	if m, _ := c.IsMember(acct(3)); !m {
		t.Fatal("re-add after remove failed")
	}
}

func TestStrongRemove(t *testing.T) {
	w, _ := group(t)
	before := w.emit(dev(3), Message{Text: "seen by A"})
	w.sync(dev(1), dev(3))
	// C writes concurrently with its removal.
	late := w.emit(dev(3), Message{Text: "concurrent"}, SetTitle{"hijack"})
	rm := w.emit(dev(1), RemoveMember{acct(3)})
	after := w.emit(dev(3), Message{Text: "after"}) // C has not seen rm
	for _, order := range [][]Event{w.all, append(append([]Event{}, w.all[:len(w.all)-3]...), late, after, rm)} {
		c := NewConversation()
		deliver(t, c, order)
		if _, ok := c.Message(msgOf(before, 0)); !ok {
			t.Fatal("message in the removal's past was dropped")
		}
		if _, ok := c.Message(msgOf(late, 0)); ok {
			t.Fatal("concurrent message survived removal")
		}
		if _, ok := c.Message(msgOf(after, 0)); ok {
			t.Fatal("later message survived removal")
		}
		if c.Title() != "g" {
			t.Fatalf("title %q", c.Title())
		}
	}
	_ = rm
}

func TestMutualRemovalDeterministic(t *testing.T) {
	w, _ := group(t)
	w.emit(dev(1), SetAdmin{acct(2), true})
	w.sync(dev(2), dev(1))
	w.emit(dev(1), RemoveMember{acct(2)})
	w.emit(dev(2), RemoveMember{acct(1)})
	h := applyAll(t, w).StateHash()
	n := len(w.all)
	rev := append(append([]Event{}, w.all[:n-2]...), w.all[n-1], w.all[n-2])
	c := NewConversation()
	deliver(t, c, rev)
	if c.StateHash() != h {
		t.Fatal("mutual removal depends on order")
	}
	a, _ := c.IsMember(acct(1))
	b, _ := c.IsMember(acct(2))
	if a == b {
		t.Fatalf("exactly one of the mutual removals should win: A=%v B=%v", a, b)
	}
}

func TestApplyErrors(t *testing.T) {
	w, g := group(t)
	m := w.emit(dev(1), Message{Text: "x"})
	c := NewConversation()
	if err := c.Apply(m); !errors.Is(err, ErrMissingParents) {
		t.Fatalf("missing parents: %v", err)
	}
	if err := c.Apply(g); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(g); err != nil {
		t.Fatalf("duplicate: %v", err)
	}
	bad := m
	bad.Height = 7
	if err := c.Apply(bad); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("bad height: %v", err)
	}
	other := g
	other.ID = m.ID
	other.Device = dev(5)
	if err := c.Apply(other); !errors.Is(err, ErrMultipleRoots) {
		t.Fatalf("second root: %v", err)
	}
	eq := m
	eq.Seq = 1
	if err := c.Apply(eq); !errors.Is(err, ErrEquivocation) {
		t.Fatalf("equivocation: %v", err)
	}
	if err := c.Apply(m); err != nil {
		t.Fatal(err)
	}
}

func TestReceiptsAndStatus(t *testing.T) {
	w, _ := group(t)
	m := w.emit(dev(1), Message{Text: "x"})
	id := msgOf(m, 0)
	w.sync(dev(2), dev(1))
	w.sync(dev(3), dev(1))
	pos := Position{{Device: dev(1), Seq: m.Seq}}
	c0 := applyAll(t, w)
	if st, _, _ := c0.MessageStatus(id); st != StatusSent {
		t.Fatalf("status %v", st)
	}
	if n := c0.UnreadCount(acct(2), nil); n != 1 {
		t.Fatalf("unread %d", n)
	}
	w.emit(dev(2), Receipt{Read: true, Upto: pos})
	w.emit(dev(3), Receipt{Upto: pos})
	c := applyAll(t, w)
	st, per, ok := c.MessageStatus(id)
	if !ok || st != StatusDelivered || len(per) != 2 || per[0].Status != StatusRead || per[1].Status != StatusDelivered {
		t.Fatalf("status %v %+v", st, per)
	}
	_, read := c.Receipts(acct(2))
	if n := c.UnreadCount(acct(2), read); n != 0 {
		t.Fatalf("unread after read %d", n)
	}
}

// TestAuthorityFromOwnPast: an op is judged by what its own event had
// seen. B's add of D is concurrent with A's grant of admin to B, so it has
// no effect, even on a replica that applies the grant first.
func TestAuthorityFromOwnPast(t *testing.T) {
	w, g := group(t)
	grant := w.emit(dev(1), SetAdmin{acct(2), true})
	// B has not seen the grant. Its add sits higher than the grant, so
	// the replay (in height order) meets the grant first: only judging
	// the add by its own past keeps the grant out.
	msg := w.emit(dev(2), Message{Text: "before adding"})
	add := w.emit(dev(2), AddMember{acct(4)})
	if add.Height <= grant.Height {
		t.Fatal("test setup: the add must be higher than the grant")
	}
	for _, order := range [][]Event{{g, grant, msg, add}, {g, msg, add, grant}} {
		c := NewConversation()
		deliver(t, c, order)
		if _, admin := c.IsMember(acct(2)); !admin {
			t.Fatal("grant had no effect")
		}
		if m, _ := c.IsMember(acct(4)); m {
			t.Fatal("an add made before its author was admin took effect")
		}
	}
	// The same add made after B has seen the grant takes effect.
	w.sync(dev(2), dev(1))
	w.emit(dev(2), AddMember{acct(4)})
	if m, _ := applyAll(t, w).IsMember(acct(4)); !m {
		t.Fatal("admin's add had no effect")
	}
}

// TestReceiptsMaxRegister: an account's receipts from any of its devices
// merge by pointwise maximum; an older receipt never lowers the position,
// whatever the order.
func TestReceiptsMaxRegister(t *testing.T) {
	w, g := group(t)
	w.device(dev(20), acct(2)) // B's second device
	w.sync(dev(20), dev(1))
	d1, d3 := dev(1), dev(3)
	r1 := w.emit(dev(2), Receipt{Upto: Position{{Device: d1, Seq: 5}}})
	r2 := w.emit(dev(20), Receipt{Read: true, Upto: Position{{Device: d1, Seq: 3}, {Device: d3, Seq: 2}}})
	r3 := w.emit(dev(2), Receipt{Read: true, Upto: Position{{Device: d1, Seq: 1}}}) // older news, later event
	wantDel := Position{{Device: d1, Seq: 5}, {Device: d3, Seq: 2}}
	wantRead := Position{{Device: d1, Seq: 3}, {Device: d3, Seq: 2}}
	for _, order := range [][]Event{{g, r1, r2, r3}, {g, r2, r1, r3}, {g, r3, r2, r1}} {
		c := NewConversation()
		deliver(t, c, order)
		del, read := c.Receipts(acct(2))
		if !slices.Equal(del, wantDel) || !slices.Equal(read, wantRead) {
			t.Fatalf("delivered %v read %v, want %v and %v", del, read, wantDel, wantRead)
		}
	}
}

// TestTitleAndAvatarLWW: concurrent writes resolve by (Lamport, device,
// CID) on every replica; a write that has seen another one wins over it.
func TestTitleAndAvatarLWW(t *testing.T) {
	w, g := group(t)
	a := w.emit(dev(1), SetTitle{"from A"}, SetAvatar{Mime: "image/png", Data: []byte{1}})
	b := w.emit(dev(2), SetTitle{"from B"}, SetAvatar{Mime: "image/png", Data: []byte{2}})
	winner, data := "from A", byte(1)
	if (lww{lamport: a.Lamport, dev: a.Device, id: a.ID, set: true}).less(lww{lamport: b.Lamport, dev: b.Device, id: b.ID, set: true}) {
		winner, data = "from B", 2
	}
	for _, order := range [][]Event{{g, a, b}, {g, b, a}} {
		c := NewConversation()
		deliver(t, c, order)
		_, av := c.Avatar()
		if c.Title() != winner || len(av) != 1 || av[0] != data {
			t.Fatalf("title %q avatar %v, want %q and %d", c.Title(), av, winner, data)
		}
	}
	// A higher Lamport clock wins over a concurrent write, whatever the
	// device and CID order.
	for _, late := range []DeviceID{dev(1), dev(2)} {
		w, g := group(t)
		early := dev(2)
		if late == dev(2) {
			early = dev(1)
		}
		e := w.emit(early, SetTitle{"lower clock"})
		m := w.emit(late, Message{Text: "x"})
		l := w.emit(late, SetTitle{"higher clock"})
		for _, order := range [][]Event{{g, e, m, l}, {g, m, l, e}} {
			c := NewConversation()
			deliver(t, c, order)
			if c.Title() != "higher clock" {
				t.Fatalf("late device %x: title %q, want the higher Lamport clock", late[:1], c.Title())
			}
		}
	}
	// The loser writes again after seeing both: its new value wins.
	loser := dev(2)
	if winner == "from B" {
		loser = dev(1)
	}
	w.sync(loser, dev(1))
	w.sync(loser, dev(2))
	w.emit(loser, SetTitle{"last"}, SetAvatar{})
	c := applyAll(t, w)
	if mime, av := c.Avatar(); c.Title() != "last" || mime != "" || av != nil {
		t.Fatalf("title %q avatar %q %v after a causally later write", c.Title(), mime, av)
	}
}

// TestStateHashSensitive: the hash changes with every kind of visible
// state, so equal hashes in the convergence tests mean equal states.
func TestStateHashSensitive(t *testing.T) {
	w, _ := group(t)
	seen := map[[32]byte]string{applyAll(t, w).StateHash(): "start"}
	m := w.emit(dev(1), Message{Text: "x"})
	id := msgOf(m, 0)
	w.sync(dev(2), dev(1))
	steps := []struct {
		name string
		emit func()
	}{
		{"message", func() {}},
		{"edit", func() { w.emit(dev(1), Edit{id, "y"}) }},
		{"reaction", func() { w.emit(dev(2), ReactionAdd{id, "+1"}) }},
		{"receipt", func() { w.emit(dev(2), Receipt{Upto: Position{{Device: dev(1), Seq: 2}}}) }},
		{"read", func() { w.emit(dev(2), Receipt{Read: true, Upto: Position{{Device: dev(1), Seq: 2}}}) }},
		{"title", func() { w.emit(dev(1), SetTitle{"new"}) }},
		{"avatar", func() { w.emit(dev(1), SetAvatar{Mime: "image/png", Data: []byte{1}}) }},
		{"admin", func() { w.emit(dev(1), SetAdmin{acct(2), true}) }},
		{"member", func() { w.emit(dev(1), AddMember{acct(4)}) }},
		{"rotation", func() { w.emit(dev(1), Rotation{Payload: []byte{1}, Recipients: []Recipient{{Account: acct(1)}}}) }},
		{"device", func() { w.emit(dev(1), DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{1}}) }},
		{"prekey", func() {
			w.emit(dev(1), DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{1}, Prekey: []byte{2}})
		}},
		{"peer", func() {
			w.emit(dev(1), DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{1}, Prekey: []byte{2}, Peer: []byte{3}})
		}},
		{"mailbox", func() {
			w.emit(dev(1), DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{1}, Prekey: []byte{2}, Peer: []byte{3}, Mailbox: []byte{4}})
		}},
		{"attachment", func() { w.emit(dev(2), Message{Attachment: []byte{5}}) }},
		{"member name", func() { w.emit(dev(2), MemberProfile{"Bea"}) }},
		{"delete", func() { w.emit(dev(1), Delete{id}) }},
	}
	for _, s := range steps {
		s.emit()
		h := applyAll(t, w).StateHash()
		if prev, dup := seen[h]; dup {
			t.Fatalf("state hash unchanged by %s (same as after %s)", s.name, prev)
		}
		seen[h] = s.name
	}
}

// An attachment is shown with its message, survives an edit of the caption
// and goes with a delete for everyone; the state hash covers it.
func TestAttachmentFollowsItsMessage(t *testing.T) {
	manifest := []byte{0xa1, 0x01, 0x02}
	w, _ := group(t)
	id := msgOf(w.emit(dev(2), Message{Attachment: manifest}), 0)
	c := applyAll(t, w)
	v, ok := c.Message(id)
	if !ok || !bytes.Equal(v.Attachment, manifest) || v.Text != "" {
		t.Fatalf("view %+v %v", v, ok)
	}
	w.emit(dev(2), Edit{id, "a caption"})
	c = applyAll(t, w)
	if v, _ = c.Message(id); !bytes.Equal(v.Attachment, manifest) || v.Text != "a caption" || !v.Edited {
		t.Fatalf("after edit %+v", v)
	}
	before := c.StateHash()
	w.emit(dev(2), Delete{id})
	c = applyAll(t, w)
	if v, _ = c.Message(id); !v.Deleted || v.Attachment != nil {
		t.Fatalf("after delete %+v", v)
	}
	// The node still finds the manifest, to drop the file.
	if m, deleted, ok := c.Attachment(id); !ok || !deleted || !bytes.Equal(m, manifest) {
		t.Fatalf("Attachment after delete: %x %v %v", m, deleted, ok)
	}
	var seen []MsgID
	c.EachAttachment(func(got MsgID, m []byte, deleted bool) {
		if !deleted || !bytes.Equal(m, manifest) {
			t.Fatalf("EachAttachment %v %x %v", got, m, deleted)
		}
		seen = append(seen, got)
	})
	if len(seen) != 1 || seen[0] != id {
		t.Fatalf("EachAttachment saw %v", seen)
	}
	text := msgOf(w.emit(dev(2), Message{Text: "no file"}), 0)
	if _, _, ok := applyAll(t, w).Attachment(text); ok {
		t.Fatal("a text message has an attachment")
	}
	if c.StateHash() == before {
		t.Fatal("state hash ignores the delete")
	}
}

// Two states that differ only in a message's attachment hash differently.
func TestStateHashCoversAttachment(t *testing.T) {
	hash := func(manifest []byte) [32]byte {
		w, _ := group(t)
		w.emit(dev(2), Message{Attachment: manifest, Text: "same"})
		return applyAll(t, w).StateHash()
	}
	if hash([]byte{1}) == hash([]byte{2}) {
		t.Fatal("attachment not in the state hash")
	}
}
