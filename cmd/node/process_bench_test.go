package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

func statusOK(data string) bool {
	addr, err1 := os.ReadFile(filepath.Join(data, "api.addr"))
	tok, err2 := os.ReadFile(filepath.Join(data, "api.token"))
	if err1 != nil || err2 != nil {
		return false
	}
	req, _ := http.NewRequest("GET", "http://"+strings.TrimSpace(string(addr))+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// BenchmarkStartupToStatus: `glitr run` (the real binary) on a fresh data
// directory until /api/v1/status answers. Goal < 300 ms.
func BenchmarkStartupToStatus(b *testing.B) {
	bin := glitrBinary(b)
	var total, slowest time.Duration
	fastest := time.Hour
	for i := 0; b.Loop(); i++ {
		data := initLoopback(b, bin)
		start := time.Now()
		cmd := exec.Command(bin, "--data", data, "--log-level", "warn", "run")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for !statusOK(data) {
			if time.Since(start) > 10*time.Second {
				b.Fatal("node did not answer within 10 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		took := time.Since(start)
		total += took
		slowest, fastest = max(slowest, took), min(fastest, took)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-status")
	b.ReportMetric(float64(fastest.Milliseconds()), "min-ms")
	b.ReportMetric(float64(slowest.Milliseconds()), "max-ms")
}

// BenchmarkIdleRSS: resident memory of a personal node (the real binary)
// after it has been connected to 3 peers for 60 s (2 s under -short). Goal
// < 80 MB. The peers must still be connected when the figure is taken.
func BenchmarkIdleRSS(b *testing.B) {
	bin := glitrBinary(b)
	idle := 60 * time.Second
	if testing.Short() {
		idle = 2 * time.Second
	}
	for b.Loop() {
		mainData := initLoopback(b, bin)
		p := startProc(b, bin, "--data", mainData, "--log-level", "warn", "run")
		st, err := status(mainData)
		if err != nil {
			b.Fatal(err)
		}
		for range 3 {
			peer := initLoopback(b, bin, "--bootstrap", st.Addrs[0])
			startProc(b, bin, "--data", peer, "--log-level", "warn", "run")
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err = status(mainData)
			if err == nil && len(st.ConnectedPeers) == 3 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("3 peers did not connect: %v %v", st.ConnectedPeers, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(idle)
		if st, err = status(mainData); err != nil || len(st.ConnectedPeers) != 3 {
			b.Fatalf("after %v idle: connected to %v (%v), want 3 peers", idle, st.ConnectedPeers, err)
		}
		rss, err := rssMB(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rss, "RSS-MB")
	}
}

func rssMB(pid int) (float64, error) {
	rss, _, err := procMemMB(pid)
	return rss, err
}

// BenchmarkSendRSS: resident memory of a personal node (the real binary)
// that sends 20,000 messages through its HTTP API to a contact's node
// (1,000 under -short), one request at a time as the browser does.
// Reported: RSS right after the sends and its peak (VmHWM) for the sender,
// the receiver's RSS, and the API sends per second.
func BenchmarkSendRSS(b *testing.B) {
	bin := glitrBinary(b)
	n := 20000
	if testing.Short() {
		n = 1000
	}
	for b.Loop() {
		sender, receiver := initLoopback(b, bin), initLoopback(b, bin)
		ps := startProc(b, bin, "--data", sender, "--log-level", "warn", "run")
		pr := startProc(b, bin, "--data", receiver, "--log-level", "warn", "run")
		card := func(data string) string {
			var out bytes.Buffer
			if err := run(context.Background(), []string{"--data", data, "card"}, &out, io.Discard); err != nil {
				b.Fatal(err)
			}
			return strings.TrimSpace(out.String())
		}
		if err := run(context.Background(), []string{"--data", sender, "contact", "add", card(receiver)}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
		if err := run(context.Background(), []string{"--data", receiver, "contact", "add", card(sender)}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
		c, err := newClient(&globals{data: sender})
		if err != nil {
			b.Fatal(err)
		}
		var cs []webui.Contact
		if err := c.get(context.Background(), "/api/v1/contacts", &cs); err != nil || len(cs) != 1 {
			b.Fatalf("contacts %v: %v", cs, err)
		}
		var conv webui.Conversation
		if err := c.post(context.Background(), "/api/v1/conversations", map[string]any{"members": []string{cs[0].Account}}, &conv); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := range n {
			text := fmt.Sprintf("message %d with some text to make it realistic, about eighty bytes long.", i)
			if err := c.post(context.Background(), "/api/v1/conversations/"+conv.ID+"/messages", map[string]string{"text": text}, nil); err != nil {
				b.Fatal(err)
			}
		}
		took := time.Since(start)
		rss, hwm, err := procMemMB(ps.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rrss, _, err := procMemMB(pr.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "sends/s")
		b.ReportMetric(rss, "sender-RSS-MB")
		b.ReportMetric(hwm, "sender-peak-MB")
		b.ReportMetric(rrss, "receiver-RSS-MB")
	}
}

// procMemMB reads a process's VmRSS and VmHWM (its peak RSS) in MB.
func procMemMB(pid int) (rss, hwm float64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 2 || (f[0] != "VmRSS:" && f[0] != "VmHWM:") {
			continue
		}
		kb, err := strconv.Atoi(f[1])
		if err != nil {
			return 0, 0, err
		}
		if f[0] == "VmRSS:" {
			rss = float64(kb) / 1024
		} else {
			hwm = float64(kb) / 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return rss, hwm, nil
}
