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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p"
	"golang.org/x/sys/unix"

	"github.com/glitr-chat/glitr/dag"
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
}

// ---------------------------------------------------------------------------
// Scenario 1: SIGKILL of the sender in the middle of a burst of sends.

func faultKillWhileSending(t *testing.T, bin string) {
	before, after := 200, 50
	if testing.Short() {
		before, after = 60, 20
	}
	root := t.TempDir()
	a := faultInit(t, bin, "A", filepath.Join(root, "a"), "")
	b := faultInit(t, bin, "B", filepath.Join(root, "b"), "")
	a.start(t)
	b.start(t)
	faultIntroduce(t, a, b)
	conv := faultCreate(t, a, b)
	faultWaitConversation(t, b, conv)

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
	root := t.TempDir()
	a := faultInit(t, bin, "A", filepath.Join(root, "a"), "")
	b := faultInit(t, bin, "B", filepath.Join(root, "b"), "")
	a.start(t)
	b.start(t)
	faultIntroduce(t, a, b)
	conv := faultCreate(t, a, b)
	faultWaitConversation(t, b, conv)
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

// ---------------------------------------------------------------------------
// Scenario 3: partition {A} | {B, C} of a three-member conversation.

func faultPartition(t *testing.T, bin string) {
	lab, why := faultLab(t)
	if lab == nil {
		msg := "PARTITION TEST: fallback (" + why + "): A is stopped as the partition and writes offline; restarting it heals"
		fmt.Fprintln(os.Stderr, msg)
		t.Log(msg)
		if os.Getenv("GLITR_NATLAB_REQUIRED") == "1" {
			t.Fatal("GLITR_NATLAB_REQUIRED=1: the namespace variant of the partition test could not run: " + why)
		}
		faultPartitionFallback(t, bin)
		return
	}
	msg := "PARTITION TEST: namespaces (A in home a behind NAT r1, B in home b behind NAT r2, C on the public net; cut/heal r1)"
	fmt.Fprintln(os.Stderr, msg)
	t.Log(msg)
	faultPartitionNamespaces(t, bin, lab)
}

// partition sizes: messages per node before and during the partition.
func faultPartitionSizes() (pre, during int) {
	if testing.Short() {
		return 3, 10
	}
	return 5, 30
}

func faultPartitionNamespaces(t *testing.T, bin string, lab *faultNetlab) {
	root := t.TempDir()
	// Each node has its own namespace, so all can use the same port.
	c := faultInit(t, bin, "C", filepath.Join(root, "c"), lab.prefix+"-pub")
	a := faultInit(t, bin, "A", filepath.Join(root, "a"), lab.prefix+"-a")
	b := faultInit(t, bin, "B", filepath.Join(root, "b"), lab.prefix+"-b")
	c.start(t)
	// A and B are behind NATs: C can never dial them; they dial C. Giving
	// them C's card before they start makes their first contact round
	// connect at once.
	cardC := c.api.card(t)
	faultAddContactOffline(t, a, cardC)
	faultAddContactOffline(t, b, cardC)
	a.start(t)
	b.start(t)
	for _, p := range []*faultProc{a, b} {
		c.api.addContact(t, p.api.card(t))
	}
	conv := c.api.createConversation(t, a.account, b.account)
	faultWaitConversation(t, a, conv)
	faultWaitConversation(t, b, conv)
	faultPartitionRun(t, conv, a, b, c,
		func() { lab.run(t, "cut", lab.prefix, "r1") },
		func() { lab.run(t, "heal", lab.prefix, "r1") })
}

func faultPartitionFallback(t *testing.T, bin string) {
	root := t.TempDir()
	a := faultInit(t, bin, "A", filepath.Join(root, "a"), "")
	b := faultInit(t, bin, "B", filepath.Join(root, "b"), "")
	c := faultInit(t, bin, "C", filepath.Join(root, "c"), "")
	for _, p := range []*faultProc{a, b, c} {
		p.start(t)
	}
	faultIntroduce(t, a, c)
	faultIntroduce(t, b, c)
	conv := c.api.createConversation(t, a.account, b.account)
	faultWaitConversation(t, a, conv)
	faultWaitConversation(t, b, conv)
	faultPartitionRun(t, conv, a, b, c,
		func() { a.stop(t) },
		func() { a.start(t) })
}

// faultPartitionRun writes on every node, partitions A away, writes on
// both sides, heals and measures convergence. With a fallback partition
// (A stopped), A's writes during the partition go straight into its data
// directory, opened offline.
func faultPartitionRun(t *testing.T, conv string, a, b, c *faultProc, cut, heal func()) {
	pre, during := faultPartitionSizes()
	nodes := []*faultProc{a, b, c}
	for _, p := range nodes {
		for i := range pre {
			p.api.mustSend(t, conv, fmt.Sprintf("pre %s %02d", p.name, i))
		}
	}
	total := 3 * pre
	faultWaitAll(t, conv, nodes, total, "every node to hold the messages written before the partition")

	cut()
	cutAt := time.Now()
	// {B, C} keep talking to each other.
	for i := range during {
		b.api.mustSend(t, conv, fmt.Sprintf("during B %02d", i))
		c.api.mustSend(t, conv, fmt.Sprintf("during C %02d", i))
	}
	// A writes on its side of the partition.
	if a.running() {
		for i := range during {
			a.api.mustSend(t, conv, fmt.Sprintf("during A %02d", i))
		}
	} else {
		off := openOffline(t, a.dir)
		for i := range during {
			if _, err := off.c.Send(context.Background(), conv, fmt.Sprintf("during A %02d", i), nil); err != nil {
				t.Fatal(err)
			}
		}
		off.close(t)
	}
	faultWaitAll(t, conv, []*faultProc{b, c}, total+2*during, "B and C to converge during the partition")
	// The partition is real: nothing crossed it.
	time.Sleep(time.Second)
	if a.running() {
		if got := a.api.count(t, conv); got != total+during {
			t.Fatalf("A holds %d messages during the partition, want %d (its own): the partition leaks", got, total+during)
		}
	}
	for _, p := range []*faultProc{b, c} {
		if got := p.api.count(t, conv); got != total+2*during {
			t.Fatalf("%s holds %d messages during the partition, want %d: the partition leaks", p.name, got, total+2*during)
		}
	}
	t.Logf("partitioned for %v; each side wrote its messages", time.Since(cutAt).Round(time.Millisecond))

	heal()
	healed := time.Now()
	total += 3 * during
	faultWaitAll(t, conv, nodes, total, "all three to converge after the heal")
	took := time.Since(healed)
	t.Logf("converged %v after the heal (bound %v)", took.Round(time.Millisecond), faultHealBound)
	fmt.Fprintf(os.Stderr, "PARTITION TEST: converged %v after the heal\n", took.Round(time.Millisecond))
	if took > faultHealBound {
		t.Errorf("convergence after the heal took %v, more than %v", took, faultHealBound)
	}
	lists := map[string][]webui.Message{}
	for _, p := range nodes {
		lists[p.name] = p.api.allMessages(t, conv)
	}
	var want []string
	for _, p := range nodes {
		for i := range pre {
			want = append(want, fmt.Sprintf("pre %s %02d", p.name, i))
		}
		for i := range during {
			want = append(want, fmt.Sprintf("during %s %02d", p.name, i))
		}
	}
	for _, p := range nodes {
		faultCheckTexts(t, p.name, lists[p.name], want, nil)
	}
	if !faultSameIDs(lists["A"], lists["B"]) || !faultSameIDs(lists["A"], lists["C"]) {
		t.Errorf("the three nodes show the messages in different orders")
	}
	// Receipts keep flowing for a moment; the message lists above are the
	// convergence criterion, the state hashes (which include receipts) are
	// compared once every last message is delivered to everyone.
	var pendingStatus []string
	faultEventually(t, faultConvergeTimeout, "every node's last own message to be delivered", func() bool {
		pendingStatus = pendingStatus[:0]
		for _, p := range nodes {
			ms := p.api.allMessages(t, conv)
			for i := len(ms) - 1; i >= 0; i-- {
				if ms[i].Mine {
					if ms[i].Status != "delivered" {
						pendingStatus = append(pendingStatus, fmt.Sprintf("%s: %q is %s", p.name, ms[i].Text, ms[i].Status))
					}
					break
				}
			}
		}
		return len(pendingStatus) == 0
	}, func() string { return fmt.Sprintf("not delivered: %v", pendingStatus) })
	for _, p := range nodes {
		p.stop(t)
	}
	faultCompareOffline(t, conv, true, nodes...)
}

// faultWaitAll waits until every node holds want messages and all show the
// same list.
func faultWaitAll(t *testing.T, conv string, nodes []*faultProc, want int, what string) {
	t.Helper()
	counts := make([]int, len(nodes))
	faultEventually(t, faultConvergeTimeout, what, func() bool {
		ok := true
		for i, p := range nodes {
			counts[i] = p.api.count(t, conv)
			ok = ok && counts[i] == want
		}
		if !ok {
			return false
		}
		first := nodes[0].api.allMessages(t, conv)
		for _, p := range nodes[1:] {
			if !faultSameIDs(first, p.api.allMessages(t, conv)) {
				return false
			}
		}
		return true
	}, func() string {
		var s []string
		for i, p := range nodes {
			s = append(s, fmt.Sprintf("%s=%d", p.name, counts[i]))
		}
		return fmt.Sprintf("counts %s, want %d each", strings.Join(s, " "), want)
	})
}

// ---------------------------------------------------------------------------
// Checks.

// faultCheckTexts checks that ms holds every text of want exactly once and
// nothing else except, at most once each, texts of maybe (sends whose
// outcome the kill hid).
func faultCheckTexts(t *testing.T, who string, ms []webui.Message, want, maybe []string) {
	t.Helper()
	seen := map[string]int{}
	ids := map[string]bool{}
	for _, m := range ms {
		seen[m.Text]++
		if ids[m.ID] {
			t.Errorf("%s shows message id %s twice", who, m.ID)
		}
		ids[m.ID] = true
	}
	var lost, dup []string
	for _, w := range want {
		switch seen[w] {
		case 0:
			lost = append(lost, w)
		case 1:
		default:
			dup = append(dup, w)
		}
	}
	for text, k := range seen {
		if k > 1 && !slices.Contains(dup, text) {
			dup = append(dup, text)
		}
		if !slices.Contains(want, text) && !slices.Contains(maybe, text) {
			t.Errorf("%s shows a message nobody sent: %q", who, text)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%s lost %d acknowledged messages: %v", who, len(lost), faultFirst(lost, 10))
	}
	if len(dup) > 0 {
		t.Errorf("%s shows %d messages more than once: %v", who, len(dup), faultFirst(dup, 10))
	}
}

// faultStatuses summarises the statuses of own messages.
func faultStatuses(ms []webui.Message) string {
	n := map[string]int{}
	for _, m := range ms {
		if m.Mine {
			n[m.Status]++
		}
	}
	last := ""
	if len(ms) > 0 {
		last = ms[len(ms)-1].Text + " " + ms[len(ms)-1].Status
	}
	return fmt.Sprintf("own message statuses %v; last: %s", n, last)
}

func faultFirst(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clip(s[:n]), "...")
	}
	return s
}

