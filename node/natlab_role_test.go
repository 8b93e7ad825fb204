package node

// The roles of the NAT lab (natlab_test.go): what the relay and the two
// home nodes do inside their namespaces, reported as JSON-line events.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// TestNATLabRole is not a test on its own: TestNATLab runs it, in a network
// namespace, as the relay or one of the two nodes.
func TestNATLabRole(t *testing.T) {
	role := os.Getenv(natlabEnvRole)
	if role == "" {
		t.Skip("role process of TestNATLab; runs only when started by it")
	}

	// Lab fix 1, in this test process only: go-multiaddr counts TEST-NET-2
	// (198.51.100.0/24), the lab's "internet", as unroutable, so
	// manet.IsPublicAddr is false for every address of the lab. The
	// holepunch service then never finds a public address and never serves
	// DCUtR, and autorelay drops the relay. Real deployments have real
	// public addresses. This runs before any host exists, so nothing reads
	// the variable concurrently.
	_, testNet2, _ := net.ParseCIDR("198.51.100.0/24")
	manet.Unroutable4 = slices.DeleteFunc(slices.Clone(manet.Unroutable4), func(n *net.IPNet) bool {
		return n.String() == testNet2.String()
	})

	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(ev natlabEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
	}

	// Stop when the parent closes stdin (or dies).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	if err := natlabRole(ctx, role, emit); err != nil {
		emit(natlabEvent{Event: "error", Err: err.Error()})
		t.Fatal(err)
	}
}

