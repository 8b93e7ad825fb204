package node

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
)

// loopbackConfig is a personal config that listens only on loopback with
// ephemeral ports, so tests never collide and never leave the machine.
func loopbackConfig(t testing.TB, listen ...string) Config {
	t.Helper()
	cfg, err := DefaultConfig(ProfilePersonal)
	if err != nil {
		t.Fatal(err)
	}
	if listen == nil {
		listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	}
	cfg.Network.ListenAddrs = listen
	cfg.Network.HolePunching = false
	cfg.DHT.Mode = "server"
	cfg.API.Listen = "127.0.0.1:0"
	return cfg
}

func newTestHost(t testing.TB, cfg Config) host.Host {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(cfg, sk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// startTestNode initializes a data directory with cfg and starts a node.
func startTestNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	dir, err := Init(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), dir, Options{Version: "test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, addrInfo(b)); err != nil {
		t.Fatalf("connect %s -> %s: %v", a.ID(), b.ID(), err)
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger shows node logs in verbose test output (GLITR_TEST_LOG=debug).
func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("GLITR_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
