package mailbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// clock is a settable clock shared by a relay and its clients.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// relayFixture is a relay on loopback that can be stopped and started
// again with the same identity and data directory.
type relayFixture struct {
	t     testing.TB
	dir   string
	key   crypto.PrivKey
	opts  Options
	lim   Limits
	h     host.Host
	store *Store
	svc   *Service
}

func newRelay(t testing.TB, clk *clock, opts Options, lim Limits) *relayFixture {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts.Now = clk.Now
	opts.Logger = testsupport.Logger(t)
	r := &relayFixture{t: t, dir: t.TempDir(), key: key, opts: opts, lim: lim}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *relayFixture) start() {
	r.t.Helper()
	r.h = testsupport.Host(r.t, libp2p.Identity(r.key))
	var err error
	if r.store, err = OpenStore(r.dir, r.lim, r.opts.Logger); err != nil {
		r.t.Fatal(err)
	}
	if r.svc, err = NewService(r.h, r.store, r.opts); err != nil {
		r.t.Fatal(err)
	}
}

func (r *relayFixture) stop() {
	if r.svc == nil {
		return
	}
	r.svc.Close()
	r.store.Close()
	r.h.Close()
	r.svc = nil
}

func (r *relayFixture) info() peer.AddrInfo { return testsupport.AddrInfo(r.h) }

func newClient(t testing.TB, clk *clock) *Client {
	return NewClient(testsupport.Host(t), ClientOptions{Now: clk.Now, Timeout: 20 * time.Second, Logger: testsupport.Logger(t)})
}

