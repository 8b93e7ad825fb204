package offline

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/mailbox"
	"github.com/glitr-chat/glitr/protocol"
)

type relay struct {
	h     host.Host
	store *mailbox.Store
	svc   *mailbox.Service
}

func newRelay(t testing.TB, lim mailbox.Limits, opts ...mailbox.Options) *relay {
	t.Helper()
	r := &relay{h: testsupport.Host(t)}
	var err error
	if r.store, err = mailbox.OpenStore(t.TempDir(), lim, testsupport.Logger(t)); err != nil {
		t.Fatal(err)
	}
	var o mailbox.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Logger = testsupport.Logger(t)
	if r.svc, err = mailbox.NewService(r.h, r.store, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.svc.Close(); r.store.Close() })
	return r
}

func (r *relay) info() peer.AddrInfo { return testsupport.AddrInfo(r.h) }

// chat records what was ingested; fail, when set, answers instead.
type chat struct {
	mu      sync.Mutex
	got     map[string][][]byte // by sync id, without duplicates
	fail    error
	batches int
}

// IngestMailbox takes the envelopes before a forged one, as the node's
// ingest does, and reports the forged one as a bad peer's.
func (c *chat) IngestMailbox(_ context.Context, syncID []byte, envs [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches++
	if c.fail != nil {
		return c.fail
	}
	if string(syncID) == "unknown" {
		return ErrUnknownConversation
	}
	if c.got == nil {
		c.got = map[string][][]byte{}
	}
	for _, env := range envs {
		if bytes.HasPrefix(env, []byte("forged")) {
			return fmt.Errorf("%w: bad signature", protocol.ErrBadPeer)
		}
		if !slices.ContainsFunc(c.got[string(syncID)], func(e []byte) bool { return bytes.Equal(e, env) }) {
			c.got[string(syncID)] = append(c.got[string(syncID)], bytes.Clone(env))
		}
	}
	return nil
}

func (c *chat) count(sync string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got[sync])
}

type device struct {
	h    host.Host
	d    ds.Batching
	chat *chat
	svc  *Service
	addr []byte
}

func newDevice(t testing.TB, relays ...*relay) *device {
	t.Helper()
	var secret [mailbox.SecretSize]byte
	rand.Read(secret[:])
	dv := &device{h: testsupport.Host(t), d: dssync.MutexWrap(ds.NewMapDatastore()), chat: &chat{}}
	var infos []peer.AddrInfo
	for _, r := range relays {
		infos = append(infos, r.info())
	}
	dv.svc = New(dv.h, dv.d, dv.chat, Options{Secret: secret, Relays: infos, Delay: 20 * time.Millisecond, Logger: testsupport.Logger(t)})
	var err error
	if dv.addr, err = dv.svc.Address(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dv.svc.Close)
	return dv
}

func envelope(i int) []byte { return fmt.Appendf(nil, "envelope %04d %x", i, make([]byte, 300)) }

// A thousand envelopes written while the recipient is down reach it when
// it comes back, although the sender is gone by then; the relay keeps
// nothing after the drain.
func TestDepositWhileAwayDrainOnReturn(t *testing.T) {
	r := newRelay(t, mailbox.Limits{})
	alice, bob := newDevice(t), newDevice(t, r)
	bobPeer := bob.h.ID()
	const n = 1000
	for i := range n {
		alice.svc.Deposit([]byte("conv-1"), envelope(i), []Recipient{{Peer: bobPeer, Mailbox: bob.addr}})
	}
	alice.svc.Close() // flushes what is queued
	if st := alice.svc.Stats(); st.Deposited != n {
		t.Fatalf("alice deposited %d of %d (%+v)", st.Deposited, n, st)
	}
	if u := r.store.Usage(); u.Envelopes != n {
		t.Fatalf("relay holds %d envelopes", u.Envelopes)
	}
	bob.svc.Start()
	testsupport.Eventually(t, 20*time.Second, "bob's drain", func() bool { return bob.chat.count("conv-1") == n })
	seen := map[string]bool{}
	for _, e := range bob.chat.got["conv-1"] {
		seen[string(e)] = true
	}
	if len(seen) != n || !seen[string(envelope(0))] || !seen[string(envelope(n-1))] {
		t.Fatalf("%d distinct envelopes", len(seen))
	}
	testsupport.Eventually(t, 10*time.Second, "the relay to delete what was acked", func() bool { return r.store.Usage().Envelopes == 0 })
	if bob.chat.batches > 2 {
		t.Fatalf("%d batches for one conversation's 1,000 envelopes: not drained as a catch-up", bob.chat.batches)
	}
}

// A recipient that is online gets its messages by sync: nothing is
// deposited for it.
func TestConnectedRecipientNeedsNoMailbox(t *testing.T) {
	r := newRelay(t, mailbox.Limits{})
	alice, bob := newDevice(t), newDevice(t, r)
	testsupport.Connect(t, alice.h, bob.h)
	alice.svc.Deposit([]byte("c"), envelope(1), []Recipient{{Peer: bob.h.ID(), Mailbox: bob.addr}})
	alice.svc.Close()
	if st := alice.svc.Stats(); st.Deposited != 0 || r.store.Usage().Envelopes != 0 {
		t.Fatalf("deposited for an online recipient: %+v", st)
	}
}

