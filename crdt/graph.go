package crdt

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
)

// graph is the causal structure shared by both state types: the applied
// events in apply order (a causal order), compact parent lists, per-device
// chains and the vectors needed for cheap "is X in the causal past of Y"
// questions.
//
// Vectors: every event stores a "watch vector" restricted to the watched
// devices — those that authored a control event (membership, revocation).
// Control events are rare, so the watch vector is a handful of integers,
// and "control event C is in the past of E" is E.watch[slot(C.dev)] ≥ C.seq.
// A device becomes watched when its first control event is applied; events
// applied earlier store no entry for it (read as 0). That is exact for
// every comparison we make: those events cannot have that control event or
// any later event of its device in their past. Control events additionally
// store a full vector over all devices (computed by a walk of their past),
// which answers "is E in the past of C" for any E.
type graph struct {
	events  []eventRec
	byID    map[cid.Cid]int32
	parents []int32  // arena; eventRec.par indexes it
	watch   []uint64 // arena; eventRec.watch indexes it

	devs    []devRec
	devIdx  map[DeviceID]int32
	accts   []AccountID
	acctIdx map[AccountID]int32

	watched []int32 // slot -> device index
	root    int32   // -1 until the parentless event is applied
	full    map[int32][]uint64

	// Walk scratch: visit stamps by event index, reset by bumping stamp.
	stamp   uint32
	visited []uint32
	stack   []int32
}

type span struct{ off, n uint32 }

type eventRec struct {
	id      cid.Cid
	dev     int32
	acct    int32
	seq     uint64
	height  uint64
	lamport uint64
	time    int64
	par     span
	watch   span
	ops     []Op
	control bool
	valid   bool  // ops take effect (decided by the owning state)
	done    bool  // validity decided and ops reduced into the current derived state
	first   int32 // first message index of this event in the conversation arena, -1 if none
}

type devRec struct {
	id    DeviceID
	acct  int32
	slot  int32   // watch slot, -1 if not watched
	wfrom uint64  // seq of the device's first control event; watch entries are exact from here
	evs   []int32 // event index by seq-1
}

func newGraph() graph {
	return graph{
		byID:    make(map[cid.Cid]int32),
		devIdx:  make(map[DeviceID]int32),
		acctIdx: make(map[AccountID]int32),
		root:    -1,
		full:    make(map[int32][]uint64),
	}
}

// reserveMin is the batch size from which ApplyBatch reserves arena space.
const reserveMin = 64

// reserve grows the event arenas and the id index for a batch of events.
// The index is rebuilt with room for the batch only when the batch is at
// least as large as what is stored, so the copy is amortized.
func (g *graph) reserve(events []Event) {
	pars := 0
	for i := range events {
		pars += min(len(events[i].Parents), MaxParents)
	}
	g.events = slices.Grow(g.events, len(events))
	g.parents = slices.Grow(g.parents, pars)
	g.watch = slices.Grow(g.watch, len(events)*len(g.watched))
	if len(g.byID) < len(events) {
		m := make(map[cid.Cid]int32, len(g.byID)+len(events))
		maps.Copy(m, g.byID)
		g.byID = m
	}
}

func (g *graph) parentsOf(i int32) []int32 {
	s := g.events[i].par
	return g.parents[s.off : s.off+s.n]
}

func (g *graph) watchOf(i int32) []uint64 {
	s := g.events[i].watch
	return g.watch[s.off : s.off+s.n]
}

