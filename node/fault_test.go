//go:build linux

package node

// Fault tests for sync (issue 5): real `glitr` processes are killed with
// SIGKILL while sending and while catching up, and a three-node
// conversation is partitioned and healed. The properties checked are the
// ones a user relies on: a message the API acknowledged is never lost, none
// is duplicated, no device ever signs two blocks with one sequence number
// (no equivocation), and the replicas converge to one state.
//
// TestKillAndPartition builds the binary once (go build ./cmd/node) and
// runs the three scenarios as subtests. The partition scenario uses network
// namespaces made by the shared netlab script when it can (root, ip, nft);
// otherwise it runs a fallback on loopback and says so on stderr
// ("PARTITION TEST: ..."). GLITR_NATLAB_REQUIRED=1 makes a missing lab a
// failure, as in TestNATLab.
//
// After the processes stop, their data directories are opened in this
// process without any network (openOffline) to compare message lists,
// state hashes, block counts and recorded equivocations.

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

// Bounds the scenarios assert.
const (
	// faultConvergeTimeout bounds convergence after a restart or a heal.
	// Contacts are re-dialled every 5–10 s and a topic join starts a
	// catch-up at once, so a healthy node converges well within it.
	faultConvergeTimeout = 30 * time.Second
	// faultHealBound is the asserted bound on convergence after a heal.
	faultHealBound = 30 * time.Second
	// faultReplyBound bounds how long a block written after a peer's
	// restart takes to reach it (gossip, or a catch-up on reconnection).
	faultReplyBound = 15 * time.Second
	// faultCatchupBound bounds a restarted node's catch-up of a few
	// thousand blocks from a peer on loopback (measured: under 1 s idle,
	// 9 s on a machine loaded by other builds; a stalled session shows as
	// about 30 s).
	faultCatchupBound = 20 * time.Second
)

func TestKillAndPartition(t *testing.T) {
	bin := faultBuild(t)
	t.Run("KillWhileSending", func(t *testing.T) { faultKillWhileSending(t, bin) })
	// Once stalled after a restart (a key spent for a block the crash
	// lost); fixed by committing catch-up blocks before spending their keys
	// and by retrying failed sessions (docs/sync.md §11).
	t.Run("KillWhileCatchingUp", func(t *testing.T) { faultKillWhileCatchingUp(t, bin) })
	t.Run("Partition", func(t *testing.T) { faultPartition(t, bin) })
	t.Run("KillAcrossRemoval", func(t *testing.T) { faultKillAcrossRemoval(t, bin) })
	t.Run("PartitionAcrossRemoval", func(t *testing.T) { faultPartitionAcrossRemoval(t, bin) })
}

// ---------------------------------------------------------------------------
// Scenario 4 (issue 14): SIGKILL of a member while another is removed. The
// killed member comes back to a new epoch (and new topics) it never saw
// announced live, and converges through catch-up; the removed member reads
// nothing written after its removal.

func faultKillAcrossRemoval(t *testing.T, bin string) {
	root := t.TempDir()
	a := faultInit(t, bin, "A", filepath.Join(root, "a"), "")
	b := faultInit(t, bin, "B", filepath.Join(root, "b"), "")
	c := faultInit(t, bin, "C", filepath.Join(root, "c"), "")
	for _, p := range []*faultProc{a, b, c} {
		p.start(t)
	}
	faultIntroduce(t, a, b)
	faultIntroduce(t, a, c)
	faultIntroduce(t, b, c)
	conv := a.api.createConversation(t, b.account, c.account)
	faultWaitConversation(t, b, conv)
	faultWaitConversation(t, c, conv)
	a.api.mustSend(t, conv, "before")
	for _, p := range []*faultProc{b, c} {
		faultEventually(t, faultConvergeTimeout, p.name+" to read the first message", func() bool {
			return slices.ContainsFunc(p.api.allMessages(t, conv), func(m webui.Message) bool { return m.Text == "before" })
		}, nil)
	}

	b.kill(t)
	a.api.mustDo(t, "DELETE", "/api/v1/conversations/"+conv+"/members/"+c.account, nil, nil)
	for i := range 5 {
		a.api.mustSend(t, conv, fmt.Sprintf("after C left %d", i))
	}
	b.start(t)
	faultEventually(t, faultConvergeTimeout, "B, killed across the removal, to read what A wrote after it", func() bool {
		n := 0
		for _, m := range b.api.allMessages(t, conv) {
			if strings.HasPrefix(m.Text, "after C left") {
				n++
			}
		}
		return n == 5
	}, nil)
	b.api.mustSend(t, conv, "B is back")
	faultEventually(t, faultConvergeTimeout, "A to read B under the new epoch", func() bool {
		return slices.ContainsFunc(a.api.allMessages(t, conv), func(m webui.Message) bool { return m.Text == "B is back" })
	}, nil)
	for _, m := range c.api.allMessages(t, conv) {
		if strings.HasPrefix(m.Text, "after C left") || m.Text == "B is back" {
			t.Fatalf("the removed member reads %q", m.Text)
		}
	}
}

