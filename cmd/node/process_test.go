package main

// Tests of the glitr process a user starts: the real binary (built once,
// without the race detector), its exit codes, its output and its timing.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node"
	"github.com/glitr-chat/glitr/webui"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// glitrBinary builds cmd/node once per test run, as the Makefile does.
func glitrBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "glitr-bin"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "glitr")
		// As `make build` makes it: without cgo, pebble's memtables are
		// in the Go heap, which the memory figures depend on.
		build := exec.Command("go", "build", "-trimpath", "-o", binPath, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// initLoopback initializes a personal data directory whose every port is
// chosen by the kernel (loopback only), and returns its path.
func initLoopback(t testing.TB, bin string, extra ...string) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "node")
	args := append([]string{"--data", data, "init", "--loopback", "--api", "127.0.0.1:0"}, extra...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	editConfig(t, data, func(c *node.Config) {
		c.Network.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	})
	return data
}

func editConfig(t testing.TB, data string, edit func(*node.Config)) {
	t.Helper()
	path := filepath.Join(data, node.ConfigFile)
	cfg, err := node.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// glitrProc is a running `glitr run` or `glitr relay`.
type glitrProc struct {
	cmd    *exec.Cmd
	banner []string // stdout up to and including the login URL
	stderr *testsupport.Buffer
	done   chan struct{}
}

// startProc starts the binary and waits for the banner's login URL line.
func startProc(t testing.TB, bin string, args ...string) *glitrProc {
	t.Helper()
	p := &glitrProc{cmd: exec.Command(bin, args...), stderr: &testsupport.Buffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_ = p.cmd.Wait()
		close(p.done)
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				<-p.done
				t.Fatalf("glitr %s exited (%v) before printing its login URL:\n%s", strings.Join(args, " "), p.cmd.ProcessState, p.stderr)
			}
			p.banner = append(p.banner, l)
			if strings.HasPrefix(l, "Open the browser UI: ") {
				go func() { // keep draining
					for range lines {
					}
				}()
				return p
			}
		case <-timeout:
			t.Fatalf("no login URL within 20 s; stdout so far %q; stderr:\n%s", p.banner, p.stderr)
		}
	}
}

// status asks a running node's API for its status, as the CLI does.
func status(data string) (webui.Status, error) {
	var st webui.Status
	err := run(context.Background(), []string{"--data", data, "status", "--json"}, &jsonSink{&st}, io.Discard)
	return st, err
}

type jsonSink struct{ v any }

func (j *jsonSink) Write(p []byte) (int, error) { return len(p), json.Unmarshal(p, j.v) }