// add validates e against the graph and appends it. dup is true (and
// nothing changes) when e was applied before. control marks events that
// must carry a full vector and make their device watched.
func (g *graph) add(e *Event, control bool) (idx int32, dup bool, err error) {
	if !e.ID.Defined() {
		return 0, false, fmt.Errorf("%w: undefined id", ErrInvalidEvent)
	}
	if i, ok := g.byID[e.ID]; ok {
		return i, true, nil
	}
	if len(e.Parents) > MaxParents {
		return 0, false, fmt.Errorf("%w: %d parents > %d", ErrInvalidEvent, len(e.Parents), MaxParents)
	}
	if len(e.Ops) > MaxOpsPerEvent {
		return 0, false, fmt.Errorf("%w: %d ops > %d", ErrInvalidEvent, len(e.Ops), MaxOpsPerEvent)
	}
	if e.Seq == 0 {
		return 0, false, fmt.Errorf("%w: sequence number 0", ErrInvalidEvent)
	}
	var par [MaxParents]int32
	var maxH, maxL uint64
	for k, p := range e.Parents {
		pi, ok := g.byID[p]
		if !ok {
			return 0, false, fmt.Errorf("event %s: parent %s: %w", e.ID, p, ErrMissingParents)
		}
		for _, q := range par[:k] {
			if q == pi {
				return 0, false, fmt.Errorf("%w: duplicate parent %s", ErrInvalidEvent, p)
			}
		}
		par[k] = pi
		maxH = max(maxH, g.events[pi].height)
		maxL = max(maxL, g.events[pi].lamport)
	}
	if len(e.Parents) == 0 {
		if g.root >= 0 {
			return 0, false, fmt.Errorf("event %s: %w", e.ID, ErrMultipleRoots)
		}
	} else {
		if e.Height != maxH+1 {
			return 0, false, fmt.Errorf("%w: height %d, want %d", ErrInvalidEvent, e.Height, maxH+1)
		}
		if e.Lamport <= maxL {
			return 0, false, fmt.Errorf("%w: lamport %d not above parents' %d", ErrInvalidEvent, e.Lamport, maxL)
		}
	}
	di, known := g.devIdx[e.Device]
	var last uint64
	if known {
		d := &g.devs[di]
		if g.accts[d.acct] != e.Account {
			return 0, false, fmt.Errorf("%w: device %x bound to another account", ErrInvalidEvent, e.Device[:4])
		}
		last = uint64(len(d.evs))
	}
	switch {
	case e.Seq <= last:
		return 0, false, fmt.Errorf("event %s: device %x seq %d: %w", e.ID, e.Device[:4], e.Seq, ErrEquivocation)
	case e.Seq != last+1:
		return 0, false, fmt.Errorf("%w: device %x seq %d after %d", ErrInvalidEvent, e.Device[:4], e.Seq, last)
	}

	// Valid: mutate from here on.
	if !known {
		ai := g.internAcct(e.Account)
		di = int32(len(g.devs))
		g.devs = append(g.devs, devRec{id: e.Device, acct: ai, slot: -1})
		g.devIdx[e.Device] = di
	}
	if control && g.devs[di].slot < 0 {
		g.devs[di].slot = int32(len(g.watched))
		g.devs[di].wfrom = e.Seq
		g.watched = append(g.watched, di)
	}
	idx = int32(len(g.events))
	pOff := uint32(len(g.parents))
	g.parents = append(g.parents, par[:len(e.Parents)]...)
	wOff := uint32(len(g.watch))
	g.watch = append(g.watch, make([]uint64, len(g.watched))...)
	w := g.watch[wOff:]
	for _, pi := range par[:len(e.Parents)] {
		for k, v := range g.watchOf(pi) {
			w[k] = max(w[k], v)
		}
	}
	if s := g.devs[di].slot; s >= 0 {
		w[s] = e.Seq
	}
	g.events = append(g.events, eventRec{
		id: e.ID, dev: di, acct: g.devs[di].acct, seq: e.Seq, height: e.Height,
		lamport: e.Lamport, time: e.Time, ops: e.Ops, control: control, first: -1,
		par:   span{pOff, uint32(len(e.Parents))},
		watch: span{wOff, uint32(len(g.watched))},
	})
	g.byID[e.ID] = idx
	g.devs[di].evs = append(g.devs[di].evs, idx)
	if len(e.Parents) == 0 {
		g.root = idx
	}
	if control {
		g.full[idx] = g.fullVector(idx, 0)
	}
	return idx, false, nil
}