func faultSameIDs(a, b []webui.Message) bool {
	return slices.EqualFunc(a, b, func(x, y webui.Message) bool { return x.ID == y.ID })
}

// faultCompareOffline opens the stopped nodes' data directories and checks
// that they hold the same blocks, show the same messages in the same order,
// have the same state hash and recorded no equivocation.
func faultCompareOffline(t *testing.T, conv string, requireSame bool, procs ...*faultProc) {
	t.Helper()
	var ref *offlineSummary
	for _, p := range procs {
		off := openOffline(t, p.dir)
		s := off.summary(t, conv)
		off.close(t)
		if len(s.equivocations) > 0 {
			for _, e := range s.equivocations {
				t.Errorf("%s recorded an equivocation: device %x reused seq %d (%s vs %s)", p.name, e.Author[:8], e.Seq, e.Existing, e.Conflicting)
			}
		}
		if s.staged > 0 {
			t.Errorf("%s still has %d blocks in staging", p.name, s.staged)
		}
		t.Logf("%s offline: %d blocks, %d messages, state %x", p.name, s.count, len(s.messages), s.hash[:6])
		if ref == nil {
			ref = &s
			continue
		}
		if !requireSame {
			continue // already failed: only the checks above apply
		}
		if s.count != ref.count {
			t.Errorf("%s holds %d blocks, %s %d", p.name, s.count, procs[0].name, ref.count)
		}
		if !faultMapsEqual(s.vector, ref.vector) {
			t.Errorf("%s's sequence vector %v differs from %s's %v", p.name, s.vector, procs[0].name, ref.vector)
		}
		if !slices.Equal(s.messages, ref.messages) {
			t.Errorf("%s's message list (%d) differs from %s's (%d)", p.name, len(s.messages), procs[0].name, len(ref.messages))
		}
		if s.hash != ref.hash {
			t.Errorf("%s's state hash %x differs from %s's %x", p.name, s.hash[:8], procs[0].name, ref.hash[:8])
		}
	}
}

func faultMapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// Offline access to a stopped node's data directory: the store and the chat
// state, with a host that has no transports, so nothing touches a network.

type offlineNode struct {
	n    *Node
	c    *Chat
	db   *pebbleds.Datastore
	lock *Lock
}

// faultAnnounced reports whether the stopped node at dir has announced its
// current prekey in conversation id.
func faultAnnounced(t *testing.T, dir, id string) bool {
	t.Helper()
	off := openOffline(t, dir)
	defer off.close(t)
	conv, err := off.c.conversation(id)
	if err != nil {
		return false
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	ann, err := off.c.ownAnnounce(conv)
	return err == nil && ann == nil
}

func openOffline(t *testing.T, path string) *offlineNode {
	t.Helper()
	ctx := context.Background()
	dir, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := dir.Lock()
	if err != nil {
		t.Fatalf("lock %s (is the node still running?): %v", path, err)
	}
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.NoTransports)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebbleds.NewDatastore(dir.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Dir: dir, Host: h, log: slog.New(slog.DiscardHandler)}
	id, err := loadIdentity(dir, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same layout as Start.
	st, err := dag.Open(ctx, namespace.Wrap(db, ds.NewKey("/dag")), dag.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	c := newChat(n, id, st, namespace.Wrap(db, ds.NewKey("/chat")))
	if err := c.load(ctx); err != nil {
		t.Fatal(err)
	}
	n.Chat = c
	return &offlineNode{n: n, c: c, db: db, lock: lock}
}

func (o *offlineNode) close(t *testing.T) {
	t.Helper()
	o.c.close()
	if err := o.db.Close(); err != nil {
		t.Error(err)
	}
	_ = o.n.Host.Close()
	_ = o.lock.Release()
}

type offlineSummary struct {
	count         uint64
	vector        map[string]uint64
	messages      []string // id and text, in display order
	hash          [32]byte
	equivocations []dag.EquivocationRecord
	staged        int
}

func (o *offlineNode) summary(t *testing.T, id string) offlineSummary {
	t.Helper()
	ctx := context.Background()
	conv, err := o.c.conversation(id)
	if err != nil {
		t.Fatal(err)
	}
	var s offlineSummary
	if s.count, err = o.c.store.Count(ctx, conv.dagID); err != nil {
		t.Fatal(err)
	}
	vec, err := o.c.store.SeqVector(ctx, conv.dagID)
	if err != nil {
		t.Fatal(err)
	}
	s.vector = map[string]uint64{}
	for d, q := range vec {
		s.vector[fmt.Sprintf("%x", d[:6])] = q
	}
	if s.equivocations, err = o.c.store.Equivocations(ctx, conv.dagID); err != nil {
		t.Fatal(err)
	}
	s.staged, _ = o.c.store.Staged(conv.dagID)
	conv.mu.Lock()
	defer conv.mu.Unlock()
	for i := range conv.state.Len() {
		v := conv.state.At(i)
		s.messages = append(s.messages, v.ID.String()+" "+v.Text)
	}
	s.hash = conv.state.StateHash()
	return s
}

// faultCopyDir copies a stopped node's data directory.
func faultCopyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(dst, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// faultAddContactOffline adds a card to a stopped node.
func faultAddContactOffline(t *testing.T, p *faultProc, card string) {
	t.Helper()
	off := openOffline(t, p.dir)
	defer off.close(t)
	if _, err := off.c.AddContact(context.Background(), card); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Processes.

// faultBuild compiles cmd/node once for the whole test.
func faultBuild(t *testing.T) string {
	t.Helper()
	root, err := faultRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "glitr")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/node")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/node: %v\n%s", err, out)
	}
	t.Logf("built the glitr binary in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

func faultRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod) not found")
		}
		dir = parent
	}
}