// `glitr run` prints its peer ID, addresses and login URL; `status`, `id`
// and `version` reach it; SIGINT and SIGTERM stop it, with a peer
// connected, within the 2 s budget, releasing the data directory.
func TestProcessRunBannerAndSignalShutdown(t *testing.T) {
	bin := glitrBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			data := initLoopback(t, bin)
			p := startProc(t, bin, "--data", data, "--log-format", "json", "run")
			token, err := node.DataDir{Path: data}.Token()
			if err != nil {
				t.Fatal(err)
			}
			st, err := status(data)
			if err != nil {
				t.Fatal(err)
			}
			id := st.PeerID
			if p.banner[0] != "Glitr personal node "+id {
				t.Fatalf("banner starts %q, want the peer ID %s", p.banner[0], id)
			}
			var addrs int
			for _, l := range p.banner {
				if strings.HasPrefix(strings.TrimSpace(l), "/ip4/127.0.0.1/") && strings.HasSuffix(l, "/p2p/"+id) {
					addrs++
				}
			}
			if addrs < 2 {
				t.Fatalf("banner lists %d addresses: %q", addrs, p.banner)
			}
			apiAddr, err := node.DataDir{Path: data}.APIAddr()
			if err != nil {
				t.Fatal(err)
			}
			login := strings.TrimPrefix(p.banner[len(p.banner)-1], "Open the browser UI: ")
			if login != webui.LoginURL(apiAddr, token) || !strings.HasPrefix(apiAddr, "127.0.0.1:") {
				t.Fatalf("login URL %q, want the token on the API's loopback address %s", login, apiAddr)
			}
			if res, err := http.Get(login); err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("login URL: %v %v", res, err)
			}
			var out bytes.Buffer
			if err := run(context.Background(), []string{"--data", data, "id"}, &out, io.Discard); err != nil || strings.TrimSpace(out.String()) != id {
				t.Fatalf("glitr id = %q, %v", out.String(), err)
			}
			out.Reset()
			if err := run(context.Background(), []string{"--data", data, "version"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "running node: ") {
				t.Fatalf("glitr version = %q, %v", out.String(), err)
			}

			// A peer, so the shutdown has connections to close.
			peerData := initLoopback(t, bin, "--bootstrap", st.Addrs[0])
			startProc(t, bin, "--data", peerData, "--log-level", "error", "run")
			deadline := time.Now().Add(15 * time.Second)
			for {
				st, err := status(data)
				if err == nil && len(st.ConnectedPeers) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the peer did not connect: %+v %v", st, err)
				}
				time.Sleep(50 * time.Millisecond)
			}

			start := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				t.Fatalf("still running 5 s after %v", sig)
			}
			took := time.Since(start)
			t.Logf("%v: exited in %v", sig, took.Round(time.Millisecond))
			if took > 2*time.Second {
				t.Fatalf("shutdown after %v took %v, budget 2 s", sig, took)
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit code %d after %v; stderr:\n%s", code, sig, p.stderr)
			}
			if _, err := os.Stat(filepath.Join(data, node.APIAddrFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("api.addr left behind: %v", err)
			}
			lock, err := node.DataDir{Path: data}.Lock()
			if err != nil {
				t.Fatalf("data directory still locked: %v", err)
			}
			lock.Release()
			// --log-format json: every line of stderr is a JSON record.
			var msgs []string
			for _, l := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
				var rec struct{ Level, Msg string }
				if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Level == "" {
					t.Fatalf("log line is not slog JSON: %q", l)
				}
				msgs = append(msgs, rec.Msg)
			}
			for _, want := range []string{"node started", "shutting down"} {
				if !strings.Contains(strings.Join(msgs, "\n"), want) {
					t.Fatalf("logs %q lack %q", msgs, want)
				}
			}
		})
	}
}

// --log-level filters, --log-format text writes slog text; bad values are
// refused with the flag named and exit code 1.
func TestProcessLogFlags(t *testing.T) {
	bin := glitrBinary(t)
	data := initLoopback(t, bin)
	p := startProc(t, bin, "--data", data, "--log-level", "warn", "run")
	_ = p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	if s := p.stderr.String(); strings.Contains(s, "node started") {
		t.Fatalf("--log-level warn printed info records:\n%s", s)
	}
	p = startProc(t, bin, "--data", data, "--log-level", "debug", "--log-format", "text", "run")
	_ = p.cmd.Process.Signal(os.Interrupt)
	<-p.done
	if s := p.stderr.String(); !strings.Contains(s, "level=INFO msg=\"node started\"") {
		t.Fatalf("text logs lack the start record:\n%s", s)
	}
	for _, c := range []struct{ flag, value string }{{"--log-level", "loud"}, {"--log-format", "xml"}} {
		cmd := exec.Command(bin, "--data", data, c.flag, c.value, "run")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), c.flag) {
			t.Fatalf("%s %s: %v, %q", c.flag, c.value, err, out)
		}
	}
}

