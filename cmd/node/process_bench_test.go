package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.Atoi(f[1])
			return float64(kb) / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
