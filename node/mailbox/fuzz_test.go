package mailbox

import (
	"bufio"
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/protocol"
)

func frameBytes(t testing.TB, frames ...protocol.MailboxFrame) []byte {
	var buf bytes.Buffer
	w := protocol.NewMailboxWriter(&buf)
	for _, f := range frames {
		if _, err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// FuzzServeRequest feeds the relay's request handling (after the frame
// decoder) with arbitrary frames: nothing panics, only a correctly signed
// deposit is stored, and every frame the relay answers with is one a client
// accepts.
func FuzzServeRequest(f *testing.F) {
	st, err := OpenStore(f.TempDir(), Limits{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	relay := []byte("relay")
	opts := Options{Now: func() time.Time { return t0 }}
	_ = opts.defaults()
	s := newService(st, relay, opts)

	o := testOwner(1)
	c, _ := o.DepositKey().Capability(PeriodOf(t0))
	d := o.Drain(PeriodOf(t0))
	es := envs("fuzz", 3, 40)
	f.Add(frameBytes(f, protocol.MailboxFrame{Kind: protocol.MailboxKindDeposit, Deposit: c.Deposit(relay, t0, es)}))
	f.Add(frameBytes(f, protocol.MailboxFrame{Kind: protocol.MailboxKindDrain, Drain: &protocol.MailboxDrain{
		Mailboxes: []protocol.MailboxDrainReq{d.DrainRequest(relay, t0, 0), d.DrainRequest(relay, t0, 1)}}}))
	f.Add(frameBytes(f, protocol.MailboxFrame{Kind: protocol.MailboxKindAck, Ack: d.Ack(relay, t0, digestsOf(es[:1]))}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := protocol.NewMailboxReader(bytes.NewReader(b))
		for range 4 {
			fr, _, err := r.Read()
			if err != nil {
				return
			}
			switch fr.Kind {
			case protocol.MailboxKindDeposit:
				res := s.depositResult(peer.ID("p"), "addr", fr.Deposit, t0)
				if res.Code == protocol.MailboxOK {
					if _, err := VerifyDeposit(relay, fr.Deposit); err != nil {
						t.Fatalf("stored a deposit that does not verify: %v", err)
					}
				}
			case protocol.MailboxKindAck:
				s.ack(peer.ID("p"), fr.Ack)
			case protocol.MailboxKindDrain:
				err := s.drain(peer.ID("p"), "addr", fr.Drain, func(out protocol.MailboxFrame) error {
					_, err := protocol.EncodeMailboxFrame(out)
					return err
				})
				if err != nil {
					t.Fatalf("the relay emitted a frame a client refuses: %v", err)
				}
			}
		}
	})
}

// FuzzClientDrain feeds a client's drain with an arbitrary answer from a
// relay: nothing panics, and what is accepted belongs to the mailboxes
// asked for, in increasing sequence order, counted as the End says.
func FuzzClientDrain(f *testing.F) {
	o := testOwner(1)
	keys := o.DrainKeys([]Period{PeriodOf(t0), PeriodOf(t0) - 1})
	byID := map[ID]*DrainKey{keys[0].ID: keys[0], keys[1].ID: keys[1]}
	c := NewClient(nil, ClientOptions{Now: func() time.Time { return t0 }})
	f.Add(frameBytes(f,
		protocol.MailboxFrame{Kind: protocol.MailboxKindItems, Items: &protocol.MailboxItems{ID: keys[0].ID[:], Items: []protocol.MailboxItem{{Seq: 1, Envelope: []byte("a")}, {Seq: 3, Envelope: []byte("b")}}}},
		protocol.MailboxFrame{Kind: protocol.MailboxKindItems, Items: &protocol.MailboxItems{ID: keys[1].ID[:], Items: []protocol.MailboxItem{{Seq: 7, Envelope: []byte("c")}}}},
		protocol.MailboxFrame{Kind: protocol.MailboxKindEnd, End: &protocol.MailboxEnd{Sent: 3, Code: protocol.MailboxOK, Refused: []uint64{1}}},
	))
	f.Add(frameBytes(f, protocol.MailboxFrame{Kind: protocol.MailboxKindResult, Result: &protocol.MailboxResult{Code: protocol.MailboxRateLimited, RetryAfter: 3}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &stream{bw: bufio.NewWriter(io.Discard)}
		s.w = protocol.NewMailboxWriter(s.bw)
		s.r = protocol.NewMailboxReader(bytes.NewReader(b))
		res := Drained{Last: map[ID]uint64{}}
		accepted := map[ID][]Digest{}
		last := map[ID]uint64{}
		n := 0
		err := c.drainChunk(s, []byte("relay"), keys, byID, DrainOptions{}, &res, accepted, func(it Item) error {
			if byID[it.Mailbox] == nil {
				t.Fatalf("accepted an envelope of a mailbox not asked for")
			}
			if it.Seq <= last[it.Mailbox] {
				t.Fatalf("accepted sequence %d after %d", it.Seq, last[it.Mailbox])
			}
			last[it.Mailbox] = it.Seq
			n++
			return nil
		})
		if err == nil && res.Received != n {
			t.Fatalf("received %d, counted %d", n, res.Received)
		}
	})
}
