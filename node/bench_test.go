package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/glitr-chat/glitr/webui"
)

var benchMessages = flag.Int("glitr.messages", 100_000, "messages for the catch-up and start-up benchmarks (1,000 under -short)")

func benchN() int {
	if testing.Short() {
		return 1000
	}
	return *benchMessages
}

// bulkWrite appends n message blocks by this node's device to a
// conversation, the way Send does but in large batches and without a
// datastore sync per block: benchmark setup, not the measured path.
func bulkWrite(tb testing.TB, n *Node, convID string, count int, text string) {
	tb.Helper()
	ctx := context.Background()
	c := n.Chat
	conv, err := c.conversation(convID)
	if err != nil {
		tb.Fatal(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	self := dag.DeviceID(c.id.DeviceID())
	sealer := openerSealer{conv: conv}
	const batch = 5000
	for done := 0; done < count; {
		vec, err := c.store.Vector(ctx, conv.dagID)
		if err != nil {
			tb.Fatal(err)
		}
		heads, err := c.store.Heads(ctx, conv.dagID)
		if err != nil {
			tb.Fatal(err)
		}
		chain := vec[self]
		parents := heads
		if len(parents) > dag.MaxParents {
			parents = parents[:dag.MaxParents]
		}
		var blocks []dag.Block
		for i := 0; i < batch && done < count; i, done = i+1, done+1 {
			body, _ := crdt.EncodeOps([]crdt.Op{crdt.Message{Text: text + " " + strconv.Itoa(done)}})
			var cert []byte
			if chain.Seq == 0 {
				cert = c.id.Cert
			}
			blk, err := dag.Build(dag.BuildParams{
				Signer: blockSigner{c.id.Keyring.Device}, Sealer: sealer, Chain: chain,
				Parents: parents, Cert: cert, Body: body, Now: time.Now(),
			})
			if err != nil {
				tb.Fatal(err)
			}
			ref := dag.Ref{CID: blk.CID, Height: blk.Inner.Height, Lamport: blk.Inner.Lamport}
			chain = dag.ChainState{Seq: blk.Inner.Seq, Last: ref}
			parents = []dag.Ref{ref}
			blocks = append(blocks, blk)
		}
		res, err := c.store.AddBatch(ctx, conv.dagID, "self", blocks)
		if err != nil || len(res.Committed) != len(blocks) {
			tb.Fatalf("bulk commit: %v (%d of %d committed, rejected %v)", err, len(res.Committed), len(blocks), res.Rejected)
		}
		evs := make([]crdt.Event, 0, len(res.Committed))
		for _, b := range res.Committed {
			ev, _ := conv.event(b)
			evs = append(evs, ev)
		}
		if _, err := conv.state.ApplyBatch(evs); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.persistKeys(ctx, conv, true); err != nil {
		tb.Fatal(err)
	}
}

// openerSealer seals with the conversation cipher without persisting the key
// state per block (bulkWrite persists once at the end).
type openerSealer struct{ conv *conversation }

func (s openerSealer) Seal(inner []byte) (dag.Sealed, error) {
	e, n, ct, err := s.conv.cipher.SealBlock(inner)
	return dag.Sealed{Epoch: e, Nonce: n, Ciphertext: ct}, err
}

func vmHWM() float64 {
	raw, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkCatchUp (B1): B is offline while two authors (A and C) write N
// messages into a three-member conversation; then B starts again and
// catches up from A. Measured: wall time from B's start to every message
// applied in B's state, round trips and bytes of the catch-up session.
func BenchmarkCatchUp(b *testing.B) {
	N := benchN()
	b.StopTimer()
	for range b.N {
		a := startTestNode(b, loopbackConfig(b))
		bn := startTestNode(b, loopbackConfig(b))
		cn := startTestNode(b, loopbackConfig(b))
		introduce(b, a, bn)
		introduce(b, a, cn)
		ctx := context.Background()
		conv, err := a.CreateConversation(ctx, "bench", []string{accountOf(bn), accountOf(cn)})
		if err != nil {
			b.Fatal(err)
		}
		waitForConversation(b, bn, conv.ID)
		waitForConversation(b, cn, conv.ID)
		testsupport.Eventually(b, 20*time.Second, "c to hold the genesis", func() bool { return len(stateMembers(cn, conv.ID)) == 3 })
		bdir := bn.Dir
		bn.Close()
		// Two authors, interleaved in chunks so the DAG has both chains.
		chunk := max(N/10, 1)
		for written := 0; written < N; written += chunk {
			w, other := a, cn
			if (written/chunk)%2 == 1 {
				w, other = cn, a
			}
			bulkWrite(b, w, conv.ID, min(chunk, N-written), "benchmark message with a realistic length of text")
			if err := syncNow(w, other, conv.ID); err != nil {
				b.Fatal(err)
			}
		}
		cn.Close() // B catches up from A alone
		want := conv.Messages + N
		hwmBefore := vmHWM()
		b.StartTimer()

		start := time.Now()
		b2, err := Start(ctx, bdir, Options{Logger: testsupport.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		for {
			c2, _ := b2.Chat.conversation(conv.ID)
			c2.mu.Lock()
			got := c2.state.Len()
			c2.mu.Unlock()
			if got >= want {
				break
			}
			if time.Since(start) > 90*time.Second {
				b.Fatalf("caught up %d of %d", got, want)
			}
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		var rt, blocks int
		var bytes int64
		for _, st := range b2.Chat.RecentSessions() {
			if st.BlocksRecv > 0 {
				rt += st.RoundTrips
				blocks += st.BlocksRecv
				bytes += st.BytesRecv
			}
		}
		b.ReportMetric(elapsed.Seconds(), "s-to-caught-up")
		b.ReportMetric(float64(N)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(rt), "round-trips")
		b.ReportMetric(float64(bytes)/1e6, "MB-received")
		b.ReportMetric(vmHWM()-hwmBefore, "peak-RSS-growth-MB")
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse)/1e6, "heap-inuse-MB")
		b.Logf("N=%d: %s to caught up, %d sessions with data, %d blocks, %.1f MB", N, elapsed, rt, blocks, float64(bytes)/1e6)
		b2.Close()
		a.Close()
	}
}

func stateMembers(n *Node, id string) []crdt.Member {
	conv, err := n.Chat.conversation(id)
	if err != nil {
		return nil
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	return conv.state.Members()
}

// syncNow runs one catch-up session from w to other.
func syncNow(w, other *Node, id string) error {
	conv, err := w.Chat.conversation(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := w.Host.Connect(ctx, addrInfo(other.Host)); err != nil {
		return err
	}
	// A session can end with blocks left for a follow-up (a concurrent
	// session was delivering their links); repeat until other holds all of
	// w's blocks.
	self := dag.DeviceID(w.Chat.id.DeviceID())
	for {
		st, err := w.Chat.catchup.Sync(ctx, other.Host.ID(), conv.syncID)
		if err != nil && !errors.Is(err, catchup.ErrBusy) {
			return fmt.Errorf("sync: %w (%+v)", err, st)
		}
		mine, err1 := w.Chat.store.SeqVector(ctx, conv.dagID)
		theirs, err2 := other.Chat.store.SeqVector(ctx, conv.dagID)
		if err1 != nil || err2 != nil {
			return errors.Join(err1, err2)
		}
		if theirs[self] >= mine[self] {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkLiveLatency (B2): one member sends messages at a steady pace;
// every other member records when each message is applied to its state.
// The same hosts also carry a raw gossipsub topic with the same payload
// size and pace: the floor. Reported: p50 and p99 for both, for 3 and 10
// nodes.
func BenchmarkLiveLatency(b *testing.B) {
	for _, size := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			msgs := 200
			if testing.Short() {
				msgs = 20
			}
			b.StopTimer()
			for range b.N {
				glitr, raw := liveLatency(b, size, msgs)
				b.ReportMetric(percentile(glitr, 50), "glitr-p50-ms")
				b.ReportMetric(percentile(glitr, 99), "glitr-p99-ms")
				b.ReportMetric(percentile(raw, 50), "raw-p50-ms")
				b.ReportMetric(percentile(raw, 99), "raw-p99-ms")
			}
		})
	}
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func liveLatency(b *testing.B, size, msgs int) (glitr, raw []float64) {
	ctx := context.Background()
	nodes := make([]*Node, size)
	for i := range nodes {
		nodes[i] = startTestNode(b, loopbackConfig(b))
	}
	sender := nodes[0]
	var members []string
	for _, n := range nodes[1:] {
		introduce(b, sender, n)
		members = append(members, accountOf(n))
	}
	// A full mesh of connections, as members of one conversation have.
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			testsupport.Connect(b, nodes[i].Host, nodes[j].Host)
		}
	}
	conv, err := sender.CreateConversation(ctx, "latency", members)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range nodes[1:] {
		waitForConversation(b, n, conv.ID)
	}
	// Raw gossipsub on the same hosts.
	rawTopics := make([]*pubsub.Topic, size)
	rawSubs := make([]*pubsub.Subscription, size)
	for i, n := range nodes {
		t, err := n.PubSub.Join("glitr-bench-raw")
		if err != nil {
			b.Fatal(err)
		}
		s, err := t.Subscribe()
		if err != nil {
			b.Fatal(err)
		}
		rawTopics[i], rawSubs[i] = t, s
	}
	testsupport.Eventually(b, 20*time.Second, "meshes", func() bool {
		return len(rawTopics[0].ListPeers()) == size-1 && topicPeers(sender, conv.ID) == size-1
	})
	time.Sleep(1500 * time.Millisecond) // let grafting settle

	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range nodes[1:] {
		wg.Go(func() { // Glitr: applied to this member's state
			seen := 0
			var cursor uint64
			for seen < msgs {
				evs, _, err := n.Chat.events.wait(ctx, cursor)
				if err != nil {
					return
				}
				cursor = evs[len(evs)-1].Seq
				now := time.Now()
				c, _ := n.Chat.conversation(conv.ID)
				c.mu.Lock()
				count := 0
				for _, v := range c.state.Page(c.state.Len(), c.state.Len()) {
					if strings.HasPrefix(v.Text, "latency ") {
						count++
					}
				}
				c.mu.Unlock()
				mu.Lock()
				for k := seen; k < count; k++ {
					glitr = append(glitr, float64(now.Sub(sentAt[k]).Microseconds())/1000)
				}
				mu.Unlock()
				seen = max(seen, count)
			}
		})
		wg.Go(func() { // raw gossipsub
			for k := 0; k < msgs; k++ {
				m, err := rawSubs[i+1].Next(ctx)
				if err != nil {
					return
				}
				now := time.Now()
				var idx int
				fmt.Sscanf(string(m.Data), "raw %d", &idx)
				mu.Lock()
				raw = append(raw, float64(now.Sub(sentAt[-1-idx]).Microseconds())/1000)
				mu.Unlock()
			}
		})
	}
	// Glitr's clock starts when the committed block is handed to gossipsub
	// (publish → applied, as for raw); the commit before it (two fsyncs, so
	// a crash never reuses a sequence number) is reported apart.
	var commitMs []float64
	var sendStart time.Time
	current := 0
	sender.Chat.onPublish = func(dag.Block) {
		mu.Lock()
		sentAt[current] = time.Now()
		commitMs = append(commitMs, float64(time.Since(sendStart).Microseconds())/1000)
		mu.Unlock()
	}
	pad := strings.Repeat("x", 250)
	for k := range msgs {
		mu.Lock()
		sentAt[-1-k] = time.Now()
		mu.Unlock()
		if err := rawTopics[0].Publish(ctx, []byte(fmt.Sprintf("raw %d %s", k, pad))); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		current, sendStart = k, time.Now()
		mu.Unlock()
		if _, err := sender.Send(ctx, conv.ID, fmt.Sprintf("latency %d %s", k, pad[:200]), ""); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("not every message arrived: glitr %d, raw %d of %d", len(glitr), len(raw), msgs*(size-1))
	}
	for _, n := range nodes {
		n.Close()
	}
	b.ReportMetric(percentile(commitMs, 50), "commit-p50-ms")
	return glitr, raw
}

func topicPeers(n *Node, id string) int {
	conv, err := n.Chat.conversation(id)
	if err != nil {
		return 0
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	name, _ := conv.sendTopic(time.Now())
	jt := conv.topics[name]
	if jt == nil {
		return 0
	}
	return len(jt.topic.ListPeers())
}

// BenchmarkHistoryStartup (B5 and memory): a data directory holding one
// conversation with N messages (10k for B5; run with -glitr.messages for
// other sizes) is started as a real `glitr run` process. Measured: time
// from exec to the API serving the conversation list with every message
// loaded, and the process's RSS once it is up.
func BenchmarkHistoryStartup(b *testing.B) {
	N := 10_000
	if testing.Short() {
		N = 1000
	} else if *benchMessages != 100_000 {
		N = *benchMessages
	}
	bin := filepath.Join(b.TempDir(), "glitr")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/node").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	b.StopTimer()
	for range b.N {
		a := startTestNode(b, loopbackConfig(b))
		peer := startTestNode(b, loopbackConfig(b))
		introduce(b, a, peer)
		conv, err := a.CreateConversation(context.Background(), "history", []string{accountOf(peer)})
		if err != nil {
			b.Fatal(err)
		}
		bulkWrite(b, a, conv.ID, N, "a message from the archive of a long conversation")
		dir := a.Dir.Path
		peer.Close()
		a.Close()

		b.StartTimer()
		start := time.Now()
		cmd := exec.Command(bin, "--data", dir, "--log-level", "error", "run")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			if n, ok := apiMessages(dir); ok && n >= N {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatal("the API did not serve the history within a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		rss := procRSS(cmd.Process.Pid)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		b.ReportMetric(float64(elapsed.Microseconds())/1000, "ms-to-list")
		b.ReportMetric(rss, "RSS-MB")
	}
}

// apiMessages asks a running node's API for its conversation list and
// returns the message count of the first conversation.
func apiMessages(dir string) (int, bool) {
	addr, err1 := os.ReadFile(filepath.Join(dir, APIAddrFile))
	tok, err2 := os.ReadFile(filepath.Join(dir, TokenFile))
	if err1 != nil || err2 != nil {
		return 0, false
	}
	req, _ := http.NewRequest("GET", "http://"+strings.TrimSpace(string(addr))+"/api/v1/conversations", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer res.Body.Close()
	var cs []webui.Conversation
	if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&cs) != nil || len(cs) == 0 {
		return 0, false
	}
	return cs[0].Messages, true
}

func procRSS(pid int) float64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
