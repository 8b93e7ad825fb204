package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

// TestSoak runs GLITR_SOAK_NODES (default 3) nodes as processes for
// GLITR_SOAK (a duration; unset: skipped), all in one group, while a
// random running node writes a message every 100 ms and a random node is
// restarted every 10 s (half of the time with SIGKILL). At the end, with
// every node running, it checks that every replica shows every message
// that was acknowledged exactly once and nothing else twice, that the
// replicas agree, and that the nodes' RSS shows no growth trend. `make
// soak` runs it for 10 minutes; `make test` for 1.
func TestSoak(t *testing.T) {
	d := os.Getenv("GLITR_SOAK")
	if d == "" {
		t.Skip("GLITR_SOAK is not set (make soak sets it)")
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur <= 0 {
		t.Fatalf("GLITR_SOAK=%q: want a duration", d)
	}
	n := 3
	if v := os.Getenv("GLITR_SOAK_NODES"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 2 || n > 5 {
			t.Fatalf("GLITR_SOAK_NODES=%q: want 2 to 5", v)
		}
	}
	s := newSoak(t, n)
	s.run(dur)
	s.check(2 * time.Minute)
}

type soakNode struct {
	data string
	proc *glitrProc
	rss  []float64 // samples, MB
	gor  []float64 // goroutine samples
}

type soak struct {
	t     *testing.T
	bin   string
	nodes []*soakNode
	conv  string
	rng   *rand.Rand
	// sent: texts whose send was acknowledged; pending: sends whose
	// answer was lost (a restart), retried with the same client id.
	sent    []string
	pending map[string]soakSend
	seq     int
	restart int
	kills   int
}

type soakSend struct {
	node     int
	clientID string
}

func newSoak(t *testing.T, n int) *soak {
	s := &soak{t: t, bin: glitrBinary(t), rng: rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano()))), pending: map[string]soakSend{}}
	for range n {
		data := initLoopback(t, s.bin)
		s.nodes = append(s.nodes, &soakNode{data: data, proc: startProc(t, s.bin, "--data", data, "--log-level", "warn", "run")})
	}
	cards := make([]string, n)
	for i, nd := range s.nodes {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"--data", nd.data, "card"}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		cards[i] = strings.TrimSpace(out.String())
	}
	for i, nd := range s.nodes {
		for j := range s.nodes {
			if i != j {
				if err := run(context.Background(), []string{"--data", nd.data, "contact", "add", cards[j]}, io.Discard, io.Discard); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	c := s.client(0)
	var cs []webui.Contact
	if err := c.get(context.Background(), "/api/v1/contacts", &cs); err != nil || len(cs) != n-1 {
		t.Fatalf("contacts %v: %v", cs, err)
	}
	var members []string
	for _, ct := range cs {
		members = append(members, ct.Account)
	}
	var conv webui.Conversation
	if err := c.post(context.Background(), "/api/v1/conversations", map[string]any{"title": "soak", "members": members}, &conv); err != nil {
		t.Fatal(err)
	}
	s.conv = conv.ID
	s.eventually(time.Minute, "every node in the group", func() bool {
		for i := range s.nodes {
			if _, err := s.messages(i); err != nil {
				return false
			}
		}
		return true
	})
	return s
}

func (s *soak) client(i int) *client {
	c, err := newClient(&globals{data: s.nodes[i].data})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func (s *soak) running() []int {
	var out []int
	for i, nd := range s.nodes {
		if nd.proc != nil {
			out = append(out, i)
		}
	}
	return out
}

func (s *soak) run(dur time.Duration) {
	deadline := time.Now().Add(dur)
	send := time.NewTicker(100 * time.Millisecond)
	defer send.Stop()
	nextRestart := time.Now().Add(10 * time.Second)
	nextSample := time.Now()
	type down struct {
		node int
		at   time.Time
	}
	var downs []down
	for time.Now().Before(deadline) {
		<-send.C
		now := time.Now()
		for len(downs) > 0 && now.After(downs[0].at) {
			i := downs[0].node
			downs = downs[1:]
			s.nodes[i].proc = startProc(s.t, s.bin, "--data", s.nodes[i].data, "--log-level", "warn", "run")
		}
		if now.After(nextRestart) && len(s.running()) == len(s.nodes) {
			nextRestart = now.Add(10 * time.Second)
			i := s.rng.IntN(len(s.nodes))
			s.stop(i, s.rng.IntN(2) == 0)
			downs = append(downs, down{i, now.Add(time.Second + time.Duration(s.rng.IntN(2000))*time.Millisecond)})
		}
		if now.After(nextSample) {
			nextSample = now.Add(5 * time.Second)
			for _, i := range s.running() {
				if rss, _, err := procMemMB(s.nodes[i].proc.cmd.Process.Pid); err == nil {
					s.nodes[i].rss = append(s.nodes[i].rss, rss)
				}
				var st webui.Status
				if err := s.client(i).get(context.Background(), "/api/v1/status", &st); err == nil {
					s.nodes[i].gor = append(s.nodes[i].gor, float64(st.Goroutines))
				}
			}
		}
		s.sendOne()
	}
	for _, d := range downs {
		s.nodes[d.node].proc = startProc(s.t, s.bin, "--data", s.nodes[d.node].data, "--log-level", "warn", "run")
	}
	// Whatever is pending goes out now, every node being up.
	for text, p := range s.pending {
		s.post(p.node, text, p.clientID)
	}
	if len(s.pending) > 0 {
		s.t.Fatalf("%d sends never acknowledged", len(s.pending))
	}
	s.t.Logf("soak: %d messages acknowledged, %d restarts (%d with SIGKILL)", len(s.sent), s.restart, s.kills)
}

// stop ends node i: SIGKILL or SIGTERM.
func (s *soak) stop(i int, kill bool) {
	p := s.nodes[i].proc
	s.nodes[i].proc = nil
	s.restart++
	if kill {
		s.kills++
		_ = p.cmd.Process.Kill()
	} else {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("node %d did not stop within 10 s", i)
	}
}

func (s *soak) sendOne() {
	up := s.running()
	if len(up) == 0 {
		return
	}
	i := up[s.rng.IntN(len(up))]
	s.seq++
	text := fmt.Sprintf("soak %d from %d", s.seq, i)
	s.post(i, text, fmt.Sprintf("soak-%08d-%d-%s", s.seq, i, strings.Repeat("x", 4)))
}

// post sends text from node i; a send whose answer is lost stays pending
// under its client id, and goes again with it.
func (s *soak) post(i int, text, clientID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.client(i).post(ctx, "/api/v1/conversations/"+url.PathEscape(s.conv)+"/messages", map[string]string{"text": text, "clientId": clientID}, nil)
	if err != nil {
		s.pending[text] = soakSend{i, clientID}
		return
	}
	delete(s.pending, text)
	s.sent = append(s.sent, text)
}

func (s *soak) messages(i int) ([]webui.Message, error) {
	c := s.client(i)
	var all []webui.Message
	q := ""
	for {
		var page webui.MessagePage
		if err := c.get(context.Background(), "/api/v1/conversations/"+url.PathEscape(s.conv)+"/messages?limit=500"+q, &page); err != nil {
			return nil, err
		}
		all = append(page.Messages, all...)
		if len(page.Messages) == 0 || page.Before == 0 {
			return all, nil
		}
		q = "&before=" + url.QueryEscape(page.Messages[0].ID)
	}
}

func (s *soak) eventually(d time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (s *soak) check(wait time.Duration) {
	want := slices.Clone(s.sent)
	slices.Sort(want)
	var lastErr string
	deadline := time.Now().Add(wait)
	for {
		ok := true
		var ids [][]string
		for i := range s.nodes {
			ms, err := s.messages(i)
			if err != nil {
				ok, lastErr = false, fmt.Sprintf("node %d: %v", i, err)
				break
			}
			var texts, mids []string
			for _, m := range ms {
				texts = append(texts, m.Text)
				mids = append(mids, m.ID)
			}
			slices.Sort(texts)
			if !slices.Equal(texts, want) {
				ok = false
				lastErr = fmt.Sprintf("node %d shows %d messages, %d acknowledged; %s", i, len(texts), len(want), diff(texts, want))
				break
			}
			ids = append(ids, mids)
		}
		if ok {
			for i := 1; i < len(ids); i++ {
				if !slices.Equal(ids[0], ids[i]) {
					ok, lastErr = false, fmt.Sprintf("nodes 0 and %d order the messages differently", i)
				}
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("replicas did not converge within %s: %s", wait, lastErr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for i, nd := range s.nodes {
		if err := trend(nd.rss, 20); err != nil {
			s.t.Errorf("node %d RSS (MB): %v (samples %v)", i, err, nd.rss)
		}
		if err := trend(nd.gor, 50); err != nil {
			s.t.Errorf("node %d goroutines: %v (samples %v)", i, err, nd.gor)
		}
	}
}

// diff names the first text missing and the first duplicated or unknown.
func diff(got, want []string) string {
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	for _, w := range want {
		if count[w] == 0 {
			return fmt.Sprintf("missing %q", w)
		}
		count[w]--
	}
	for g, c := range count {
		if c > 0 {
			return fmt.Sprintf("extra or duplicated %q", g)
		}
	}
	return "same"
}

// trend fails when the last third of the samples averages more than the
// middle third by half and slack: growth, not the noise of restarts.
func trend(samples []float64, slack float64) error {
	if len(samples) < 6 {
		return nil
	}
	third := len(samples) / 3
	mean := func(xs []float64) float64 {
		var s float64
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	mid, last := mean(samples[third:2*third]), mean(samples[2*third:])
	if last > mid*1.5+slack {
		return fmt.Errorf("grew from %.0f to %.0f", mid, last)
	}
	return nil
}