func natlabRole(ctx context.Context, role string, emit func(natlabEvent)) error {
	transport := os.Getenv(natlabEnvTransport)
	kb, err := base64.StdEncoding.DecodeString(os.Getenv(natlabEnvKey))
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(kb)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}

	var cfg Config
	switch role {
	case "relay":
		if cfg, err = DefaultConfig(ProfileRelay); err != nil {
			return err
		}
		cfg.Network.ListenAddrs = []string{natlabListenAddr(transport, natlabPortR)}
	case "detect":
		// Nothing forced: AutoNAT decides.
		if cfg, err = DefaultConfig(ProfilePersonal); err != nil {
			return err
		}
		cfg.Network.ListenAddrs = []string{os.Getenv(natlabEnvListen)}
		cfg.Network.Relays = []string{os.Getenv(natlabEnvRelay)}
	case "a", "b":
		if cfg, err = DefaultConfig(ProfilePersonal); err != nil {
			return err
		}
		port := natlabPortA
		if role == "b" {
			port = natlabPortB
		}
		cfg.Network.ListenAddrs = []string{natlabListenAddr(transport, port)}
		cfg.Network.Relays = []string{os.Getenv(natlabEnvRelay)}
		// A home node behind NAT. Forced, because AutoNAT would need
		// several servers and minutes to reach this verdict, and
		// autorelay reserves a slot only on a private verdict.
		cfg.Network.Reachability = "private"
		cfg.Network.HolePunching = true
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	h, err := NewHost(cfg, key, nil, nil)
	if err != nil {
		return err
	}
	defer h.Close()

	switch role {
	case "relay":
		emit(natlabEvent{Event: "ready", Peer: h.ID().String(), Addrs: natlabStrings(h.Addrs())})
	case "detect":
		return natlabDetect(ctx, h, emit)
	case "a":
		h.SetStreamHandler(natlabEchoProto, func(s network.Stream) {
			defer s.Close()
			emit(natlabEvent{Event: "echo", Conn: new(natlabConnInfo(s.Conn()))})
			_, _ = io.Copy(s, io.LimitReader(s, 1<<16))
		})
		relay, err := natlabJoinRelay(ctx, h)
		if err != nil {
			return err
		}
		// A's reservation shows as a circuit address (with fix 1 the relay
		// counts as public); B retries its dial should it come first.
		_ = natlabPoll(ctx, 5*time.Second, func() bool {
			for _, a := range h.Addrs() {
				if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
					return true
				}
			}
			return false
		})
		emit(natlabEvent{Event: "ready", Peer: h.ID().String(), Addrs: natlabStrings(h.Addrs()), Conns: natlabConns(h, relay)})
	case "b":
		if _, err := natlabJoinRelay(ctx, h); err != nil {
			return err
		}
		emit(natlabEvent{Event: "ready", Peer: h.ID().String(), Addrs: natlabStrings(h.Addrs())})
		if err := natlabDialA(ctx, h, emit); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// natlabJoinRelay connects to the configured relay and waits until this
// host serves DCUtR, which needs the address the relay observed (fix 2).
func natlabJoinRelay(ctx context.Context, h host.Host) (peer.ID, error) {
	ri, err := peer.AddrInfoFromString(os.Getenv(natlabEnvRelay))
	if err != nil {
		return "", err
	}
	var lastErr error
	for try := 0; try < 20; try++ {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		lastErr = h.Connect(cctx, *ri)
		cancel()
		if lastErr == nil {
			break
		}
		natlabClearBackoff(h, ri.ID)
		if err := natlabSleep(ctx, 250*time.Millisecond); err != nil {
			return "", err
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("connect to relay %s: %w", ri, lastErr)
	}
	if err := natlabPoll(ctx, 15*time.Second, func() bool {
		return slices.Contains(h.Mux().Protocols(), holepunch.Protocol)
	}); err != nil {
		return "", fmt.Errorf("host never served %s (no public address observed?); addrs %v: %w", holepunch.Protocol, h.Addrs(), err)
	}
	return ri.ID, nil
}

// natlabDialA is B's part: reach A through R at a hand-built circuit
// address (autorelay advertises one only for a relay with a public
// address, which R has only thanks to fix 1), wait for the upgrade, then
// open a stream that must not use the limited connection.
func natlabDialA(ctx context.Context, h host.Host, emit func(natlabEvent)) error {
	a, err := peer.Decode(os.Getenv(natlabEnvPeer))
	if err != nil {
		return err
	}
	circuit := os.Getenv(natlabEnvRelay) + "/p2p-circuit/p2p/" + a.String()
	ai, err := peer.AddrInfoFromString(circuit)
	if err != nil {
		return fmt.Errorf("%s: %w", circuit, err)
	}
	tries := 0
	for {
		tries++
		cctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "natlab"), 5*time.Second)
		err = h.Connect(cctx, *ai)
		cancel()
		if err == nil {
			break
		}
		if tries == 20 {
			return fmt.Errorf("dial A at %s: %w", circuit, err)
		}
		// A's reservation may not be there yet.
		natlabClearBackoff(h, a)
		if err := natlabSleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	relayed := time.Now()
	emit(natlabEvent{Event: "relayed", Tries: tries, Conns: natlabConns(h, a)})

	var direct network.Conn
	_ = natlabPoll(ctx, natlabDirectTimeout, func() bool {
		for _, c := range h.Network().ConnsToPeer(a) {
			if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil && !c.Stat().Limited {
				direct = c
				return true
			}
		}
		return false
	})
	if direct == nil {
		emit(natlabEvent{Event: "nodirect", Conns: natlabConns(h, a)})
		return nil
	}
	emit(natlabEvent{Event: "direct", Conn: new(natlabConnInfo(direct)), Millis: float64(time.Since(relayed).Microseconds()) / 1000, Conns: natlabConns(h, a)})

	// No WithAllowLimitedConn: over a relayed connection this would block
	// until the deadline.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev := natlabEvent{Event: "stream"}
	s, err := h.NewStream(sctx, a, natlabEchoProto)
	if err != nil {
		ev.Err = err.Error()
		emit(ev)
		return nil
	}
	defer s.Close()
	ev.Conn = new(natlabConnInfo(s.Conn()))
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello from B, straight through two NATs")
	if _, err := s.Write(msg); err != nil {
		ev.Err = "write: " + err.Error()
	} else if err := s.CloseWrite(); err != nil {
		ev.Err = "close write: " + err.Error()
	} else if got, err := io.ReadAll(s); err != nil {
		ev.Err = "read: " + err.Error()
	} else if !bytes.Equal(got, msg) {
		ev.Err = fmt.Sprintf("echo: got %q, want %q", got, msg)
	}
	emit(ev)
	return nil
}

// natlabDetect connects to R and reports AutoNAT's first verdict.
func natlabDetect(ctx context.Context, h host.Host, emit func(natlabEvent)) error {
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		return err
	}
	defer sub.Close()
	ri, err := peer.AddrInfoFromString(os.Getenv(natlabEnvRelay))
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = h.Connect(cctx, *ri)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to relay: %w", err)
	}
	emit(natlabEvent{Event: "ready", Peer: h.ID().String(), Addrs: natlabStrings(h.Addrs())})
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-sub.Out():
			r := e.(event.EvtLocalReachabilityChanged).Reachability
			if r == network.ReachabilityUnknown {
				continue
			}
			emit(natlabEvent{Event: "reachability", Reach: r.String()})
			if r == network.ReachabilityPrivate {
				// AutoRelay acts on the verdict: a reservation on the
				// configured relay, shown as a circuit address.
				hasCircuit := func() bool {
					return slices.ContainsFunc(h.Addrs(), func(a ma.Multiaddr) bool {
						_, err := a.ValueForProtocol(ma.P_CIRCUIT)
						return err == nil
					})
				}
				if natlabPoll(ctx, 15*time.Second, hasCircuit) == nil {
					emit(natlabEvent{Event: "circuit", Addrs: natlabStrings(h.Addrs())})
				} else {
					emit(natlabEvent{Event: "nocircuit", Addrs: natlabStrings(h.Addrs())})
				}
			}
			<-ctx.Done()
			return nil
		}
	}
}

func natlabClearBackoff(h host.Host, p peer.ID) {
	if s, ok := h.Network().(*swarm.Swarm); ok {
		s.Backoff().Clear(p)
	}
}

func natlabConns(h host.Host, p peer.ID) []natlabConn {
	var out []natlabConn
	for _, c := range h.Network().ConnsToPeer(p) {
		out = append(out, natlabConnInfo(c))
	}
	return out
}

func natlabStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func natlabSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// natlabPoll checks cond every 5 ms until it holds or d has passed.
func natlabPoll(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !cond() {
		if err := natlabSleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}
