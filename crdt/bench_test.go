package crdt

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// chatHistory builds n message events from authors devices in one group:
// each author writes on top of what it has seen, and authors sync every
// few events, so parents are realistic (1–several heads).
func chatHistory(tb tb, n, authors int) []Event {
	w := newWorld(tb)
	var init []Op
	for i := 1; i <= authors; i++ {
		w.device(dev(byte(i)), acct(byte(i)))
		if i > 1 {
			init = append(init, AddMember{acct(byte(i))})
		}
	}
	w.emit(dev(1), init...)
	for i := 2; i <= authors; i++ {
		w.sync(dev(byte(i)), dev(1))
	}
	for k := 0; len(w.all) < n+1; k++ {
		d := dev(byte(k%authors + 1))
		if k%3 == 0 {
			// Cheap sync: adopt the other author's head as an extra parent.
			o := w.views[dev(byte((k+1)%authors+1))]
			v := w.views[d]
			if len(o.heads) == 1 && len(v.heads) == 1 && o.heads[0] != v.heads[0] {
				v.heads = append(v.heads, o.heads[0])
			}
		}
		w.emitFast(d, Message{Text: "a typical short chat message, about sixty bytes long."})
	}
	return w.all
}

// emitFast is emit without re-encoding and re-indexing, for large histories.
func (w *world) emitFast(d DeviceID, ops ...Op) {
	v := w.views[d]
	var h, l uint64
	for _, p := range v.heads {
		e := w.byID[p]
		h, l = max(h, e.Height), max(l, e.Lamport)
	}
	w.seqs[d]++
	e := Event{Parents: v.heads, Device: d, Account: w.owners[d], Seq: w.seqs[d], Height: h + 1, Lamport: l + 1, Ops: ops}
	e.ID = testCID(string(d[:1]) + string(rune(e.Seq)) + string(rune(len(w.all))))
	w.all = append(w.all, e)
	ep := &w.all[len(w.all)-1]
	w.byID[e.ID] = &Event{Height: ep.Height, Lamport: ep.Lamport, Parents: ep.Parents}
	v.known[e.ID] = true
	v.heads = []cid.Cid{e.ID}
}

func benchN(b *testing.B) int {
	if testing.Short() {
		return 2_000
	}
	return 100_000
}

func BenchmarkApplyMessages(b *testing.B) {
	events := chatHistory(b, benchN(b), 5)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c := NewConversation()
		if _, err := c.ApplyBatch(events); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(events))*float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkStateHash(b *testing.B) {
	events := chatHistory(b, benchN(b), 5)
	c := NewConversation()
	if _, err := c.ApplyBatch(events); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		_ = c.StateHash()
	}
}

func BenchmarkDecodeOps(b *testing.B) {
	body, _ := EncodeOps([]Op{Message{Text: "a typical short chat message, about sixty bytes long."}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeOps(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeOpsMessage decodes typical catch-up bodies: one Message op
// of ~100–300 bytes (with and without a reply), and one Receipt.
func BenchmarkDecodeOpsMessage(b *testing.B) {
	text := "Sure, I'll bring the slides to the meeting tomorrow. Could you check the numbers in section three again? " +
		"The totals didn't match last time and I'd rather fix it before the client sees them. Thanks! 🙂"
	pos := Position{{Device: dev(1), Seq: 812}, {Device: dev(2), Seq: 77}, {Device: dev(3), Seq: 1203}}
	cases := []struct {
		name string
		op   Op
	}{
		{"text", Message{Text: text}},
		{"reply", Message{Text: text[:100], ReplyTo: &MsgID{Event: testCID("parent"), Index: 0}}},
		{"receipt", Receipt{Read: true, Upto: pos}},
	}
	for _, tc := range cases {
		body, err := EncodeOps([]Op{tc.op})
		if err != nil {
			b.Fatal(err)
		}
		for _, dec := range []struct {
			name string
			f    func([]byte) ([]Op, error)
		}{{"", DecodeOps}, {"/ref", decodeOpsRef}} {
			b.Run(tc.name+dec.name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := dec.f(body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeOpsCatchUp decodes benchN distinct message bodies (~100–300
// bytes, every tenth a reply, every twentieth a receipt), as a catch-up
// does; "/ref" is the reference decoder the fast path replaced.
func BenchmarkDecodeOpsCatchUp(b *testing.B) {
	n := benchN(b)
	bodies := make([][]byte, n)
	text := "Sure, I'll bring the slides to the meeting tomorrow. Could you check the numbers in section three again? " +
		"The totals didn't match last time and I'd rather fix it before the client sees them. Thanks! 🙂"
	parent := testCID("parent")
	for i := range bodies {
		var op Op = Message{Text: fmt.Sprintf("%d %s", i, strings.ToValidUTF8(text[:90+i%110], ""))}
		switch {
		case i%20 == 0:
			op = Receipt{Read: i%40 == 0, Upto: Position{{Device: dev(1), Seq: uint64(i + 1)}, {Device: dev(2), Seq: 7}}}
		case i%10 == 0:
			op = Message{Text: text[:60], ReplyTo: &MsgID{Event: parent, Index: uint16(i % 3)}}
		}
		var err error
		if bodies[i], err = EncodeOps([]Op{op}); err != nil {
			b.Fatal(err)
		}
	}
	for _, dec := range []struct {
		name string
		f    func([]byte) ([]Op, error)
	}{{"fast", DecodeOps}, {"ref", decodeOpsRef}} {
		b.Run(dec.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, body := range bodies {
					if _, err := dec.f(body); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/body")
		})
	}
}
