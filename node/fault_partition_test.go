//go:build linux

package node

// The partition scenario of TestKillAndPartition (fault_test.go), and the
// namespace lab it runs in when it can.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

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
	a, b, c, conv := faultLabGroup(t, bin, lab)
	faultPartitionRun(t, conv, a, b, c,
		func() { lab.run(t, "cut", lab.prefix, "r1") },
		func() { lab.run(t, "heal", lab.prefix, "r1") })
}

// faultLabGroup starts A and B in their NAT'd homes and C on the public
// net, and has C start a conversation with both.
func faultLabGroup(t *testing.T, bin string, lab *faultNetlab) (a, b, c *faultProc, conv string) {
	t.Helper()
	root := t.TempDir()
	// Each node has its own namespace, so all can use the same port.
	c = faultInit(t, bin, "C", filepath.Join(root, "c"), lab.prefix+"-pub")
	a = faultInit(t, bin, "A", filepath.Join(root, "a"), lab.prefix+"-a")
	b = faultInit(t, bin, "B", filepath.Join(root, "b"), lab.prefix+"-b")
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
	conv = c.api.createConversation(t, a.account, b.account)
	faultWaitConversation(t, a, conv)
	faultWaitConversation(t, b, conv)
	return a, b, c, conv
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
