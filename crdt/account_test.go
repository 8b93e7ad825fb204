package crdt

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

func accountWorld(t tb) *world {
	w := newWorld(t)
	w.device(dev(1), acct(1))
	w.device(dev(2), acct(1))
	w.device(dev(3), acct(1))
	w.emit(dev(1), DeviceAdd{Device: dev(1), Name: "phone", Cert: []byte{1}})
	w.sync(dev(2), dev(1))
	w.sync(dev(3), dev(1))
	return w
}

func applyAccount(t tb, es []Event) *Account {
	a := NewAccount()
	if n, err := a.ApplyBatch(es); err != nil {
		t.Fatalf("batch stopped at %d: %v", n, err)
	}
	return a
}

func TestAccountLWWAndReadMarks(t *testing.T) {
	w := accountWorld(t)
	w.emit(dev(1), SetPreference{"theme", "dark"}, ProfileName{"Ann"})
	w.emit(dev(2), SetPreference{"theme", "light"}) // concurrent: LWW decides
	w.emit(dev(2), ReadMark{[]byte("c1"), Position{{Device: dev(9), Seq: 5}}})
	w.emit(dev(3), ReadMark{[]byte("c1"), Position{{Device: dev(8), Seq: 2}, {Device: dev(9), Seq: 3}}})
	name, verified := "Bob", Verified
	w.emit(dev(1), ContactUpdate{Account: acct(5), Name: &name})
	w.emit(dev(3), ContactUpdate{Account: acct(5), Verification: &verified})
	a := applyAccount(t, w.all)
	if n, _, _ := a.Profile(); n != "Ann" {
		t.Fatalf("name %q", n)
	}
	if p := a.Preferences()["theme"]; p != "dark" && p != "light" {
		t.Fatalf("theme %q", p)
	}
	rp := a.ReadPosition([]byte("c1"))
	if rp.Get(dev(9)) != 5 || rp.Get(dev(8)) != 2 {
		t.Fatalf("read position %+v", rp)
	}
	cs := a.Contacts()
	if len(cs) != 1 || cs[0].Name != "Bob" || cs[0].Verification != Verified {
		t.Fatalf("contacts %+v", cs)
	}
	// Reverse delivery of the concurrent tail gives the same state.
	b := NewAccount()
	deliver(t, b, append(append([]Event{}, w.all[:1]...), reverse(w.all[1:])...))
	if a.StateHash() != b.StateHash() {
		t.Fatal("account state depends on order")
	}
}

// TestContactBlock: blocks are LWW per account and survive in the state
// hash; a later unblock wins over an earlier block.
func TestContactBlock(t *testing.T) {
	w := accountWorld(t)
	w.emit(dev(1), ContactBlock{Account: acct(5), Blocked: true}, ContactBlock{Account: acct(6), Blocked: true})
	a := applyAccount(t, w.all)
	if !a.Blocked(acct(5)) || !a.Blocked(acct(6)) || a.Blocked(acct(7)) {
		t.Fatalf("blocked %v", a.BlockedAccounts())
	}
	before := a.StateHash()
	w.sync(dev(2), dev(1))
	w.emit(dev(2), ContactBlock{Account: acct(6)})
	a = applyAccount(t, w.all)
	if got := a.BlockedAccounts(); len(got) != 1 || got[0] != acct(5) {
		t.Fatalf("after unblocking 6: %v", got)
	}
	if a.StateHash() == before {
		t.Fatal("state hash unchanged by an unblock")
	}
}

func reverse(es []Event) []Event {
	out := make([]Event, len(es))
	for i, e := range es {
		out[len(es)-1-i] = e
	}
	return out
}

func TestAccountRevocationStrong(t *testing.T) {
	w := accountWorld(t)
	seen := w.emit(dev(2), SetPreference{"a", "1"})
	w.sync(dev(1), dev(2))
	w.emit(dev(2), SetPreference{"b", "stolen"}) // concurrent with revocation
	w.emit(dev(1), DeviceRevoke{Device: dev(2)})
	w.emit(dev(2), SetPreference{"c", "stolen"})
	for _, order := range [][]Event{w.all, append(append([]Event{}, w.all[:len(w.all)-3]...), w.all[len(w.all)-3], w.all[len(w.all)-1], w.all[len(w.all)-2])} {
		a := NewAccount()
		deliver(t, a, order)
		p := a.Preferences()
		if p["a"] != "1" || p["b"] != "" || p["c"] != "" {
			t.Fatalf("prefs %v", p)
		}
		var revoked bool
		for _, d := range a.Devices() {
			if d.Device == dev(2) {
				revoked = d.Revoked && d.Cutoff == seen.Seq
			}
		}
		if !revoked {
			t.Fatalf("devices %+v", a.Devices())
		}
	}
}