// contactKey is the deposit key as a contact receives it: encoded by the
// owner, parsed by the contact.
func contactKey(t testing.TB, o *OwnerKey) DepositKey {
	b, _ := o.DepositKey().MarshalBinary()
	k, err := ParseDepositKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func capFor(t testing.TB, k DepositKey, at time.Time) *Capability {
	c, err := k.Capability(PeriodOf(at))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// collect drains with fn keeping every envelope.
func collect(ctx context.Context, c *Client, relay peer.AddrInfo, keys []*DrainKey, opts DrainOptions) ([][]byte, Drained, error) {
	var got [][]byte
	res, err := c.Drain(ctx, relay, keys, opts, func(it Item) error {
		got = append(got, it.Envelope)
		return nil
	})
	return got, res, err
}

func TestDepositDrainAck(t *testing.T) {
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	sender, owner := newClient(t, clk), newClient(t, clk)
	o := testOwner(1)
	ctx := context.Background()

	es := envs("hello", 300, 200)
	res, err := sender.Deposit(ctx, relay.info(), capFor(t, contactKey(t, o), clk.Now()), es)
	if err != nil || res.Stored != 300 {
		t.Fatalf("deposit: %+v %v", res, err)
	}
	// A retry of the same envelopes (a lost answer) stores nothing twice.
	if res, err := sender.Deposit(ctx, relay.info(), capFor(t, contactKey(t, o), clk.Now()), es[:10]); err != nil || res.Duplicate != 10 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	keys := o.DrainKeys(DrainPeriods(clk.Now(), time.Time{}, time.Hour, 30*24*time.Hour))
	got, d, err := collect(ctx, owner, relay.info(), keys, DrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The other 31 periods never held anything: refused alike.
	if len(got) != 300 || d.Acked != 300 || d.More || len(d.Refused) != len(keys)-1 {
		t.Fatalf("drained %d, %+v", len(got), d)
	}
	for i := range es {
		if !bytes.Equal(got[i], es[i]) {
			t.Fatalf("envelope %d differs or out of order", i)
		}
	}
	if u := relay.store.Usage(); u.Envelopes != 0 || u.Bytes != 0 {
		t.Fatalf("relay still holds %+v after the ack", u)
	}
	if got, _, err := collect(ctx, owner, relay.info(), keys, DrainOptions{}); err != nil || len(got) != 0 {
		t.Fatalf("second drain: %d %v", len(got), err)
	}
	// Receipts flow back the same way: the owner deposits into the
	// sender's mailbox with the deposit key the sender gave it.
	senderKey := testOwner(2)
	if _, err := owner.Deposit(ctx, relay.info(), capFor(t, contactKey(t, senderKey), clk.Now()), envs("receipt", 1, 50)); err != nil {
		t.Fatal(err)
	}
	got, _, err = collect(ctx, sender, relay.info(), senderKey.DrainKeys([]Period{PeriodOf(clk.Now())}), DrainOptions{})
	if err != nil || len(got) != 1 {
		t.Fatalf("receipt: %d %v", len(got), err)
	}
}

// Deposits made on two days (the owner was away over midnight) come back
// in one drain; each day's mailbox has its own id.
func TestDrainAcrossPeriods(t *testing.T) {
	clk := &clock{t: t0.Add(-24 * time.Hour)}
	relay := newRelay(t, clk, Options{}, Limits{})
	sender, owner := newClient(t, clk), newClient(t, clk)
	o := testOwner(1)
	ctx := context.Background()
	yesterday := capFor(t, contactKey(t, o), clk.Now())
	if _, err := sender.Deposit(ctx, relay.info(), yesterday, envs("y", 3, 10)); err != nil {
		t.Fatal(err)
	}
	since := clk.Now()
	clk.Set(t0)
	today := capFor(t, contactKey(t, o), clk.Now())
	if today.ID == yesterday.ID {
		t.Fatal("one id for two days")
	}
	if _, err := sender.Deposit(ctx, relay.info(), today, envs("t", 2, 10)); err != nil {
		t.Fatal(err)
	}
	periods := DrainPeriods(clk.Now(), since, time.Hour, 30*24*time.Hour)
	got, d, err := collect(ctx, owner, relay.info(), o.DrainKeys(periods), DrainOptions{})
	if err != nil || len(got) != 5 || d.Acked != 5 {
		t.Fatalf("drained %d, %+v, %v", len(got), d, err)
	}
	if relay.store.Usage().Mailboxes != 2 {
		t.Fatal("want two mailboxes")
	}
}

// A relay restart keeps every deposit the relay acknowledged and none of
// the envelopes that were acked.
func TestRelayRestartKeepsDeposits(t *testing.T) {
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	sender, owner := newClient(t, clk), newClient(t, clk)
	o := testOwner(1)
	ctx := context.Background()
	es := envs("m", 20, 300)
	if _, err := sender.Deposit(ctx, relay.info(), capFor(t, contactKey(t, o), clk.Now()), es); err != nil {
		t.Fatal(err)
	}
	key := o.Drain(PeriodOf(clk.Now()))
	if n, err := owner.Ack(ctx, relay.info(), key, digestsOf(es[:5])); err != nil || n != 5 {
		t.Fatalf("ack: %d %v", n, err)
	}
	relay.stop()
	relay.start()
	if relay.store.Usage().Envelopes != 15 {
		t.Fatalf("after restart: %+v", relay.store.Usage())
	}
	got, _, err := collect(ctx, owner, relay.info(), []*DrainKey{key}, DrainOptions{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 15 || !bytes.Equal(got[0], es[5]) {
		t.Fatalf("after restart drained %d", len(got))
	}
}

// Strangers (no deposit secret) cannot deposit into someone's mailbox:
// not with their own keys, not with the victim's public keys and their
// own signature, not by replaying a deposit made at another relay.
func TestStrangerCannotDeposit(t *testing.T) {
	clk := &clock{t: t0}
	var penalties int
	var mu sync.Mutex
	relay := newRelay(t, clk, Options{Penalize: func(peer.ID, float64, string) { mu.Lock(); penalties++; mu.Unlock() }}, Limits{})
	other := newRelay(t, clk, Options{}, Limits{})
	stranger := newClient(t, clk)
	ctx := context.Background()
	victim := capFor(t, contactKey(t, testOwner(1)), clk.Now())
	own := capFor(t, contactKey(t, testOwner(9)), clk.Now())

	forged := *own
	forged.ID, forged.DepositPub, forged.DrainPub = victim.ID, victim.DepositPub, victim.DrainPub
	if _, err := stranger.Deposit(ctx, relay.info(), &forged, envs("x", 1, 10)); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("victim's keys, stranger's signature: %v", err)
	}
	renamed := *own
	renamed.ID = victim.ID
	if _, err := stranger.Deposit(ctx, relay.info(), &renamed, envs("x", 1, 10)); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("stranger's keys under the victim's id: %v", err)
	}
	// A genuine deposit made at another relay, replayed here.
	d := victim.Deposit([]byte(other.h.ID()), clk.Now(), envs("x", 1, 10))
	if r := sendRaw(t, stranger.h, relay.info(), protocol.MailboxFrame{Kind: protocol.MailboxKindDeposit, Deposit: d}); r.Result == nil || r.Result.Code != protocol.MailboxBadCapability {
		t.Fatalf("replay from another relay: %+v", r)
	}
	if u := relay.store.Usage(); u.Mailboxes != 0 {
		t.Fatalf("a stranger's deposit was stored: %+v", u)
	}
	mu.Lock()
	defer mu.Unlock()
	if penalties != 3 {
		t.Fatalf("%d penalties for 3 forged deposits", penalties)
	}
	if st := relay.svc.Stats(); st.Refusals[protocol.MailboxBadCapability] != 3 || st.DepositsRefused != 3 || st.Stored != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// sendRaw sends one frame on a fresh stream and returns the first answer.
func sendRaw(t *testing.T, h host.Host, relay peer.AddrInfo, f protocol.MailboxFrame) protocol.MailboxFrame {
	t.Helper()
	c := NewClient(h, ClientOptions{})
	s, done, err := c.open(context.Background(), relay)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	defer s.st.Close()
	if err := s.send(f); err != nil {
		t.Fatal(err)
	}
	got, err := s.read()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A contact holds the deposit key, not the mailbox secret: its drain and
// ack requests are refused and the envelopes stay.
func TestContactCannotDrain(t *testing.T) {
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	contact := newClient(t, clk)
	o := testOwner(1)
	ctx := context.Background()
	capa := capFor(t, contactKey(t, o), clk.Now())
	es := envs("secret", 4, 10)
	if _, err := contact.Deposit(ctx, relay.info(), capa, es); err != nil {
		t.Fatal(err)
	}
	// The best a contact can do: the right id and drain public key, any
	// scalar it likes (here its deposit key's seed as one).
	fake := &DrainKey{Period: capa.Period, ID: capa.ID, DrainPub: capa.DrainPub, scalar: uniformScalar(append(capa.priv.Seed(), capa.priv.Seed()...))}
	got, d, err := collect(ctx, contact, relay.info(), []*DrainKey{fake}, DrainOptions{})
	if err != nil || len(got) != 0 || len(d.Refused) != 1 || d.Refused[0] != capa.ID {
		t.Fatalf("contact drained %d: %+v %v", len(got), d, err)
	}
	if _, err := contact.Ack(ctx, relay.info(), fake, digestsOf(es)); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("contact acked: %v", err)
	}
	if relay.store.Usage().Envelopes != 4 {
		t.Fatal("envelopes lost")
	}
	// A drain signed for another relay is refused too.
	owner := o.Drain(capa.Period)
	req := owner.DrainRequest([]byte("another relay"), clk.Now(), 0)
	r := sendRaw(t, contact.h, relay.info(), protocol.MailboxFrame{Kind: protocol.MailboxKindDrain, Drain: &protocol.MailboxDrain{Mailboxes: []protocol.MailboxDrainReq{req}}})
	if r.End == nil || r.End.Sent != 0 || len(r.End.Refused) != 1 {
		t.Fatalf("drain for another relay: %+v", r)
	}
}

// Quotas refuse with the error that names them: per mailbox, per
// depositing peer (bytes, mailboxes created), per address, global.
func TestDepositQuotas(t *testing.T) {
	ctx := context.Background()
	t.Run("mailbox", func(t *testing.T) {
		clk := &clock{t: t0}
		relay := newRelay(t, clk, Options{}, Limits{MailboxEnvelopes: 10})
		c := newClient(t, clk)
		capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
		if _, err := c.Deposit(ctx, relay.info(), capa, envs("a", 10, 10)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Deposit(ctx, relay.info(), capa, envs("b", 1, 10))
		var re *RefusedError
		if !errors.Is(err, ErrMailboxFull) || !errors.As(err, &re) || re.Code != protocol.MailboxFull {
			t.Fatalf("eleventh envelope: %v", err)
		}
	})
	t.Run("peer bytes", func(t *testing.T) {
		clk := &clock{t: t0}
		relay := newRelay(t, clk, Options{PeerBytes: 10 * (1000 + ItemOverhead)}, Limits{})
		c := newClient(t, clk)
		capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
		if _, err := c.Deposit(ctx, relay.info(), capa, envs("a", 10, 1000)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Deposit(ctx, relay.info(), capa, envs("b", 1, 1000)); !errors.Is(err, ErrDepositorLimit) {
			t.Fatalf("over the peer's bytes: %v", err)
		}
		// Another peer (same address) still may, and the window ends.
		if _, err := newClient(t, clk).Deposit(ctx, relay.info(), capa, envs("c", 1, 1000)); err != nil {
			t.Fatalf("another peer: %v", err)
		}
		clk.Set(t0.Add(time.Hour))
		if _, err := c.Deposit(ctx, relay.info(), capFor(t, contactKey(t, testOwner(1)), clk.Now()), envs("d", 1, 1000)); err != nil {
			t.Fatalf("next window: %v", err)
		}
	})
	t.Run("stranger's own mailboxes", func(t *testing.T) {
		// A stranger can make mailbox ids of its own; it is held to
		// PeerMailboxes a window, and the peers of one address together
		// to AddrMailboxes.
		clk := &clock{t: t0}
		relay := newRelay(t, clk, Options{PeerMailboxes: 3, AddrMailboxes: 5}, Limits{})
		a, b := newClient(t, clk), newClient(t, clk)
		made := 0
		for i := range 4 {
			_, err := a.Deposit(ctx, relay.info(), capFor(t, contactKey(t, testOwner(byte(100+i))), clk.Now()), envs("s", 1, 10))
			if err == nil {
				made++
			} else if !errors.Is(err, ErrDepositorLimit) {
				t.Fatal(err)
			}
		}
		if made != 3 {
			t.Fatalf("one peer made %d mailboxes", made)
		}
		for i := range 3 {
			_, err := b.Deposit(ctx, relay.info(), capFor(t, contactKey(t, testOwner(byte(120+i))), clk.Now()), envs("s", 1, 10))
			if err == nil {
				made++
			} else if !errors.Is(err, ErrDepositorLimit) {
				t.Fatal(err)
			}
		}
		if made != 5 {
			t.Fatalf("one address made %d mailboxes", made)
		}
		// Deposits into an existing mailbox are not mailbox creations.
		if _, err := b.Deposit(ctx, relay.info(), capFor(t, contactKey(t, testOwner(100)), clk.Now()), envs("t", 1, 10)); err != nil {
			t.Fatalf("into an existing mailbox: %v", err)
		}
	})
	t.Run("global", func(t *testing.T) {
		clk := &clock{t: t0}
		relay := newRelay(t, clk, Options{}, Limits{TotalBytes: 5 * (100 + ItemOverhead)})
		c := newClient(t, clk)
		capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
		if _, err := c.Deposit(ctx, relay.info(), capa, envs("a", 5, 100)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Deposit(ctx, relay.info(), capa, envs("b", 1, 100)); !errors.Is(err, ErrRelayFull) {
			t.Fatalf("over the total: %v", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		clk := &clock{t: t0}
		relay := newRelay(t, clk, Options{}, Limits{})
		capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
		if _, err := newClient(t, clk).Deposit(ctx, relay.info(), capa, envs("a", 1, protocol.MaxMailboxEnvelope+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized envelope: %v", err)
		}
	})
}

// Deposits are taken for the current period only (within the skew), with
// a fresh time; a mailbox is gone after its retention.
func TestDepositTimeAndExpiry(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{ClockSkew: time.Hour, SweepInterval: time.Hour}, Limits{Retention: 48 * time.Hour})
	c := newClient(t, clk)
	k := contactKey(t, testOwner(1))
	if _, err := c.Deposit(ctx, relay.info(), capFor(t, k, clk.Now().Add(-48*time.Hour)), envs("old", 1, 10)); !errors.Is(err, ErrExpired) {
		t.Fatalf("a past period: %v", err)
	}
	if _, err := c.Deposit(ctx, relay.info(), capFor(t, k, clk.Now().Add(48*time.Hour)), envs("future", 1, 10)); !errors.Is(err, ErrBadTime) {
		t.Fatalf("a future period: %v", err)
	}
	skewed := NewClient(c.h, ClientOptions{Now: func() time.Time { return clk.Now().Add(-2 * time.Hour) }})
	if _, err := skewed.Deposit(ctx, relay.info(), capFor(t, k, clk.Now()), envs("stale", 1, 10)); !errors.Is(err, ErrBadTime) {
		t.Fatalf("a stale time: %v", err)
	}
	capa := capFor(t, k, clk.Now())
	if _, err := c.Deposit(ctx, relay.info(), capa, envs("now", 2, 10)); err != nil {
		t.Fatal(err)
	}
	// Retention runs from the end of the period: still there a day
	// after, gone three days after.
	clk.Set(capa.Period.End().Add(47 * time.Hour))
	owner := testOwner(1).Drain(capa.Period)
	if got, _, err := collect(ctx, c, relay.info(), []*DrainKey{owner}, DrainOptions{Keep: true}); err != nil || len(got) != 2 {
		t.Fatalf("within retention: %d %v", len(got), err)
	}
	clk.Set(capa.Period.End().Add(49 * time.Hour))
	if got, _, err := collect(ctx, c, relay.info(), []*DrainKey{owner}, DrainOptions{}); err != nil || len(got) != 0 {
		t.Fatalf("after retention: %d %v", len(got), err)
	}
	if n, err := relay.store.Sweep(ctx, clk.Now()); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
}

func TestRequestRateLimited(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{RequestRate: 0.001, RequestBurst: 2}, Limits{})
	c := newClient(t, clk)
	capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
	for i := range 2 {
		if _, err := c.Deposit(ctx, relay.info(), capa, envs(fmt.Sprint("a", i), 1, 10)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Deposit(ctx, relay.info(), capa, envs("b", 1, 10))
	var re *RefusedError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &re) || re.RetryAfter <= 0 {
		t.Fatalf("third request: %v", err)
	}
	// Another peer is not affected.
	if _, err := newClient(t, clk).Deposit(ctx, relay.info(), capa, envs("c", 1, 10)); err != nil {
		t.Fatal(err)
	}
}

// Malformed bytes are answered with "malformed", the stream is closed and
// the peer penalised.
func TestMalformedFramePenalized(t *testing.T) {
	clk := &clock{t: t0}
	pen := make(chan string, 4)
	relay := newRelay(t, clk, Options{Penalize: func(_ peer.ID, _ float64, reason string) { pen <- reason }}, Limits{})
	c := newClient(t, clk)
	s, done, err := c.open(context.Background(), relay.info())
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	bw := bufio.NewWriter(s.st)
	bw.Write([]byte{5, 0xa1, 0x01, 0x18, 0x63, 0x00}) // a frame of an unknown kind
	bw.Flush()
	r, err := s.result()
	if err != nil || r.Code != protocol.MailboxMalformed {
		t.Fatalf("answer %+v %v", r, err)
	}
	select {
	case <-pen:
	case <-time.After(5 * time.Second):
		t.Fatal("no penalty")
	}
	s.st.Close()
}

// Too many streams from one peer: the next is told busy.
func TestStreamsPerPeerBusy(t *testing.T) {
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{MaxStreamsPerPeer: 1}, Limits{})
	c := newClient(t, clk)
	s, done, err := c.open(context.Background(), relay.info())
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	// The first stream is served once the relay reads from it.
	capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
	if err := s.send(protocol.MailboxFrame{Kind: protocol.MailboxKindDeposit, Deposit: capa.Deposit([]byte(relay.h.ID()), clk.Now(), envs("a", 1, 10))}); err != nil {
		t.Fatal(err)
	}
	if r, err := s.result(); err != nil || r.Code != protocol.MailboxOK {
		t.Fatalf("first stream: %+v %v", r, err)
	}
	if _, err := c.Deposit(context.Background(), relay.info(), capa, envs("b", 1, 10)); !errors.Is(err, ErrBusy) {
		t.Fatalf("second stream: %v", err)
	}
	s.st.Close()
}

// A drain larger than the relay's cap says More, and the next drain from
// the cursors gets the rest.
func TestDrainPaged(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{DrainItems: 100}, Limits{})
	c := newClient(t, clk)
	o := testOwner(1)
	es := envs("p", 250, 5000) // several Items frames per drain
	if _, err := c.Deposit(ctx, relay.info(), capFor(t, contactKey(t, o), clk.Now()), es); err != nil {
		t.Fatal(err)
	}
	keys := o.DrainKeys([]Period{PeriodOf(clk.Now())})
	var all [][]byte
	after := map[ID]uint64{}
	for round := 0; ; round++ {
		got, d, err := collect(ctx, c, relay.info(), keys, DrainOptions{Keep: true, After: after})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		after = d.Last
		if !d.More {
			break
		}
		if round > 5 {
			t.Fatal("drain does not end")
		}
	}
	if len(all) != 250 || !bytes.Equal(all[249], es[249]) {
		t.Fatalf("paged drain got %d", len(all))
	}
}

func TestDrainPeriods(t *testing.T) {
	now := t0
	ps := DrainPeriods(now, time.Time{}, time.Hour, 30*24*time.Hour)
	if len(ps) != 32 || ps[0] != PeriodOf(now) || ps[len(ps)-1] != PeriodOf(now)-31 {
		t.Fatalf("never drained: %d periods %d..%d", len(ps), ps[0], ps[len(ps)-1])
	}
	if len(ps) > protocol.MaxDrainMailboxes {
		t.Fatal("more than one drain request")
	}
	ps = DrainPeriods(now, now.Add(-time.Minute), time.Hour, 30*24*time.Hour)
	if len(ps) != 1 || ps[0] != PeriodOf(now) {
		t.Fatalf("just drained: %v", ps)
	}
	late := time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC)
	if ps := DrainPeriods(late, late, time.Hour, 30*24*time.Hour); len(ps) != 2 || ps[0] != PeriodOf(late)+1 {
		t.Fatalf("near midnight: %v", ps)
	}
}

// The tables of the rate limit and of the quotas never hold more than
// Tracked keys; the address table refuses new addresses when full of
// current windows.
func TestLimitTablesBounded(t *testing.T) {
	b := newBuckets[int](1, 2, 10)
	for i := range 1000 {
		b.allow(i, t0)
		if len(b.m) > 10 {
			t.Fatalf("bucket table at %d", len(b.m))
		}
	}
	q := newQuota[int]("address", time.Hour, 100, 1, 10, false)
	for i := range 10 {
		if err := q.check(i, t0, true, 1); err != nil {
			t.Fatal(err)
		}
		q.charge(i, t0, true, 1)
	}
	if err := q.check(99, t0, true, 1); !errors.Is(err, ErrDepositorLimit) {
		t.Fatalf("a new address in a full table: %v", err)
	}
	if err := q.check(99, t0.Add(time.Hour), true, 1); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	p := newQuota[int]("peer", time.Hour, 100, 1, 10, true)
	for i := range 1000 {
		if err := p.check(i, t0, true, 1); err != nil {
			t.Fatal(err)
		}
		p.charge(i, t0, true, 1)
		if len(p.m) > 10 {
			t.Fatalf("peer table at %d", len(p.m))
		}
	}
}

// A conversation mailbox: every member holds the mailbox secret (derived
// from the conversation's), deposits into it and drains it without acking,
// each with its own cursor; the relay deletes only at expiry.
func TestConversationMailbox(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	var convSecret [SecretSize]byte
	copy(convSecret[:], "an exported conversation secret.")
	a, b, sender := newClient(t, clk), newClient(t, clk), newClient(t, clk)
	key := OwnerKeyFromSecret(convSecret)
	capa := capFor(t, key.DepositKey(), clk.Now())
	if _, err := sender.Deposit(ctx, relay.info(), capa, envs("g", 3, 50)); err != nil {
		t.Fatal(err)
	}
	keys := key.DrainKeys([]Period{capa.Period})
	gotA, dA, err := collect(ctx, a, relay.info(), keys, DrainOptions{Keep: true})
	if err != nil || len(gotA) != 3 || dA.Acked != 0 {
		t.Fatalf("member a: %d %+v %v", len(gotA), dA, err)
	}
	if gotB, _, err := collect(ctx, b, relay.info(), keys, DrainOptions{Keep: true}); err != nil || len(gotB) != 3 {
		t.Fatalf("member b: %d %v", len(gotB), err)
	}
	if _, err := sender.Deposit(ctx, relay.info(), capa, envs("h", 2, 50)); err != nil {
		t.Fatal(err)
	}
	gotA, _, err = collect(ctx, a, relay.info(), keys, DrainOptions{Keep: true, After: dA.Last})
	if err != nil || len(gotA) != 2 || !bytes.HasPrefix(gotA[0], []byte("h-0")) {
		t.Fatalf("member a from its cursor: %d %v", len(gotA), err)
	}
	if relay.store.Usage().Envelopes != 5 {
		t.Fatal("a drain without ack deleted envelopes")
	}
}

// A drain or an ack does not tell whether a mailbox exists: an unknown id
// is refused exactly as a forged request for an existing one.
func TestUnknownMailboxLooksRefused(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	c := newClient(t, clk)
	o := testOwner(1)
	capa := capFor(t, contactKey(t, o), clk.Now())
	if _, err := c.Deposit(ctx, relay.info(), capa, envs("x", 1, 10)); err != nil {
		t.Fatal(err)
	}
	forged := &DrainKey{Period: capa.Period, ID: capa.ID, DrainPub: capa.DrainPub, scalar: uniformScalar(make([]byte, 64))}
	unknown := o.Drain(capa.Period - 3) // a genuine key, never deposited into
	answer := func(k *DrainKey) protocol.MailboxFrame {
		req := k.DrainRequest([]byte(relay.h.ID()), clk.Now(), 0)
		return sendRaw(t, c.h, relay.info(), protocol.MailboxFrame{Kind: protocol.MailboxKindDrain, Drain: &protocol.MailboxDrain{Mailboxes: []protocol.MailboxDrainReq{req}}})
	}
	a, b := answer(forged), answer(unknown)
	ea, _ := protocol.EncodeMailboxFrame(a)
	eb, _ := protocol.EncodeMailboxFrame(b)
	if !bytes.Equal(ea, eb) {
		t.Fatalf("drain answers differ: %+v vs %+v", a.End, b.End)
	}
	_, errForged := c.Ack(ctx, relay.info(), forged, digestsOf(envs("x", 1, 10)))
	_, errUnknown := c.Ack(ctx, relay.info(), unknown, digestsOf(envs("x", 1, 10)))
	if !errors.Is(errForged, ErrBadCapability) || !errors.Is(errUnknown, ErrBadCapability) || errForged.Error() != errUnknown.Error() {
		t.Fatalf("ack answers differ: %v vs %v", errForged, errUnknown)
	}
}

// What the relay keeps holds nothing about who deposited or when: no peer
// id, no address, no deposit key or signature, no deposit time; only ids,
// drain keys, envelopes, digests, sizes and an expiry.
func TestStoreHoldsNoDepositorData(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0.Add(1234567 * time.Millisecond)}
	relay := newRelay(t, clk, Options{}, Limits{})
	c := newClient(t, clk)
	capa := capFor(t, contactKey(t, testOwner(1)), clk.Now())
	es := envs("y", 3, 64)
	if _, err := c.Deposit(ctx, relay.info(), capa, es); err != nil {
		t.Fatal(err)
	}
	d := capa.Deposit([]byte(relay.h.ID()), clk.Now(), es)
	ms := make([]byte, 8)
	binary.BigEndian.PutUint64(ms, uint64(clk.Now().UnixMilli()))
	forbidden := map[string][]byte{
		"depositor peer id": []byte(c.h.ID()),
		"deposit key":       capa.DepositPub[:],
		"signature":         d.Sig,
		"deposit time (ms)": ms,
		"address":           []byte("127.0.0.1"),
	}
	it, err := relay.store.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	records := 0
	for it.First(); it.Valid(); it.Next() {
		records++
		for what, b := range forbidden {
			if bytes.Contains(it.Key(), b) || bytes.Contains(it.Value(), b) {
				t.Errorf("the store holds the %s", what)
			}
		}
	}
	if records != 1+2*len(es) {
		t.Fatalf("%d records, want a meta and two per envelope", records)
	}
}

// Every mailbox stream runs on a secured connection (QUIC's TLS 1.3, or
// Noise over TCP): a passive observer sees no id, key or envelope.
func TestMailboxStreamsAreSecured(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{}, Limits{})
	c := newClient(t, clk)
	if _, err := c.Deposit(ctx, relay.info(), capFor(t, contactKey(t, testOwner(1)), clk.Now()), envs("z", 1, 10)); err != nil {
		t.Fatal(err)
	}
	conns := c.h.Network().ConnsToPeer(relay.h.ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	for _, conn := range conns {
		cs := conn.ConnState()
		if cs.Security == "" && cs.Transport != "quic-v1" {
			t.Fatalf("connection without security: %+v", cs)
		}
	}
}

// Drained bytes are budgeted per address: a stranger cannot fill a mailbox
// of its own once and drain it without acking, over and over, to make the
// relay send far more than it ever received.
func TestDrainBandwidthLimited(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	relay := newRelay(t, clk, Options{DrainRate: 1000, DrainBurst: protocol.MaxMailboxEnvelope + 2*5000}, Limits{})
	c := newClient(t, clk)
	o := testOwner(1)
	if _, err := c.Deposit(ctx, relay.info(), capFor(t, contactKey(t, o), clk.Now()), envs("big", 20, 5000)); err != nil {
		t.Fatal(err)
	}
	keys := o.DrainKeys([]Period{PeriodOf(clk.Now())})
	got, d, err := collect(ctx, c, relay.info(), keys, DrainOptions{Keep: true})
	if err != nil || len(got) != 15 || !d.More {
		t.Fatalf("first drain: %d envelopes, %+v, %v", len(got), d, err)
	}
	_, _, err = collect(ctx, c, relay.info(), keys, DrainOptions{Keep: true, After: d.Last})
	var re *RefusedError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &re) || re.RetryAfter < 60*time.Second {
		t.Fatalf("budget spent: %v", err)
	}
	// The budget refills with time.
	clk.Set(t0.Add(time.Minute))
	if got, _, err := collect(ctx, c, relay.info(), keys, DrainOptions{Keep: true, After: d.Last}); err != nil || len(got) != 5 {
		t.Fatalf("after a minute: %d %v", len(got), err)
	}
}