// ---------------------------------------------------------------------------
// Scenario 1: SIGKILL of the sender in the middle of a burst of sends.

func faultKillWhileSending(t *testing.T, bin string) {
	before, after := 200, 50
	if testing.Short() {
		before, after = 60, 20
	}
	a, b, conv := faultPair(t, bin)

	// The sender acknowledges texts in order; the killer strikes once a
	// random number of them are through, while requests are in flight.
	killAt := before/5 + mrand.N(before*3/5)
	var (
		mu       sync.Mutex
		acked    []string // texts the API answered 201 for
		inFlight []string // texts sent without an answer (the kill cut them off)
	)
	reached := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		for i := range before {
			text := fmt.Sprintf("before-kill %04d", i)
			_, err := a.api.send(context.Background(), conv, text)
			mu.Lock()
			if err != nil {
				inFlight = append(inFlight, text)
				mu.Unlock()
				return
			}
			acked = append(acked, text)
			if len(acked) == killAt {
				close(reached)
			}
			mu.Unlock()
		}
	}()
	select {
	case <-reached:
	case <-senderDone:
		t.Fatalf("sender stopped after %d acknowledged messages, before the kill point %d", len(acked), killAt)
	case <-time.After(60 * time.Second):
		t.Fatal("sender too slow")
	}
	// A little jitter so the kill does not always land right after a reply.
	time.Sleep(time.Duration(mrand.N(3000)) * time.Microsecond)
	a.kill(t)
	<-senderDone
	mu.Lock()
	ackedBefore := len(acked)
	mu.Unlock()
	t.Logf("A killed after %d acknowledged sends (kill point %d); in flight: %v", ackedBefore, killAt, inFlight)
	if ackedBefore == before {
		t.Logf("note: the sender finished before the kill landed")
	}

	restart := time.Now()
	a.start(t)
	t.Logf("A restarted on the same data directory; API up in %v", time.Since(restart).Round(time.Millisecond))
	for i := range after {
		text := fmt.Sprintf("after-restart %04d", i)
		if _, err := a.api.send(context.Background(), conv, text); err != nil {
			t.Fatalf("send after restart: %v", err)
		}
		acked = append(acked, text)
	}

	// Convergence: both show the same list, which holds every acknowledged
	// text once.
	start := time.Now()
	var la, lb []webui.Message
	faultEventually(t, faultConvergeTimeout, "A and B to show the same messages", func() bool {
		la = a.api.allMessages(t, conv)
		lb = b.api.allMessages(t, conv)
		return len(la) >= len(acked) && faultSameIDs(la, lb)
	}, func() string {
		return fmt.Sprintf("A shows %d messages, B %d, acknowledged %d", len(la), len(lb), len(acked))
	})
	t.Logf("B converged %v after the last send", time.Since(start).Round(time.Millisecond))
	faultCheckTexts(t, "A", la, acked, inFlight)
	faultCheckTexts(t, "B", lb, acked, inFlight)

	// The other direction: B's blocks written after A came back must reach
	// A too, live (B's message) and in the background (B's delivery
	// receipts, which make A's messages "delivered").
	reply := "reply from B after A's restart"
	b.api.mustSend(t, conv, reply)
	sent := time.Now()
	converged := faultWait(faultReplyBound, func() bool {
		la = a.api.allMessages(t, conv)
		return len(la) > 0 && la[len(la)-1].Text == reply && la[len(la)-1].Status == "" &&
			slices.ContainsFunc(la, func(m webui.Message) bool {
				return m.Mine && m.Status == "delivered" && strings.HasPrefix(m.Text, "after-restart")
			})
	})
	if !converged {
		// Known bug (see the report of issue 5): when A restarts, B's
		// gossipsub drops the old connection after the new one came up
		// ("peer declared dead but still connected; respawning writer") and
		// clears A's topic subscriptions, which A never re-announces. B
		// then neither gossips to A nor picks A for anti-entropy; only A's
		// own anti-entropy (every 30-60 s) pulls B's blocks.
		t.Errorf("B's message and receipts written after A's restart did not reach A within %v: A shows %d messages, last %q; %s",
			faultReplyBound, len(la), la[len(la)-1].Text, faultStatuses(la))
	} else {
		t.Logf("B's reply reached A %v after it was sent", time.Since(sent).Round(time.Millisecond))
		faultEventually(t, faultConvergeTimeout, "A's last message to be delivered", func() bool {
			la = a.api.allMessages(t, conv)
			for i := len(la) - 1; i >= 0; i-- {
				if la[i].Mine {
					return la[i].Status == "delivered"
				}
			}
			return false
		}, func() string { return faultStatuses(la) })
	}

	a.stop(t)
	b.stop(t)
	faultCompareOffline(t, conv, converged, a, b)
	for _, p := range []*faultProc{a, b} {
		if strings.Contains(strings.ToLower(p.output()), "equivocation") {
			t.Errorf("%s's log mentions an equivocation:\n%s", p.name, p.output())
		}
	}
}

