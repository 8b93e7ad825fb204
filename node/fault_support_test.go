//go:build linux

package node

// What the fault scenarios (fault_test.go, fault_partition_test.go) are
// built from: the checks, data directories opened offline, the `glitr`
// processes and their API, and the steps the scenarios share.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
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

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/identity"
	"github.com/glitr-chat/glitr/webui"
)

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
	key, err := dir.PeerKey()
	if err != nil {
		t.Fatal(err)
	}
	// The node's own peer id: what it announces in conversations.
	h, err := libp2p.New(libp2p.Identity(key), libp2p.NoListenAddrs, libp2p.NoTransports)
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
	st, err := identity.OpenBlocks(ctx, db, id)
	if err != nil {
		t.Fatal(err)
	}
	c := newChat(n.chatNet(), id, st, namespace.Wrap(db, ds.NewKey("/chat")))
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
	out  testsupport.Buffer // stdout and stderr of every run
	api  *faultAPI
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
		vc, err := card.Parse(me.Card, time.Now())
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