// faultProc is a `glitr run` process on a data directory; it can be
// started again after it stops or is killed.
type faultProc struct {
	name, bin, dir string
	ns             string // network namespace, or "" for loopback
	account        string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  faultBuffer // stdout and stderr of every run
	api  *faultAPI
}

type faultBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *faultBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *faultBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// faultInit creates a personal node's data directory: loopback with a free
// fixed port (so a restarted node keeps the addresses on its card), or, in
// a namespace, the default port on every interface of the namespace.
func faultInit(t *testing.T, bin, name, dir, ns string) *faultProc {
	t.Helper()
	args := []string{"--data", dir, "init", "--api", "127.0.0.1:0"}
	if ns == "" {
		args = append(args, "--loopback", "--port", fmt.Sprint(faultFreePort(t)))
	} else {
		args = append(args, "--port", "4101")
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("init %s: %v\n%s", name, err, out)
	}
	p := &faultProc{name: name, bin: bin, dir: dir, ns: ns}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || os.Getenv("GLITR_TEST_LOG") == "debug" {
			t.Logf("--- output of %s ---\n%s", p.name, p.output())
		}
	})
	return p
}

// faultFreePort finds a port free on loopback for TCP and UDP, with the
// next UDP port free too (webrtc-direct takes it).
func faultFreePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := port < 65000
		var closers []io.Closer
		closers = append(closers, l)
		for _, p := range []int{port, port + 1} {
			if !ok {
				break
			}
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, u)
		}
		for _, c := range closers {
			c.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func (p *faultProc) output() string { return p.out.String() }

func (p *faultProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// start runs the node and waits for its API.
func (p *faultProc) start(t *testing.T) {
	t.Helper()
	// Debug logs (catch-up sessions) are kept and shown when a test fails.
	args := []string{p.bin, "--data", p.dir, "--log-level", "debug", "run"}
	if p.ns != "" {
		args = append([]string{"ip", "netns", "exec", p.ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	// Never outlive the test binary, and take signals only from the test:
	// its own process group keeps a SIGINT to the test's group away.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Stderr = &p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&p.out, "=== %s: start %s\n", time.Now().Format("15:04:05.000"), p.name)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(&p.out, line)
			if u, ok := strings.CutPrefix(strings.TrimSpace(line), "Open the browser UI: "); ok {
				if pu, err := url.Parse(u); err == nil {
					select {
					case addr <- pu.Host:
					default:
					}
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		err := cmd.Wait()
		fmt.Fprintf(&p.out, "=== %s: %s exited: %v\n", time.Now().Format("15:04:05.000"), p.name, err)
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	select {
	case a := <-addr:
		dir, err := Open(p.dir)
		if err != nil {
			t.Fatal(err)
		}
		token, err := dir.Token()
		if err != nil {
			t.Fatal(err)
		}
		p.api = newFaultAPI(a, token, p.ns)
	case <-done:
		t.Fatalf("%s exited before its API came up:\n%s", p.name, p.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not print its banner within 30 s:\n%s", p.name, p.output())
	}
	if p.account == "" {
		var me struct{ Card string }
		p.api.mustDo(t, "GET", "/api/v1/card", nil, &me)
		vc, err := ParseCard(me.Card, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p.account = fmt.Sprintf("%x", vc.Cert.Account[:])
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *faultProc) kill(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(&p.out, "=== %s: SIGKILL %s\n", time.Now().Format("15:04:05.000"), p.name)
	_ = cmd.Process.Kill()
	<-done
}

// stop asks the process to shut down (SIGINT) and kills it if it takes
// longer than a few seconds.
func (p *faultProc) stop(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not stop within 10 s of SIGINT; killing it", p.name)
		_ = cmd.Process.Kill()
		<-done
	}
}

// ---------------------------------------------------------------------------
// The local API, over loopback or into a namespace.

type faultAPI struct {
	base, token string
	hc          *http.Client
}

func newFaultAPI(addr, token, ns string) *faultAPI {
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	if ns != "" {
		tr.DialContext = faultNetnsDialer(ns)
	}
	return &faultAPI{base: "http://" + addr, token: token, hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// faultNetnsDialer dials from inside a network namespace: the socket is
// made by an OS thread that has joined the namespace, and a socket stays in
// the namespace it was made in. The thread goes back to its own namespace
// afterwards; if it cannot, it stays locked and dies with the goroutine.
func faultNetnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			target, err := os.Open(filepath.Join("/var/run/netns", ns))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// do makes one request and returns the status code.
func (a *faultAPI) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return res.StatusCode, nil
}

func (a *faultAPI) mustDo(t *testing.T, method, path string, in, out any) {
	t.Helper()
	if _, err := a.do(context.Background(), method, path, in, out); err != nil {
		t.Fatal(err)
	}
}

func (a *faultAPI) card(t *testing.T) string {
	t.Helper()
	var out struct{ Card string }
	a.mustDo(t, "GET", "/api/v1/card", nil, &out)
	return out.Card
}

func (a *faultAPI) addContact(t *testing.T, card string) webui.Contact {
	t.Helper()
	var c webui.Contact
	a.mustDo(t, "POST", "/api/v1/contacts", map[string]string{"card": card}, &c)
	return c
}

func (a *faultAPI) createConversation(t *testing.T, members ...string) string {
	t.Helper()
	var c webui.Conversation
	a.mustDo(t, "POST", "/api/v1/conversations", map[string]any{"title": "", "members": members}, &c)
	return c.ID
}

// send posts a message; only a 201 counts as an acknowledgement.
func (a *faultAPI) send(ctx context.Context, conv, text string) (webui.Message, error) {
	var m webui.Message
	code, err := a.do(ctx, "POST", "/api/v1/conversations/"+conv+"/messages", map[string]string{"text": text, "replyTo": ""}, &m)
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("send: status %d, want 201", code)
	}
	return m, err
}

func (a *faultAPI) mustSend(t *testing.T, conv, text string) {
	t.Helper()
	if _, err := a.send(context.Background(), conv, text); err != nil {
		t.Fatal(err)
	}
}

func (a *faultAPI) page(t *testing.T, conv string, before, limit int) webui.MessagePage {
	t.Helper()
	var p webui.MessagePage
	a.mustDo(t, "GET", fmt.Sprintf("/api/v1/conversations/%s/messages?before=%d&limit=%d", conv, before, limit), nil, &p)
	return p
}

// count is the number of messages the node shows (0 before it knows the
// conversation).
func (a *faultAPI) count(t *testing.T, conv string) int {
	t.Helper()
	var cs []webui.Conversation
	a.mustDo(t, "GET", "/api/v1/conversations", nil, &cs)
	for _, c := range cs {
		if c.ID == conv {
			return c.Messages
		}
	}
	return 0
}

// allMessages pages through the whole conversation, oldest first.
func (a *faultAPI) allMessages(t *testing.T, conv string) []webui.Message {
	t.Helper()
	p := a.page(t, conv, 0, 500)
	out := p.Messages
	for p.Before > 0 {
		p = a.page(t, conv, p.Before, 500)
		out = append(slices.Clip(p.Messages), out...)
	}
	return out
}

// ---------------------------------------------------------------------------
// Scenario helpers.

func faultIntroduce(t *testing.T, a, b *faultProc) {
	t.Helper()
	a.api.addContact(t, b.api.card(t))
	b.api.addContact(t, a.api.card(t))
}

func faultCreate(t *testing.T, a, b *faultProc) string {
	t.Helper()
	return a.api.createConversation(t, b.account)
}

func faultWaitConversation(t *testing.T, p *faultProc, conv string) {
	t.Helper()
	faultEventually(t, faultConvergeTimeout, p.name+" to receive the conversation", func() bool {
		var cs []webui.Conversation
		p.api.mustDo(t, "GET", "/api/v1/conversations", nil, &cs)
		return slices.ContainsFunc(cs, func(c webui.Conversation) bool { return c.ID == conv })
	}, nil)
}

// faultSendMany sends n numbered messages with a few concurrent requests;
// the node orders them itself, the texts are unique.
func faultSendMany(t *testing.T, p *faultProc, conv, prefix, suffix string, n, workers int) {
	t.Helper()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if _, err := p.api.send(context.Background(), conv, fmt.Sprintf("%s %05d %s", prefix, i, suffix)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// faultWait polls cond every 50 ms until it holds or d passes.
func faultWait(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// faultEventually polls cond every 50 ms until it holds or d passes; state
// (if not nil) describes the last observation in the failure.
func faultEventually(t *testing.T, d time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting for %s", d, what)
			if state != nil {
				msg += ": " + state()
			}
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// The namespace lab.

type faultNetlab struct {
	script, prefix string
}

// faultLab brings up a netlab lab for the partition test, or says why it
// cannot.
func faultLab(t *testing.T) (*faultNetlab, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, "not root"
	}
	for _, tool := range []string{"ip", "nft", "sysctl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, tool + " not found"
		}
	}
	script, err := natlabScript()
	if err != nil {
		return nil, err.Error()
	}
	probe := fmt.Sprintf("gfprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("cannot create a network namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command("ip", "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", probe, err, out)
	}
	// netlab's longest interface name is PREFIX-r1-w; Linux allows 15 bytes.
	prefix := fmt.Sprintf("gf%d", os.Getpid())
	if len(prefix) > 10 {
		prefix = prefix[:2] + prefix[len(prefix)-8:]
	}
	lab := &faultNetlab{script: script, prefix: prefix}
	// Registered before the nodes' cleanups, so it runs after them.
	t.Cleanup(func() {
		if err := lab.exec("down", prefix); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	if err := lab.exec("up", prefix); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s up in %v", prefix, time.Since(start).Round(time.Millisecond))
	return lab, ""
}

func (l *faultNetlab) exec(args ...string) error {
	out, err := exec.Command("bash", append([]string{l.script}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netlab %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (l *faultNetlab) run(t *testing.T, args ...string) {
	t.Helper()
	if err := l.exec(args...); err != nil {
		t.Fatal(err)
	}
}

// maxKillAttempts bounds the search for a kill point part-way through a
// catch-up.
const maxKillAttempts = 16
