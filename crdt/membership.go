package crdt

import "slices"

type memKind uint8

const (
	memAdd memKind = iota
	memRemove
	memGrant
	memRevoke
)

// memOp is one membership op in the replay: the event carrying it, the
// kind and the target account index.
type memOp struct {
	ev     int32
	kind   memKind
	target int32
}

// status is an account's membership as seen from some set of events.
type status struct {
	member, admin bool
}

// membership is the authority state of a conversation. It is recomputed by
// a deterministic replay whenever a control event (one with a membership
// op, or the root) is applied; control events are rare.
type membership struct {
	controls []int32  // control event indices in apply order
	valid    []memOp  // ops that took effect, in replay order
	removals []memOp  // subset of valid: removals
	final    []status // by account index: membership over all events
	ctlMax   []uint64 // by watch slot: highest seq of a control event
}

func controlOps(ops []Op) bool {
	for _, op := range ops {
		switch op.(type) {
		case AddMember, RemoveMember, SetAdmin:
			return true
		}
	}
	return false
}

// statusIn computes acct's status from the valid ops whose events satisfy
// inPast. Membership: some add such that every remove of the account is
// in that add's strict past — so a remove concurrent with an add (or in
// the same event) wins. Admin: member, and some grant such that every
// revoke and every remove is in the grant's strict past.
func statusIn(g *graph, ops []memOp, acct int32, inPast func(ev int32) bool) status {
	var adds, grants, removes, revokes []int32
	for _, o := range ops {
		if o.target != acct || !inPast(o.ev) {
			continue
		}
		switch o.kind {
		case memAdd:
			adds = append(adds, o.ev)
		case memRemove:
			removes = append(removes, o.ev)
		case memGrant:
			grants = append(grants, o.ev)
		case memRevoke:
			revokes = append(revokes, o.ev)
		}
	}
	dominates := func(ev int32, lists ...[]int32) bool {
		for _, l := range lists {
			for _, x := range l {
				if !g.before(x, ev) {
					return false
				}
			}
		}
		return true
	}
	var st status
	for _, a := range adds {
		if dominates(a, removes) {
			st.member = true
			break
		}
	}
	if !st.member {
		return st
	}
	for _, gr := range grants {
		if dominates(gr, removes, revokes) {
			st.admin = true
			break
		}
	}
	return st
}

// replay recomputes which membership ops take effect. Control events are
// processed in the total order (height, CID). An event's ops are judged by
// the membership seen in its own causal past; an event whose author has a
// valid removal concurrent with it is ignored (strong remove). When a
// removal is accepted, earlier-ordered control events of the removed
// account that are concurrent with it are excluded and the replay starts
// over. Exclusions only grow, so the loop ends after at most one restart
// per control event; the result depends only on the set of events.
func (m *membership) replay(g *graph) {
	ctl := slices.Clone(m.controls)
	slices.SortFunc(ctl, g.order)
	excluded := make(map[int32]bool)
	for {
		restart := false
		valid := m.valid[:0]
		var accepted []int32
		for _, c := range ctl {
			g.events[c].valid = false
			if excluded[c] {
				continue
			}
			e := &g.events[c]
			var st status
			if c == g.root {
				st = status{member: true, admin: true}
				valid = append(valid, memOp{c, memAdd, e.acct}, memOp{c, memGrant, e.acct})
			} else {
				st = statusIn(g, valid, e.acct, func(ev int32) bool { return g.before(ev, c) })
			}
			if !st.member {
				continue
			}
			cut := false
			for _, o := range valid {
				if o.kind == memRemove && o.target == e.acct && o.ev != c && !g.before(o.ev, c) {
					cut = true
					break
				}
			}
			if cut {
				continue
			}
			e.valid = true
			accepted = append(accepted, c)
			start := len(valid)
			for _, op := range e.ops {
				switch op := op.(type) {
				case AddMember:
					if st.admin {
						valid = append(valid, memOp{c, memAdd, g.internAcct(op.Account)})
					}
				case RemoveMember:
					t := g.internAcct(op.Account)
					if st.admin || t == e.acct {
						valid = append(valid, memOp{c, memRemove, t})
					}
				case SetAdmin:
					if st.admin {
						k := memRevoke
						if op.Admin {
							k = memGrant
						}
						valid = append(valid, memOp{c, k, g.internAcct(op.Account)})
					}
				}
			}
			for _, o := range valid[start:] {
				if o.kind != memRemove {
					continue
				}
				for _, p := range accepted {
					if p != c && g.events[p].acct == o.target && !g.before(p, c) {
						excluded[p] = true
						restart = true
					}
				}
			}
			if restart {
				break
			}
		}
		m.valid = valid
		if !restart {
			break
		}
	}
	m.removals = m.removals[:0]
	for _, o := range m.valid {
		if o.kind == memRemove {
			m.removals = append(m.removals, o)
		}
	}
	m.final = slices.Grow(m.final[:0], len(g.accts))[:len(g.accts)]
	all := func(int32) bool { return true }
	for a := range m.final {
		m.final[a] = statusIn(g, m.valid, int32(a), all)
	}
	m.ctlMax = slices.Grow(m.ctlMax[:0], len(g.watched))[:len(g.watched)]
	clear(m.ctlMax)
	for _, c := range m.controls {
		e := &g.events[c]
		s := g.devs[e.dev].slot
		m.ctlMax[s] = max(m.ctlMax[s], e.seq)
	}
}

// finalStatus returns acct's status over all applied events.
func (m *membership) finalStatus(acct int32) status {
	if int(acct) < len(m.final) {
		return m.final[acct]
	}
	return status{}
}

// seesAllControls reports whether every control event is in the past of
// event i (or is i), the common case that makes the final view apply.
func (m *membership) seesAllControls(g *graph, i int32) bool {
	w := g.watchOf(i)
	for s, v := range m.ctlMax {
		if s >= len(w) || w[s] < v {
			return false
		}
	}
	return true
}

// eventValid decides whether the ops of a non-control event take effect:
// its author is a member as seen from its causal past, and no valid
// removal of the author is concurrent with it.
func (m *membership) eventValid(g *graph, i int32) bool {
	e := &g.events[i]
	if e.control {
		return e.valid
	}
	if m.seesAllControls(g, i) {
		return m.finalStatus(e.acct).member
	}
	if !statusIn(g, m.valid, e.acct, func(ev int32) bool { return g.before(ev, i) }).member {
		return false
	}
	for _, r := range m.removals {
		if r.target == e.acct && g.concurrent(r.ev, i) {
			return false
		}
	}
	return true
}

// validSet snapshots the valid ops, for change detection.
func (m *membership) validSet() map[memOp]bool {
	s := make(map[memOp]bool, len(m.valid))
	for _, o := range m.valid {
		s[o] = true
	}
	return s
}