// ---------------------------------------------------------------------------
// Scenario 2: SIGKILL of the receiver in the middle of a catch-up.

func faultKillWhileCatchingUp(t *testing.T, bin string) {
	n := 3000
	if testing.Short() {
		n = 1000
	}
	a, b, conv := faultPair(t, bin)
	b.stop(t)
	// B's data directory is snapshotted below and restored for every
	// attempt. A block B published during an attempt and lost with the
	// restore would be written again differently (an equivocation, as
	// from a device restored from a disk image): B announces its prekey
	// right after joining, so wait until that announcement is in the
	// snapshot and attempts have nothing of their own to publish.
	for try := 0; !faultAnnounced(t, b.dir, conv); try++ {
		if try == 10 {
			t.Fatal("B never announced its prekey in the conversation")
		}
		b.start(t)
		time.Sleep(300 * time.Millisecond)
		b.stop(t)
	}

	// A writes while B is down, with a few concurrent requests (sends are
	// serialized by the node; the concurrency hides the HTTP round trips).
	wstart := time.Now()
	// 2 KB texts spread the catch-up over several 1 MiB frames, each
	// committed on its own: the kill can land between two of them.
	pad := strings.Repeat("x", 2000)
	faultSendMany(t, a, conv, "offline", pad, n, 4)
	t.Logf("A wrote %d messages in %v while B was down", n, time.Since(wstart).Round(time.Millisecond))

	// Start B and kill it once it holds some but not all of them. The
	// catch-up takes a few hundred milliseconds and commits in frames, so
	// the kill point is searched for: B's stopped data directory is
	// snapshotted, and each attempt starts from the snapshot, kills B after
	// a delay (or at once when the API shows a partial count) and counts,
	// offline, what B kept. Shorter when B had everything, longer when
	// nothing.
	snap := b.dir + ".snapshot"
	faultCopyDir(t, b.dir, snap)
	lo, hi, delay := time.Duration(0), time.Duration(0), 100*time.Millisecond
	kept := -1
	for attempt := 1; attempt <= maxKillAttempts; attempt++ {
		if attempt > 1 {
			if err := os.RemoveAll(b.dir); err != nil {
				t.Fatal(err)
			}
			faultCopyDir(t, snap, b.dir)
		}
		b.start(t)
		cstart := time.Now()
		// The timer decides the kill; a poller kills earlier if the API
		// shows a partial count (it blocks while a frame is ingested, so
		// it cannot time the kill by itself).
		partial := make(chan struct{})
		stopPoll := make(chan struct{})
		var seen []int
		var pollDone sync.WaitGroup
		pollDone.Go(func() {
			for {
				select {
				case <-stopPoll:
					return
				default:
				}
				var cs []webui.Conversation
				if _, err := b.api.do(context.Background(), "GET", "/api/v1/conversations", nil, &cs); err != nil {
					return // killed
				}
				for _, c := range cs {
					if c.ID == conv && (len(seen) == 0 || seen[len(seen)-1] != c.Messages) {
						seen = append(seen, c.Messages)
						if c.Messages > 0 && c.Messages < n {
							close(partial)
							return
						}
					}
				}
				time.Sleep(time.Millisecond)
			}
		})
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-partial:
			timer.Stop()
		}
		b.kill(t)
		after := time.Since(cstart)
		close(stopPoll)
		pollDone.Wait()
		off := openOffline(t, b.dir)
		kept = 0
		if conv, err := off.c.conversation(conv); err == nil {
			conv.mu.Lock()
			kept = conv.state.Len()
			conv.mu.Unlock()
		}
		off.close(t)
		t.Logf("attempt %d: B killed %v after its API came up (delay %v; API counts %v): it kept %d of %d messages",
			attempt, after.Round(time.Millisecond), delay, seen, kept, n)
		if kept > 0 && kept < n {
			break
		}
		if kept == 0 {
			lo = delay
			if hi == 0 {
				delay *= 2
			} else {
				delay = (lo + hi) / 2
			}
		} else {
			hi = delay
			delay = (lo + hi) / 2
		}
	}
	if kept <= 0 || kept >= n {
		// The scenario could not be set up (on a loaded machine the
		// catch-up can land all at once between two attempts): nothing
		// was tested, so say so rather than pass or fail on timing.
		fmt.Fprintf(os.Stderr, "KillWhileCatchingUp: could not kill B part-way through its catch-up in %d attempts; scenario not exercised\n", maxKillAttempts)
		t.Skipf("could not kill B part-way through its catch-up (last attempt kept %d of %d)", kept, n)
	}

	restart := time.Now()
	b.start(t)
	up := time.Since(restart)
	var got int
	faultEventually(t, faultConvergeTimeout, "B to finish its catch-up after the restart", func() bool {
		got = b.api.count(t, conv)
		return got >= n
	}, func() string { return fmt.Sprintf("B holds %d of %d", got, n) })
	took := time.Since(restart)
	t.Logf("catch-up after restart: API up in %v, all %d messages in %v", up.Round(time.Millisecond), n, took.Round(time.Millisecond))
	if took > faultCatchupBound {
		// Seen once in a dozen runs (28.5 s): the restarted node's own
		// catch-up did not run or did not finish, and a later session
		// (A's anti-entropy, every 30-60 s) completed it.
		t.Errorf("catch-up after the restart took %v, more than %v", took, faultCatchupBound)
	}
	if got != n {
		t.Errorf("B holds %d messages, want %d", got, n)
	}
	faultEventually(t, faultConvergeTimeout, "A's last message to be delivered", func() bool {
		ms := a.api.page(t, conv, 0, 1).Messages
		return len(ms) == 1 && ms[0].Status == "delivered"
	}, nil)
	lb := b.api.allMessages(t, conv)
	la := a.api.allMessages(t, conv)
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("offline %05d %s", i, pad)
	}
	faultCheckTexts(t, "A", la, want, nil)
	faultCheckTexts(t, "B", lb, want, nil)
	if !faultSameIDs(la, lb) {
		t.Errorf("A and B show different message lists")
	}
	a.stop(t)
	b.stop(t)
	faultCompareOffline(t, conv, true, a, b)
}

