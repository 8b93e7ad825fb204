package main

import (
	"bufio"
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

// buildBinary compiles glitr once per benchmark run, so the figures are
// those of the real process a user starts.
func buildBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "glitr")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd   *exec.Cmd
	data  string
	addrs []string
}

func initNode(b *testing.B, bin, data string, extra ...string) {
	b.Helper()
	args := append([]string{"--data", data, "init", "--api", "127.0.0.1:0"}, extra...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		b.Fatalf("init: %v\n%s", err, out)
	}
	// Loopback only: benchmarks never leave the machine.
	cfg := filepath.Join(data, "config.json")
	raw, _ := os.ReadFile(cfg)
	s := strings.ReplaceAll(string(raw), "/ip4/0.0.0.0/", "/ip4/127.0.0.1/")
	var kept []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.Contains(line, "/ip6/::/") {
			kept = append(kept, line)
		}
	}
	s = strings.Join(kept, "\n")
	s = strings.Replace(s, "\"/ip4/127.0.0.1/tcp/", "\"/ip4/127.0.0.1/tcp/", 1)
	// the line before a removed ip6 entry may now end in a comma
	s = strings.ReplaceAll(s, ",\n    ]", "\n    ]")
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		b.Fatal(err)
	}
}

// startNode runs `glitr run` and returns once it printed its banner.
func startNode(b *testing.B, bin, data string) *proc {
	b.Helper()
	cmd := exec.Command(bin, "--data", data, "--log-level", "warn", "run")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &proc{cmd: cmd, data: data}
	b.Cleanup(func() { p.stop() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "/ip4/127.0.0.1/") {
			p.addrs = append(p.addrs, line)
		}
		if strings.HasPrefix(line, "Open the browser UI") {
			break
		}
	}
	go func() { // keep draining
		for sc.Scan() {
		}
	}()
	return p
}

func (p *proc) stop() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		_ = p.cmd.Wait()
	}
}

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

// BenchmarkStartupToStatus: `glitr run` on a fresh data directory until
// /api/v1/status answers. Goal < 300 ms.
func BenchmarkStartupToStatus(b *testing.B) {
	bin := buildBinary(b)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		data := filepath.Join(b.TempDir(), fmt.Sprint("n", i))
		initNode(b, bin, data)
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
		total += time.Since(start)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-status")
}

// BenchmarkIdleRSS: resident memory of a personal node after it has been
// connected to 3 peers for 60 s (2 s under -short). Goal < 80 MB.
func BenchmarkIdleRSS(b *testing.B) {
	bin := buildBinary(b)
	idle := 60 * time.Second
	if testing.Short() {
		idle = 2 * time.Second
	}
	for b.Loop() {
		root := b.TempDir()
		initNode(b, bin, filepath.Join(root, "main"))
		p := startNode(b, bin, filepath.Join(root, "main"))
		for i := range 3 {
			data := filepath.Join(root, fmt.Sprint("peer", i))
			initNode(b, bin, data, "--bootstrap", p.addrs[0])
			startNode(b, bin, data)
		}
		time.Sleep(idle)
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
