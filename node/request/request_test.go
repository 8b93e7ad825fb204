package request

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
)

func TestExchangeAckAndLimits(t *testing.T) {
	ctx := context.Background()
	a, b := testsupport.Host(t), testsupport.Host(t)
	testsupport.Connect(t, a, b)
	var penalised atomic.Int32
	lim := NewLimiter(func(peer.ID, float64, string) { penalised.Add(1) })
	b.SetStreamHandler("/t/echo", func(s network.Stream) {
		req, ok := lim.Read(s, "echo", 5*time.Second)
		if !ok {
			return
		}
		switch string(req) {
		case "silent":
			_ = s.Close()
		case "huge":
			_, _ = s.Write(bytes.Repeat([]byte{1}, 200))
			_ = s.Close()
		default:
			Answer(s, string(req))
		}
	})
	b.SetStreamHandler("/t/ack", func(s network.Stream) {
		req, ok := lim.Read(s, "ack", 5*time.Second)
		if !ok {
			return
		}
		_, _ = s.Write([]byte{map[bool]byte{true: 1}[string(req) == "yes"]})
		_ = s.Close()
	})

	got, err := Exchange(ctx, a, b.ID(), "/t/echo", []byte("hi"), 100, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if err := cbor.Unmarshal(got, &s); err != nil || s != "hi" {
		t.Fatalf("reply %q (%v)", s, err)
	}
	if _, err := Exchange(ctx, a, b.ID(), "/t/echo", []byte("silent"), 100, 5*time.Second); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("an empty reply: %v, want ErrNoAnswer", err)
	}
	if _, err := Exchange(ctx, a, b.ID(), "/t/echo", []byte("huge"), 100, 5*time.Second); !errors.Is(err, ErrTooLong) {
		t.Fatal("a reply over the cap was taken")
	}
	if err := Ack(ctx, a, b.ID(), "/t/ack", []byte("yes"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := Ack(ctx, a, b.ID(), "/t/ack", []byte("no"), 5*time.Second); !errors.Is(err, ErrRefused) {
		t.Fatalf("got %v, want ErrRefused", err)
	}
	// That was the 5th request: the burst is spent, so the next is refused
	// (the stream is reset) and a is penalised.
	if err := Ack(ctx, a, b.ID(), "/t/ack", []byte("yes"), 5*time.Second); err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("a request over the budget: %v, want a reset", err)
	}
	testsupport.Eventually(t, 5*time.Second, "the penalty", func() bool { return penalised.Load() == 1 })
}

func TestLimiterTableIsBounded(t *testing.T) {
	l := NewLimiter(nil)
	for i := range maxPeers + 10 {
		l.Allow(peer.ID(string(rune(i))))
	}
	if len(l.limits) > maxPeers {
		t.Fatalf("%d peers tracked, at most %d", len(l.limits), maxPeers)
	}
}
