package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// world builds well-formed events the way devices would: each device has
// its own view of the DAG (known events and heads) and views meet by sync.
// tb is the part of testing.TB that *rapid.T also has.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

type world struct {
	t      tb
	all    []Event // creation order: a topological order
	byID   map[cid.Cid]*Event
	views  map[DeviceID]*view
	seqs   map[DeviceID]uint64
	owners map[DeviceID]AccountID
}

type view struct {
	known map[cid.Cid]bool
	heads []cid.Cid
}

func newWorld(t tb) *world {
	return &world{t: t, byID: map[cid.Cid]*Event{}, views: map[DeviceID]*view{}, seqs: map[DeviceID]uint64{}, owners: map[DeviceID]AccountID{}}
}

func acct(n byte) AccountID { return AccountID{n, 0xaa} }
func dev(n byte) DeviceID   { return DeviceID{n, 0xdd} }

func (w *world) device(d DeviceID, a AccountID) {
	w.owners[d] = a
	if w.views[d] == nil {
		w.views[d] = &view{known: map[cid.Cid]bool{}}
	}
}

// emit creates an event by device d on top of its view's heads.
func (w *world) emit(d DeviceID, ops ...Op) Event {
	w.t.Helper()
	v := w.views[d]
	if v == nil {
		w.t.Fatalf("unknown device %x", d[:1])
	}
	parents := slices.Clone(v.heads)
	var h, l uint64
	for _, p := range parents {
		h = max(h, w.byID[p].Height)
		l = max(l, w.byID[p].Lamport)
	}
	w.seqs[d]++
	e := Event{Parents: parents, Device: d, Account: w.owners[d], Seq: w.seqs[d], Height: h + 1, Lamport: l + 1, Time: int64(len(w.all)) * 1000, Ops: ops}
	body, err := EncodeOps(ops)
	if err != nil {
		w.t.Fatalf("encode: %v", err)
	}
	hs := sha256.New()
	hs.Write(d[:])
	hs.Write(binary.AppendUvarint(nil, e.Seq))
	for _, p := range parents {
		hs.Write(p.Bytes())
	}
	hs.Write(body)
	mh, _ := multihash.Encode(hs.Sum(nil), multihash.SHA2_256)
	e.ID = cid.NewCidV1(cid.DagCBOR, mh)
	w.all = append(w.all, e)
	w.byID[e.ID] = &w.all[len(w.all)-1]
	// w.all may reallocate: rebuild pointers lazily.
	for i := range w.all {
		w.byID[w.all[i].ID] = &w.all[i]
	}
	v.known[e.ID] = true
	v.heads = []cid.Cid{e.ID}
	return e
}

// sync gives device to everything device from knows.
func (w *world) sync(to, from DeviceID) {
	vt, vf := w.views[to], w.views[from]
	for id := range vf.known {
		vt.known[id] = true
	}
	child := map[cid.Cid]bool{}
	for id := range vt.known {
		for _, p := range w.byID[id].Parents {
			child[p] = true
		}
	}
	vt.heads = vt.heads[:0]
	for id := range vt.known {
		if !child[id] {
			vt.heads = append(vt.heads, id)
		}
	}
	slices.SortFunc(vt.heads, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	if len(vt.heads) > MaxParents {
		vt.heads = vt.heads[:MaxParents] // merge the rest later
	}
}

// deliver applies events through a causal buffer in the given order, as a
// node would with out-of-order network delivery.
func deliver(t tb, s interface{ Apply(Event) error }, order []Event) {
	t.Helper()
	applied := map[cid.Cid]bool{}
	var held []Event
	ready := func(e Event) bool {
		for _, p := range e.Parents {
			if !applied[p] {
				return false
			}
		}
		return true
	}
	for _, e := range order {
		held = append(held, e)
		for progress := true; progress; {
			progress = false
			for i := 0; i < len(held); i++ {
				if ready(held[i]) {
					if err := s.Apply(held[i]); err != nil {
						t.Fatalf("apply %s: %v", held[i].ID, err)
					}
					applied[held[i].ID] = true
					held = slices.Delete(held, i, i+1)
					i--
					progress = true
				}
			}
		}
	}
	if len(held) > 0 {
		t.Fatalf("%d events never became ready", len(held))
	}
}

func msgOf(e Event, i uint16) MsgID { return MsgID{Event: e.ID, Index: i} }