func TestAccountExplicitCutoffAndMutualRevoke(t *testing.T) {
	w := accountWorld(t)
	w.emit(dev(2), SetPreference{"x", "1"})
	w.emit(dev(2), SetPreference{"y", "1"})
	w.sync(dev(1), dev(2))
	w.sync(dev(3), dev(1))
	w.emit(dev(1), DeviceRevoke{Device: dev(2), Cutoff: 1}) // y was written by the thief
	a := applyAccount(t, w.all)
	p := a.Preferences()
	if p["x"] != "1" || p["y"] != "" {
		t.Fatalf("cutoff not applied: %v", p)
	}
	// Mutual concurrent revocation: exactly one wins, on every replica.
	w.sync(dev(3), dev(1))
	w.emit(dev(1), DeviceRevoke{Device: dev(3)})
	w.emit(dev(3), DeviceRevoke{Device: dev(1)})
	a = applyAccount(t, w.all)
	revoked := 0
	for _, d := range a.Devices() {
		if d.Revoked && (d.Device == dev(1) || d.Device == dev(3)) {
			revoked++
		}
	}
	if revoked != 1 {
		t.Fatalf("mutual revocation: %d of the two devices revoked, want 1", revoked)
	}
	n := len(w.all)
	b := NewAccount()
	deliver(t, b, append(append([]Event{}, w.all[:n-2]...), w.all[n-1], w.all[n-2]))
	if a.StateHash() != b.StateHash() {
		t.Fatal("mutual revocation depends on order")
	}
}

func TestAccountForeignEventsIgnored(t *testing.T) {
	w := accountWorld(t)
	w.device(dev(7), acct(7))
	w.sync(dev(7), dev(1))
	base := applyAccount(t, w.all).StateHash()
	w.emit(dev(7), ProfileName{"evil"}, DeviceRevoke{Device: dev(1)})
	if applyAccount(t, w.all).StateHash() != base {
		t.Fatal("foreign account changed state")
	}
}

func TestPropertyAccountConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := accountWorld(t)
		devs := []DeviceID{dev(1), dev(2), dev(3)}
		for range rapid.IntRange(1, 30).Draw(t, "steps") {
			d := rapid.SampledFrom(devs).Draw(t, "dev")
			if rapid.Bool().Draw(t, "sync") {
				w.sync(d, rapid.SampledFrom(devs).Draw(t, "from"))
			}
			var op Op
			b := rapid.Bool().Draw(t, "flag")
			switch rapid.IntRange(0, 6).Draw(t, "op") {
			case 0:
				op = SetPreference{rapid.SampledFrom([]string{"a", "b"}).Draw(t, "k"), rapid.StringMatching(`[a-z]{0,3}`).Draw(t, "v")}
			case 1:
				op = ProfileName{rapid.StringMatching(`[a-z]{0,3}`).Draw(t, "n")}
			case 2:
				op = ConversationUpdate{ID: []byte{1}, Archived: &b}
			case 3:
				op = ReadMark{[]byte{1}, Position{{Device: dev(9), Seq: uint64(rapid.IntRange(1, 9).Draw(t, "s"))}}}
			case 4:
				if rapid.IntRange(0, 3).Draw(t, "rev") == 0 {
					op = DeviceRevoke{Device: rapid.SampledFrom(devs).Draw(t, "victim"), Cutoff: uint64(rapid.IntRange(0, 3).Draw(t, "cut"))}
				}
			case 5:
				st := ContactAdded
				if b {
					st = ContactRemoved
				}
				op = ContactUpdate{Account: acct(4), Status: &st}
			case 6:
				op = ContactBlock{Account: acct(byte(rapid.IntRange(4, 5).Draw(t, "blocked"))), Blocked: b}
			}
			if op != nil {
				w.emit(d, op)
			}
		}
		want := applyAccount(t, w.all).StateHash()
		var long []Event // long enough to reserve arenas, duplicates included
		for len(long) < reserveMin && len(w.all) > 0 {
			long = append(long, w.all...)
		}
		if applyAccount(t, long).StateHash() != want {
			t.Fatal("reserved batch differs")
		}
		for range 3 {
			a := NewAccount()
			deliver(t, a, shuffledWithDuplicates(t, w.all))
			if a.StateHash() != want {
				t.Fatal("account state hash differs")
			}
		}
	})
}

