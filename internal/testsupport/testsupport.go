// Package testsupport holds what the tests of several packages share:
// waiting for a condition, a logger that writes to the test's log, and
// libp2p hosts on loopback, writing sync frames. Of Glitr's packages it
// imports only protocol (which imports none), so that any package's
// internal tests can use it without an import cycle; helpers that need a
// node (a node's config, a started node) stay in node's tests.
package testsupport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/protocol"
)

// Eventually polls cond every 20 ms until it holds, and fails the test
// naming what it waited for when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logger writes to the test's log: warnings and errors, or everything with
// GLITR_TEST_LOG=debug (shown with go test -v, or when the test fails).
func Logger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("GLITR_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Host starts a libp2p host listening on loopback QUIC and TCP with
// ephemeral ports (so tests never collide and never leave the machine),
// with libp2p's default transports, security and muxers and extra options
// after them; it is closed when the test ends.
func Host(t testing.TB, opts ...libp2p.Option) host.Host {
	t.Helper()
	all := append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableMetrics(),
	}, opts...)
	h, err := libp2p.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// AddrInfo is h's peer id and listen addresses.
func AddrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

// Connect connects a to b within 10 s or fails the test.
func Connect(t testing.TB, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, AddrInfo(b)); err != nil {
		t.Fatalf("connect %s -> %s: %v", a.ID(), b.ID(), err)
	}
}

// WriteFrames writes sync frames to s, flushing after each (a test peer
// that speaks the sync protocol by hand).
func WriteFrames(s network.Stream, frames ...protocol.Frame) error {
	bw := bufio.NewWriterSize(s, 64<<10)
	fw := protocol.NewFrameWriter(bw)
	for _, f := range frames {
		if _, err := fw.Write(f); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// Buffer collects the output of a process or a goroutine; it is safe for
// concurrent use (a bytes.Buffer is not).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// PebbleStore checks that dir holds a pebble database (its manifest).
func PebbleStore(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "MANIFEST-") {
			return nil
		}
	}
	return fmt.Errorf("%s: no MANIFEST in %d entries", dir, len(entries))
}
