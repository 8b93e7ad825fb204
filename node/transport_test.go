package node

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/glitr-chat/glitr/internal/testsupport"
)

const echoProto = "/glitr/test-echo/1.0.0"

func echoHandler(s network.Stream) {
	defer s.Close()
	_, _ = io.Copy(s, io.LimitReader(s, 1<<20))
}

// exchange opens a stream from a to b, sends msg and expects it back.
func exchange(ctx context.Context, t *testing.T, s network.Stream, msg string) {
	t.Helper()
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write([]byte(msg + "\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	got, err := bufio.NewReader(s).ReadString('\n')
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if strings.TrimSpace(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// Each transport alone: two hosts that share only that transport connect
// and exchange a stream over it.
func TestEachTransportCarriesAStream(t *testing.T) {
	cases := []struct {
		name   string
		listen string
		proto  int // multiaddr protocol code the connection must use
	}{
		{"QUIC", "/ip4/127.0.0.1/udp/0/quic-v1", ma.P_QUIC_V1},
		{"TCP", "/ip4/127.0.0.1/tcp/0", ma.P_TCP},
		{"WebRTC-direct", "/ip4/127.0.0.1/udp/0/webrtc-direct", ma.P_WEBRTC_DIRECT},
		{"WebTransport", "/ip4/127.0.0.1/udp/0/quic-v1/webtransport", ma.P_WEBTRANSPORT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newTestHost(t, loopbackConfig(t, c.listen))
			b := newTestHost(t, loopbackConfig(t, c.listen))
			b.SetStreamHandler(echoProto, echoHandler)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := a.Connect(ctx, addrInfo(b)); err != nil {
				t.Fatalf("connect over %s: %v", c.name, err)
			}
			conns := a.Network().ConnsToPeer(b.ID())
			if len(conns) == 0 {
				t.Fatal("no connection")
			}
			if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(c.proto); err != nil {
				t.Fatalf("connection %s does not use %s", conns[0].RemoteMultiaddr(), c.name)
			}
			s, err := a.NewStream(ctx, b.ID(), echoProto)
			if err != nil {
				t.Fatalf("open stream: %v", err)
			}
			exchange(ctx, t, s, "hello over "+c.name)
		})
	}
}

// A and B can reach only the relay R: A has no listen address at all, so
// the only way in is the circuit through R.
func TestRelayCircuitConnectsUnreachablePeers(t *testing.T) {
	rcfg, err := DefaultConfig(ProfileRelay)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	r := newTestHost(t, rcfg)
	relayAddr := r.Addrs()[0].String() + "/p2p/" + r.ID().String()

	acfg := loopbackConfig(t)
	acfg.Network.ListenAddrs = nil
	acfg.Network.Relays = []string{relayAddr}
	acfg.Network.Reachability = "private"
	a := newTestHost(t, acfg)
	a.SetStreamHandler(echoProto, echoHandler)

	b := newTestHost(t, loopbackConfig(t))
	circuit, err := ma.NewMultiaddr(relayAddr + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A takes its reservation in the background; retry until it has.
	var connErr error
	testsupport.Eventually(t, 20*time.Second, "a connection through the relay", func() bool {
		b.Network().ClosePeer(a.ID())
		b.Peerstore().ClearAddrs(a.ID())
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		connErr = b.Connect(dctx, peer.AddrInfo{ID: a.ID(), Addrs: []ma.Multiaddr{circuit}})
		return connErr == nil
	})
	for _, c := range b.Network().ConnsToPeer(a.ID()) {
		if !c.Stat().Limited {
			t.Fatalf("unexpected direct connection %s: A has no listen address", c.RemoteMultiaddr())
		}
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil {
			t.Fatalf("connection %s is not a circuit", c.RemoteMultiaddr())
		}
		// The relay carries a session it cannot read: A and B ran their
		// own handshake through the circuit (Noise, the only security
		// transport NewHost configures), so B holds A's own key, which
		// the relay could not stand in for (docs/crypto.md, who learns
		// what).
		if id, err := peer.IDFromPublicKey(c.RemotePublicKey()); err != nil || id != a.ID() {
			t.Fatalf("the circuit's session is not authenticated end to end: %v %v", id, err)
		}
	}
	s, err := b.NewStream(network.WithAllowLimitedConn(ctx, "glitr-test"), a.ID(), echoProto)
	if err != nil {
		t.Fatalf("stream through relay: %v", err)
	}
	exchange(ctx, t, s, "hello through the relay")
}