func BenchmarkAccountApply(b *testing.B) {
	w := accountWorld(b)
	n := benchN(b) / 10
	for i := range n {
		w.emitFast(dev(byte(i%3+1)), SetPreference{Key: "k", Value: "v"}, ReadMark{[]byte{1}, Position{{Device: dev(9), Seq: uint64(i + 1)}}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		a := NewAccount()
		if _, err := a.ApplyBatch(w.all); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w.all))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// Whatever the account's history, the ops of SnapshotOps rebuild its
// visible state (devices aside) in a fresh account DAG: what a backup
// restores (issue 14, item 5).
func TestPropertySnapshotOpsRebuildState(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := accountWorld(t)
		devs := []DeviceID{dev(1), dev(2), dev(3)}
		for range rapid.IntRange(1, 30).Draw(t, "steps") {
			d := rapid.SampledFrom(devs).Draw(t, "dev")
			if rapid.Bool().Draw(t, "sync") {
				w.sync(d, rapid.SampledFrom(devs).Draw(t, "from"))
			}
			b := rapid.Bool().Draw(t, "flag")
			name := rapid.StringMatching(`[a-z]{0,3}`).Draw(t, "name")
			var op Op
			switch rapid.IntRange(0, 7).Draw(t, "op") {
			case 0:
				op = SetPreference{rapid.SampledFrom([]string{"a", "b"}).Draw(t, "k"), rapid.StringMatching(`[a-z]{0,3}`).Draw(t, "v")}
			case 1:
				op = ProfileName{name}
			case 2:
				op = ConversationUpdate{ID: []byte{byte(rapid.IntRange(1, 3).Draw(t, "conv"))}, Archived: &b, TitleHint: &name}
			case 3:
				op = ReadMark{[]byte{byte(rapid.IntRange(1, 3).Draw(t, "conv"))}, Position{{Device: dev(9), Seq: uint64(rapid.IntRange(1, 9).Draw(t, "s"))}}}
			case 4:
				st := ContactAdded
				if b {
					st = ContactRemoved
				}
				op = ContactUpdate{Account: acct(byte(rapid.IntRange(4, 6).Draw(t, "contact"))), Status: &st, Name: &name}
			case 5:
				v := Verified
				op = ContactUpdate{Account: acct(byte(rapid.IntRange(4, 6).Draw(t, "contact"))), Verification: &v}
			case 6:
				op = ContactBlock{Account: acct(byte(rapid.IntRange(4, 5).Draw(t, "blocked"))), Blocked: b}
			case 7:
				op = ProfileAvatar{Mime: "image/png", Data: []byte(name + "x")}
			}
			w.emit(d, op)
		}
		orig := applyAccount(t, w.all)
		ops := orig.SnapshotOps()
		// A fresh account: one device, the snapshot in events of at most
		// 16 ops.
		fresh := newWorld(t)
		fresh.device(dev(7), acct(1))
		fresh.emit(dev(7), DeviceAdd{Device: dev(7), Name: "restored", Cert: []byte{1}})
		for len(ops) > 0 {
			n := min(16, len(ops))
			fresh.emit(dev(7), ops[:n]...)
			ops = ops[n:]
		}
		got := applyAccount(t, fresh.all)
		if a, b := visibleAccount(orig), visibleAccount(got); a != b {
			t.Fatalf("restored state differs:\n%s\n%s", a, b)
		}
	})
}

// visibleAccount prints the account's visible state but its devices.
func visibleAccount(a *Account) string {
	name, mime, av := a.Profile()
	rp := map[string]Position{}
	for _, c := range a.Conversations() {
		rp[string(c.ID)] = a.ReadPosition(c.ID)
	}
	for _, k := range []string{"\x01", "\x02", "\x03"} {
		rp[k] = a.ReadPosition([]byte(k))
	}
	return fmt.Sprintf("%q %q %x %v %+v %+v %v %v", name, mime, av, a.Preferences(), a.Contacts(), a.Conversations(), a.BlockedAccounts(), rp)
}