// faultPair starts two nodes A and B that are contacts, with a
// conversation between them that B holds.
func faultPair(t *testing.T, bin string) (a, b *faultProc, conv string) {
	t.Helper()
	root := t.TempDir()
	a = faultInit(t, bin, "A", filepath.Join(root, "a"), "")
	b = faultInit(t, bin, "B", filepath.Join(root, "b"), "")
	a.start(t)
	b.start(t)
	faultIntroduce(t, a, b)
	conv = faultCreate(t, a, b)
	faultWaitConversation(t, b, conv)
	return a, b, conv
}

// Scenario 5 (issue 14): a member cut off by a real partition (network
// namespaces, A's NAT dropping everything) while another is removed. A
// writes on its side under the old epoch; after the heal every remaining
// member converges and A writes under the new epoch; the removed member
// reads nothing written under it.
func faultPartitionAcrossRemoval(t *testing.T, bin string) {
	lab, why := faultLab(t)
	if lab == nil {
		if os.Getenv("GLITR_NATLAB_REQUIRED") == "1" {
			t.Fatal("GLITR_NATLAB_REQUIRED=1: the partition lab could not run: " + why)
		}
		t.Skip("network namespaces unavailable: " + why)
	}
	a, b, c, conv := faultLabGroup(t, bin, lab)
	has := func(p *faultProc, text string) bool {
		return slices.ContainsFunc(p.api.allMessages(t, conv), func(m webui.Message) bool { return m.Text == text })
	}
	c.api.mustSend(t, conv, "before")
	for _, p := range []*faultProc{a, b} {
		faultEventually(t, faultConvergeTimeout, p.name+" to read the first message", func() bool { return has(p, "before") }, nil)
	}

	lab.run(t, "cut", lab.prefix, "r1") // A's home drops everything
	c.api.mustDo(t, "DELETE", "/api/v1/conversations/"+conv+"/members/"+b.account, nil, nil)
	c.api.mustSend(t, conv, "after B left")
	a.api.mustSend(t, conv, "A during the cut")
	lab.run(t, "heal", lab.prefix, "r1")

	faultEventually(t, faultConvergeTimeout, "A to read what C wrote after the removal", func() bool { return has(a, "after B left") }, nil)
	faultEventually(t, faultConvergeTimeout, "C to read what A wrote during the cut", func() bool { return has(c, "A during the cut") }, nil)
	a.api.mustSend(t, conv, "A after the heal")
	faultEventually(t, faultConvergeTimeout, "C to read A under the new epoch", func() bool { return has(c, "A after the heal") }, nil)
	for _, text := range []string{"after B left", "A after the heal"} {
		if has(b, text) {
			t.Fatalf("the removed member reads %q", text)
		}
	}
}