// fullVector walks the past of i (inclusive), visiting only events at or
// above height floor, and returns the max sequence number seen per device.
// Entries for devices whose events all lie below floor are not meaningful.
func (g *graph) fullVector(i int32, floor uint64) []uint64 {
	vec := make([]uint64, len(g.devs))
	g.walk(i, floor, func(j int32) bool {
		e := &g.events[j]
		vec[e.dev] = max(vec[e.dev], e.seq)
		return false
	})
	return vec
}

// walk visits i and its ancestors with height ≥ floor, each once, until
// visit returns true. It reports whether visit stopped the walk.
func (g *graph) walk(i int32, floor uint64, visit func(int32) bool) bool {
	if len(g.visited) < len(g.events) {
		g.visited = append(g.visited, make([]uint32, len(g.events)-len(g.visited))...)
	}
	g.stamp++
	if g.stamp == 0 { // wrapped: clear stale stamps
		clear(g.visited)
		g.stamp = 1
	}
	st := append(g.stack[:0], i)
	g.visited[i] = g.stamp
	found := false
	for len(st) > 0 && !found {
		j := st[len(st)-1]
		st = st[:len(st)-1]
		if visit(j) {
			found = true
			break
		}
		for _, p := range g.parentsOf(j) {
			if g.visited[p] != g.stamp && g.events[p].height >= floor {
				g.visited[p] = g.stamp
				st = append(st, p)
			}
		}
	}
	g.stack = st[:0]
	return found
}

// before reports whether x is in the strict causal past of y.
func (g *graph) before(x, y int32) bool {
	if x == y {
		return false
	}
	ex, ey := &g.events[x], &g.events[y]
	if ex.height >= ey.height {
		return false
	}
	if ex.dev == ey.dev {
		return ex.seq < ey.seq
	}
	if d := &g.devs[ex.dev]; d.slot >= 0 && ex.seq >= d.wfrom {
		s := d.slot
		if w := g.watchOf(y); int(s) < len(w) {
			return w[s] >= ex.seq
		}
		return false // y was applied before x's device was watched, so before x
	}
	if v, ok := g.full[y]; ok {
		return int(ex.dev) < len(v) && v[ex.dev] >= ex.seq
	}
	// Rare (cross-device reaction removal): walk down to x's height.
	return g.walk(y, ex.height, func(j int32) bool {
		e := &g.events[j]
		return e.dev == ex.dev && e.seq >= ex.seq
	})
}

// concurrent reports whether neither of x, y is in the other's past.
func (g *graph) concurrent(x, y int32) bool {
	return x != y && !g.before(x, y) && !g.before(y, x)
}

// internAcct returns the index of account a, adding it if needed.
func (g *graph) internAcct(a AccountID) int32 {
	if i, ok := g.acctIdx[a]; ok {
		return i
	}
	i := int32(len(g.accts))
	g.accts = append(g.accts, a)
	g.acctIdx[a] = i
	return i
}

// order is the deterministic total order (height, CID) used for replays
// and tie-breaks. It is topological and identical on every replica.
func (g *graph) order(x, y int32) int {
	ex, ey := &g.events[x], &g.events[y]
	if ex.height != ey.height {
		if ex.height < ey.height {
			return -1
		}
		return 1
	}
	return strings.Compare(ex.id.KeyString(), ey.id.KeyString())
}

// lww is the key of a last-writer-wins register write: (Lamport, device,
// event CID, op index), compared in that order.
type lww struct {
	lamport uint64
	dev     DeviceID
	id      cid.Cid
	op      uint16
	set     bool
}

func (g *graph) lwwKey(i int32, op int) lww {
	e := &g.events[i]
	return lww{lamport: e.lamport, dev: g.devs[e.dev].id, id: e.id, op: uint16(op), set: true}
}

// less reports whether a loses against b.
func (a lww) less(b lww) bool {
	if a.set != b.set {
		return !a.set
	}
	if a.lamport != b.lamport {
		return a.lamport < b.lamport
	}
	if c := bytes.Compare(a.dev[:], b.dev[:]); c != 0 {
		return c < 0
	}
	if c := strings.Compare(a.id.KeyString(), b.id.KeyString()); c != 0 {
		return c < 0
	}
	return a.op < b.op
}
