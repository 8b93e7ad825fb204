package mailbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/glitr-chat/glitr/internal/testsupport"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func openTestStore(t *testing.T, dir string, lim Limits) *Store {
	t.Helper()
	s, err := OpenStore(dir, lim, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func envs(prefix string, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		e := bytes.Repeat([]byte{'.'}, size)
		copy(e, fmt.Sprintf("%s-%d", prefix, i))
		out[i] = e
	}
	return out
}

func digestsOf(es [][]byte) []Digest {
	out := make([]Digest, len(es))
	for i, e := range es {
		out[i] = DigestOf(e)
	}
	return out
}

func drainAll(t *testing.T, s *Store, id ID, after uint64, now time.Time) (seqs []uint64, got [][]byte) {
	t.Helper()
	_, _, err := s.Drain(context.Background(), id, after, 1<<20, now, func(seq uint64, env []byte) error {
		seqs = append(seqs, seq)
		got = append(got, bytes.Clone(env))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs, got
}

func TestStoreDepositDrainAck(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Limits{})
	id, pub := ID{1}, [32]byte{2}
	es := envs("a", 5, 100)
	exp := t0.Add(time.Hour)
	r, err := s.Deposit(id, pub, exp, digestsOf(es), es, t0, nil)
	if err != nil || r.Stored != 5 || !r.Created {
		t.Fatalf("deposit: %+v %v", r, err)
	}
	// Replays and repeats are duplicates, not stored twice.
	again := append(es[3:], es[3])
	if r, err := s.Deposit(id, pub, exp, digestsOf(again), again, t0, nil); err != nil || r.Stored != 0 || r.Duplicate != 3 || r.Created {
		t.Fatalf("replay: %+v %v", r, err)
	}
	seqs, got := drainAll(t, s, id, 0, t0)
	if len(got) != 5 || !bytes.Equal(got[4], es[4]) || seqs[0] != 1 || seqs[4] != 5 {
		t.Fatalf("drained %d, seqs %v", len(got), seqs)
	}
	if _, got := drainAll(t, s, id, 3, t0); len(got) != 2 {
		t.Fatalf("after cursor 3: %d", len(got))
	}
	if u := s.Usage(); u.Envelopes != 5 || u.Mailboxes != 1 || u.Bytes != 5*(100+ItemOverhead) {
		t.Fatalf("usage %+v", u)
	}
	n, err := s.Ack(id, digestsOf(es[:2]), t0)
	if err != nil || n != 2 {
		t.Fatalf("ack: %d %v", n, err)
	}
	if n, _ := s.Ack(id, digestsOf(es[:2]), t0); n != 0 {
		t.Fatalf("second ack deleted %d", n)
	}
	if _, got := drainAll(t, s, id, 0, t0); len(got) != 3 {
		t.Fatalf("after ack: %d", len(got))
	}
	// An acked envelope deposited again (a replay) is not stored again.
	if r, _ := s.Deposit(id, pub, exp, digestsOf(es[:1]), es[:1], t0, nil); r.Stored != 0 || r.Duplicate != 1 {
		t.Fatalf("replay after ack: %+v", r)
	}
	if u := s.Usage(); u.Envelopes != 3 || u.Bytes != 3*(100+ItemOverhead) {
		t.Fatalf("usage after ack %+v", u)
	}
	// Another drain key for the same id is never mixed in.
	if _, err := s.Deposit(id, [32]byte{9}, exp, digestsOf(es[:1]), envs("x", 1, 10), t0, nil); !errors.Is(err, ErrBadCapability) {
		t.Fatalf("other drain key: %v", err)
	}
}

// A restart keeps every acknowledged deposit and none of the acked
// envelopes, and the quotas count what was there.
func TestStoreRestartKeepsAcknowledged(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, Limits{}, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	id, pub := ID{1}, [32]byte{2}
	es := envs("a", 10, 50)
	if _, err := s.Deposit(id, pub, t0.Add(time.Hour), digestsOf(es), es, t0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(id, digestsOf(es[:4]), t0); err != nil {
		t.Fatal(err)
	}
	before := s.Usage()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, Limits{})
	if u := s.Usage(); u != before {
		t.Fatalf("usage %+v after restart, %+v before", u, before)
	}
	_, got := drainAll(t, s, id, 0, t0)
	if len(got) != 6 || !bytes.Equal(got[0], es[4]) {
		t.Fatalf("after restart: %d envelopes", len(got))
	}
	if r, _ := s.Deposit(id, pub, t0.Add(time.Hour), digestsOf(es[:1]), es[:1], t0, nil); r.Duplicate != 1 {
		t.Fatal("acked digest forgotten across the restart")
	}
}

// A crash (the machine's, not just the process's: everything not synced
// is lost) keeps every deposit and ack that Deposit and Ack returned for.
func TestStoreCrashKeepsAcknowledged(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s, err := openStore("relay", fs, Limits{}, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, pub := ID{1}, [32]byte{2}
	for i := range 5 {
		es := envs(fmt.Sprint("batch", i), 4, 100)
		if _, err := s.Deposit(id, pub, t0.Add(time.Hour), digestsOf(es), es, t0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Ack(id, digestsOf(envs("batch0", 4, 100)), t0); err != nil || n != 4 {
		t.Fatalf("ack: %d %v", n, err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // exactly what was synced
	after, err := openStore("relay", crashed, Limits{}, testsupport.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if _, got := drainAll(t, after, id, 0, t0); len(got) != 16 {
		t.Fatalf("after the crash: %d envelopes, want 16", len(got))
	}
	if u := after.Usage(); u.Envelopes != 16 || u.Mailboxes != 1 {
		t.Fatalf("usage after the crash %+v", u)
	}
}

func TestStoreQuotas(t *testing.T) {
	lim := Limits{MailboxBytes: 10 * (100 + ItemOverhead), MailboxEnvelopes: 8, MailboxDeposits: 12, TotalBytes: 18 * (100 + ItemOverhead), Mailboxes: 3}
	s := openTestStore(t, t.TempDir(), lim)
	exp := t0.Add(time.Hour)
	dep := func(id byte, es [][]byte) error {
		_, err := s.Deposit(ID{id}, [32]byte{id}, exp, digestsOf(es), es, t0, nil)
		return err
	}
	if err := dep(1, envs("a", 8, 100)); err != nil {
		t.Fatal(err)
	}
	if err := dep(1, envs("b", 1, 100)); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("ninth envelope: %v", err)
	}
	// All or nothing: the refused request stored nothing.
	if u := s.Usage(); u.Envelopes != 8 {
		t.Fatalf("usage %+v", u)
	}
	if err := dep(2, envs("c", 1, 11*(100+ItemOverhead))); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("over the byte quota: %v", err)
	}
	// Lifetime deposits: acking frees room, but not past MailboxDeposits.
	if _, err := s.Ack(ID{1}, digestsOf(envs("a", 8, 100)), t0); err != nil {
		t.Fatal(err)
	}
	if err := dep(1, envs("d", 4, 100)); err != nil {
		t.Fatal(err)
	}
	if err := dep(1, envs("e", 1, 100)); !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("past the lifetime deposits: %v", err)
	}
	// Global bytes, then global mailboxes.
	if err := dep(2, envs("f", 8, 100)); err != nil {
		t.Fatal(err)
	}
	if err := dep(3, envs("g", 8, 100)); !errors.Is(err, ErrRelayFull) {
		t.Fatalf("over the total: %v", err)
	}
	if err := dep(3, envs("h", 1, 100)); err != nil {
		t.Fatal(err)
	}
	if err := dep(4, envs("i", 1, 10)); !errors.Is(err, ErrRelayFull) {
		t.Fatalf("fourth mailbox: %v", err)
	}
	// A refusal by the admission hook stores nothing either.
	no := errors.New("no")
	if _, err := s.Deposit(ID{3}, [32]byte{3}, exp, digestsOf(envs("j", 1, 1)), envs("j", 1, 1), t0, func(bool, int64) error { return no }); !errors.Is(err, no) {
		t.Fatalf("admit: %v", err)
	}
}

func TestStoreExpiry(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, Limits{})
	es := envs("a", 3, 10)
	if _, err := s.Deposit(ID{1}, [32]byte{1}, t0.Add(time.Hour), digestsOf(es), es, t0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deposit(ID{2}, [32]byte{2}, t0.Add(48*time.Hour), digestsOf(es), es, t0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deposit(ID{3}, [32]byte{3}, t0, digestsOf(es), es, t0, nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("deposit at expiry: %v", err)
	}
	later := t0.Add(2 * time.Hour)
	if _, err := s.Deposit(ID{1}, [32]byte{1}, t0.Add(time.Hour), digestsOf(es[:1]), es[:1], later, nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("deposit into an expired mailbox: %v", err)
	}
	if _, got := drainAll(t, s, ID{1}, 0, later); len(got) != 0 {
		t.Fatal("an expired mailbox drained")
	}
	n, err := s.Sweep(context.Background(), later)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if u := s.Usage(); u.Mailboxes != 1 || u.Envelopes != 3 {
		t.Fatalf("usage after sweep %+v", u)
	}
	if _, got := drainAll(t, s, ID{2}, 0, later); len(got) != 3 {
		t.Fatal("the live mailbox lost envelopes")
	}
	// Swept for good: the id and its digests are gone from disk.
	s.Close()
	s = openTestStore(t, dir, Limits{})
	if u := s.Usage(); u.Mailboxes != 1 {
		t.Fatalf("usage after reopen %+v", u)
	}
	if _, ok, _ := s.DrainKey(ID{1}, t0); ok {
		t.Fatal("swept mailbox still has a record")
	}
}

// More expired mailboxes than one sweep step takes are all swept.
func TestStoreSweepBatches(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Limits{})
	es := envs("a", 1, 10)
	for i := range sweepBatch + 10 {
		id := ID{byte(i), byte(i >> 8)}
		if _, err := s.Deposit(id, [32]byte{1}, t0.Add(time.Hour), digestsOf(es), es, t0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Sweep(context.Background(), t0.Add(2*time.Hour)); err != nil || n != sweepBatch+10 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if u := s.Usage(); u != (Usage{}) {
		t.Fatalf("usage %+v", u)
	}
}