// A full mailbox refuses with a clear error; the sender deposits at the
// recipient's next relay.
func TestFullMailboxFallsBackToNextRelay(t *testing.T) {
	full := newRelay(t, mailbox.Limits{MailboxEnvelopes: 3})
	spare := newRelay(t, mailbox.Limits{})
	alice, bob := newDevice(t), newDevice(t, full, spare)
	for i := range 10 {
		alice.svc.Deposit([]byte("c"), envelope(i), []Recipient{{Peer: bob.h.ID(), Mailbox: bob.addr}})
	}
	alice.svc.Close()
	if a, b := full.store.Usage().Envelopes, spare.store.Usage().Envelopes; a+b != 10 || b == 0 {
		t.Fatalf("full relay %d, spare %d", a, b)
	}
	bob.svc.Start()
	testsupport.Eventually(t, 20*time.Second, "bob's drain of both relays", func() bool { return bob.chat.count("c") == 10 })
}

// What does not open, does not decode or names no conversation is dropped
// (and acked: it would only come again); a local failure leaves the
// envelope at the relay for the next drain.
func TestDrainDropsBadItemsKeepsOnFailure(t *testing.T) {
	r := newRelay(t, mailbox.Limits{})
	bob := newDevice(t, r)
	addr, _ := mailbox.ParseAddress(bob.addr)
	capa, _ := addr.Key.Capability(mailbox.PeriodOf(time.Now()))
	good, _ := addr.Key.SealItem(encodeItem([]byte("c"), envelope(1)))
	badPayload, _ := addr.Key.SealItem([]byte{9, 9, 9})
	unknown, _ := addr.Key.SealItem(encodeItem([]byte("unknown"), envelope(2)))
	forged, _ := addr.Key.SealItem(encodeItem([]byte("c"), []byte("forged block")))
	garbage := bytes.Repeat([]byte{7}, 600)
	client := mailbox.NewClient(testsupport.Host(t), mailbox.ClientOptions{})
	fine, _ := addr.Key.SealItem(encodeItem([]byte("c"), envelope(3)))
	if _, err := client.Deposit(context.Background(), r.info(), capa, [][]byte{garbage, badPayload, unknown, forged, fine}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.svc.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The good envelope after the forged one in the same batch is kept.
	if st := bob.svc.Stats(); st.Bad != 4 || st.Drained != 1 || r.store.Usage().Envelopes != 0 || bob.chat.count("c") != 1 {
		t.Fatalf("stats %+v, relay keeps %d, taken %d", st, r.store.Usage().Envelopes, bob.chat.count("c"))
	}
	if _, err := client.Deposit(context.Background(), r.info(), capa, [][]byte{good}); err != nil {
		t.Fatal(err)
	}
	bob.chat.fail = errors.New("disk full")
	if _, err := bob.svc.Drain(context.Background()); err == nil {
		t.Fatal("a local failure was not reported")
	}
	if r.store.Usage().Envelopes != 1 {
		t.Fatal("an envelope the node could not store was acked")
	}
	bob.chat.fail = nil
	if _, err := bob.svc.Drain(context.Background()); err != nil || bob.chat.count("c") != 2 {
		t.Fatalf("second drain: %v, %d", err, bob.chat.count("c"))
	}
}

// The relay stores sealed items: neither the envelope nor the
// conversation's sync id appear in what it holds.
func TestRelaySeesSealedItems(t *testing.T) {
	r := newRelay(t, mailbox.Limits{})
	alice, bob := newDevice(t), newDevice(t, r)
	secret := []byte("sync-id-of-the-conversation")
	env := []byte("a recognisable envelope body, long enough to find")
	alice.svc.Deposit(secret, env, []Recipient{{Peer: bob.h.ID(), Mailbox: bob.addr}})
	alice.svc.Close()
	// Drain with the owner's keys but keep, to read what the relay holds.
	owner := bob.svc.owner
	keys := owner.DrainKeys(mailbox.DrainPeriods(time.Now(), time.Time{}, time.Hour, 24*time.Hour))
	var held [][]byte
	client := mailbox.NewClient(testsupport.Host(t), mailbox.ClientOptions{})
	if _, err := client.Drain(context.Background(), r.info(), keys, mailbox.DrainOptions{Keep: true}, func(it mailbox.Item) error {
		held = append(held, it.Envelope)
		return nil
	}); err != nil || len(held) != 1 {
		t.Fatalf("drain %d: %v", len(held), err)
	}
	if bytes.Contains(held[0], secret) || bytes.Contains(held[0], env[:20]) || len(held[0])%mailbox.ItemPadding != 40%mailbox.ItemPadding {
		t.Fatalf("the relay holds readable or unpadded bytes (%d)", len(held[0]))
	}
}

func FuzzDecodeItem(f *testing.F) {
	f.Add(encodeItem([]byte("sync"), []byte("env")))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, e, err := decodeItem(b)
		if err != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxSyncID || len(e) == 0 || !bytes.Equal(encodeItem(s, e), b) {
			t.Fatalf("decoded %x %x from %x", s, e, b)
		}
	})
}