// Bad input stops the process with a non-zero exit and an error naming
// the field or file, and leaves the data directory as it was.
func TestProcessRefusesBadInput(t *testing.T) {
	bin := glitrBinary(t)
	cases := []struct {
		name  string
		setup func(t *testing.T, data string)
		want  []string
	}{
		{"unknown config field", func(t *testing.T, data string) {
			path := filepath.Join(data, node.ConfigFile)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, bytes.Replace(b, []byte(`"network": {`), []byte(`"network": {"listenAdrs": [],`), 1), 0o600)
		}, []string{node.ConfigFile, `unknown field "listenAdrs"`}},
		{"invalid multiaddr", func(t *testing.T, data string) {
			editConfigRaw(t, data, func(c *node.Config) { c.Network.ListenAddrs[1] = "/ip4/127.0.0.1/tcp/http" })
		}, []string{node.ConfigFile, "network.listenAddrs[1]"}},
		{"invalid bootstrap peer", func(t *testing.T, data string) {
			editConfigRaw(t, data, func(c *node.Config) { c.Network.BootstrapPeers = []string{"/ip4/127.0.0.1/tcp/4001"} })
		}, []string{"network.bootstrapPeers[0]"}},
		{"libp2p port in use", func(t *testing.T, data string) {
			ln := listenTCP(t)
			editConfig(t, data, func(c *node.Config) { c.Network.ListenAddrs[1] = "/ip4/127.0.0.1/tcp/" + portString(ln.Addr()) })
		}, []string{"network.listenAddrs[1]", "in use"}},
		{"API port in use", func(t *testing.T, data string) {
			ln := listenTCP(t)
			editConfig(t, data, func(c *node.Config) { c.API.Listen = ln.Addr().String() })
		}, []string{"api.listen", "in use"}},
		{"corrupt peer key", func(t *testing.T, data string) {
			os.WriteFile(filepath.Join(data, node.PeerKeyFile), []byte("garbage"), 0o600)
		}, []string{node.PeerKeyFile, "corrupt"}},
		{"missing peer key", func(t *testing.T, data string) {
			os.Remove(filepath.Join(data, node.PeerKeyFile))
		}, []string{node.PeerKeyFile, "no such file"}},
		{"data directory in use by another process", func(t *testing.T, data string) {
			startProc(t, bin, "--data", data, "--log-level", "error", "run")
		}, []string{"$DATA", "in use by another glitr process"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := initLoopback(t, bin)
			c.setup(t, data)
			before := snapshot(t, data)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "--data", data, "run").CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("run: %v, want a non-zero exit\n%s", err, out)
			}
			for _, w := range c.want {
				w = strings.ReplaceAll(w, "$DATA", data)
				if !strings.Contains(string(out), w) {
					t.Fatalf("output does not name %q:\n%s", w, out)
				}
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if strings.Contains(string(out), "panic") || !strings.HasPrefix(lines[len(lines)-1], "glitr: ") {
				t.Fatalf("want an error line \"glitr: ...\", got:\n%s", out)
			}
			if after := snapshot(t, data); after != before {
				t.Fatalf("the data directory changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	t.Run("the first process keeps running", func(t *testing.T) {
		data := initLoopback(t, bin)
		startProc(t, bin, "--data", data, "--log-level", "error", "run")
		if out, err := exec.Command(bin, "--data", data, "run").CombinedOutput(); err == nil {
			t.Fatalf("second process started: %s", out)
		}
		if _, err := status(data); err != nil {
			t.Fatalf("first node after the refused second one: %v", err)
		}
	})
}

// editConfigRaw edits the config without validating the result.
func editConfigRaw(t *testing.T, data string, edit func(*node.Config)) {
	t.Helper()
	path := filepath.Join(data, node.ConfigFile)
	cfg, err := node.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portString(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// snapshot summarizes the files a refused start must not touch: config,
// peer key and token. (The store is pebble's to manage: opening it may
// roll its log.)
func snapshot(t *testing.T, data string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{node.ConfigFile, node.PeerKeyFile, node.TokenFile} {
		c, err := os.ReadFile(filepath.Join(data, f))
		fmt.Fprintf(&b, "%s=%x/%v ", f, c, err != nil)
	}
	return b.String()
}

// glitr init: --data, else $GLITR_DATA, else "glitr" in the user config
// directory; both profiles; the key is 0600; the store exists; a second
// init changes nothing.
func TestInitDataDirectoryChoices(t *testing.T) {
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("GLITR_DATA", "")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"init"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	def := filepath.Join(home, "config", "glitr")
	checkDataDir(t, def, node.ProfilePersonal)

	env := filepath.Join(home, "from-env")
	t.Setenv("GLITR_DATA", env)
	if err := run(context.Background(), []string{"init", "--profile", "relay"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	checkDataDir(t, env, node.ProfileRelay)

	flagDir := filepath.Join(home, "from-flag")
	if err := run(context.Background(), []string{"--data", flagDir, "init"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	checkDataDir(t, flagDir, node.ProfilePersonal)
	if _, err := os.Stat(filepath.Join(env, node.ConfigFile)); err != nil {
		t.Fatal(err)
	}

	key, _ := os.ReadFile(filepath.Join(flagDir, node.PeerKeyFile))
	err := run(context.Background(), []string{"--data", flagDir, "init", "--profile", "relay"}, &out, io.Discard)
	if !errors.Is(err, node.ErrAlreadyInit) {
		t.Fatalf("second init = %v, want ErrAlreadyInit", err)
	}
	if again, _ := os.ReadFile(filepath.Join(flagDir, node.PeerKeyFile)); !bytes.Equal(key, again) {
		t.Fatal("second init replaced the peer key")
	}
	checkDataDir(t, flagDir, node.ProfilePersonal)
	if err := run(context.Background(), []string{"--data", flagDir, "init", "--if-missing"}, &out, io.Discard); err != nil {
		t.Fatalf("init --if-missing on an initialized directory: %v", err)
	}
}

func checkDataDir(t *testing.T, path, profile string) {
	t.Helper()
	dir, err := node.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dir.Config()
	if err != nil || cfg.Profile != profile {
		t.Fatalf("%s: config %q, %v; want profile %s", path, cfg.Profile, err, profile)
	}
	fi, err := os.Stat(filepath.Join(path, node.PeerKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: peer key %v, mode %v", path, err, fi.Mode().Perm())
	}
	if _, err := dir.PeerKey(); err != nil {
		t.Fatal(err)
	}
	if err := testsupport.PebbleStore(dir.StorePath()); err != nil {
		t.Fatalf("%s: no pebble store: %v", path, err)
	}
}

// `glitr relay`: a relay data directory starts only with `relay`, serves
// Prometheus metrics with libp2p's collectors, takes a personal node that
// bootstraps through it, and stops on SIGTERM within the budget.
func TestProcessRelay(t *testing.T) {
	bin := glitrBinary(t)
	data := filepath.Join(t.TempDir(), "relay")
	if out, err := exec.Command(bin, "--data", data, "init", "--profile", "relay", "--loopback", "--api", "127.0.0.1:0").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	editConfig(t, data, func(c *node.Config) {
		c.Network.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
		c.Metrics.Listen = "127.0.0.1:0"
	})
	if out, err := exec.Command(bin, "--data", data, "run").CombinedOutput(); err == nil || !strings.Contains(string(out), "glitr relay") {
		t.Fatalf("run on a relay directory: %v\n%s", err, out)
	}
	p := startProc(t, bin, "--data", data, "--log-format", "json", "relay")
	if !strings.HasPrefix(p.banner[0], "Glitr relay node ") {
		t.Fatalf("banner %q", p.banner)
	}
	// The banner on stdout names the endpoint; the JSON log line on stderr
	// may still be on its way when the banner's last line arrives.
	var metrics string
	for _, l := range p.banner {
		if u, ok := strings.CutPrefix(l, "Metrics: "); ok {
			metrics = u
		}
	}
	if !strings.HasPrefix(metrics, "http://127.0.0.1:") {
		t.Fatalf("banner names no metrics endpoint on loopback: %q", p.banner)
	}
	st, err := status(data)
	if err != nil {
		t.Fatal(err)
	}
	peerData := initLoopback(t, bin, "--bootstrap", st.Addrs[0], "--relay", st.Addrs[0])
	startProc(t, bin, "--data", peerData, "--log-level", "error", "run")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err = status(data); err == nil && len(st.ConnectedPeers) == 1 && st.Reachability == "Public" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay status %+v, %v; want one peer and reachability Public", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err := http.Get(metrics)
	if err != nil {
		t.Fatalf("metrics endpoint %q: %v", metrics, err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"glitr_connected_peers 1", "libp2p_relaysvc_", "libp2p_rcmgr_"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if took := time.Since(start); took > 2*time.Second || p.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("relay stopped in %v with exit code %d", took, p.cmd.ProcessState.ExitCode())
	}
}
