package node

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
	"github.com/glitr-chat/glitr/webui"
)

// Four nodes on the private DHT: a record put by one is found by another
// that never talked to it directly, and the record validator guards what
// the DHT accepts.
func TestPrivateDHTPutGet(t *testing.T) {
	boot := startTestNode(t, loopbackConfig(t))
	bootAddr := boot.Host.Addrs()[0].String() + "/p2p/" + boot.Host.ID().String()
	var nodes []*Node
	for range 3 {
		cfg := loopbackConfig(t)
		cfg.Network.BootstrapPeers = []string{bootAddr}
		nodes = append(nodes, startTestNode(t, cfg))
	}
	for _, n := range nodes {
		testsupport.Eventually(t, 15*time.Second, "routing tables to fill", func() bool { return n.DHT.RoutingTable().Size() >= 2 })
	}
	// Not the public IPFS DHT: our nodes speak only /glitr/kad/1.0.0.
	protos, err := nodes[0].Host.Peerstore().GetProtocols(boot.Host.ID())
	if err != nil {
		t.Fatal(err)
	}
	var hasGlitr bool
	for _, p := range protos {
		if p == protocol.DHTProtocol {
			hasGlitr = true
		}
		if p == "/ipfs/kad/1.0.0" {
			t.Fatal("node speaks the public IPFS DHT protocol")
		}
	}
	if !hasGlitr {
		t.Fatalf("bootstrap node does not offer %s: %v", protocol.DHTProtocol, protos)
	}

	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 42
	priv := ed25519.NewKeyFromSeed(seed)
	key, rec, err := protocol.SignRendezvous(priv, 1, time.Now().Add(time.Hour), []byte("sealed addresses"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nodes[0].DHT.PutValue(ctx, key, rec); err != nil {
		t.Fatalf("put: %v", err)
	}
	got, err := nodes[2].DHT.GetValue(ctx, key)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if string(got) != string(rec) {
		t.Fatal("got a different record back")
	}

	// A record whose signature does not match is refused before it is sent.
	forged := append([]byte(nil), rec...)
	forged[len(forged)-1] ^= 1
	if err := nodes[1].DHT.PutValue(ctx, key, forged); err == nil {
		t.Fatal("DHT accepted a forged record")
	}
	// Keys outside our namespaces (e.g. IPFS's /ipns/) are not stored.
	if err := nodes[1].DHT.PutValue(ctx, "/ipns/whatever", rec); err == nil {
		t.Fatal("DHT accepted a record in a foreign namespace")
	}
	// A newer sequence number replaces the old record everywhere.
	_, rec2, _ := protocol.SignRendezvous(priv, 2, time.Now().Add(time.Hour), []byte("new addresses"))
	if err := nodes[1].DHT.PutValue(ctx, key, rec2); err != nil {
		t.Fatalf("put newer: %v", err)
	}
	testsupport.Eventually(t, 10*time.Second, "the newer record to win", func() bool {
		got, err := nodes[2].DHT.GetValue(ctx, key)
		return err == nil && string(got) == string(rec2)
	})
}

// Three nodes in a line A - B - C. A is hostile (no validator); B and C
// validate. A's bad message is rejected by B, so it is neither delivered
// to B nor forwarded to C, while a good message reaches both.
func TestGossipsubValidatorStopsBadMessages(t *testing.T) {
	// DHT clients only: server-mode DHTs would discover each other and
	// connect A to C directly, and the point is that C hears A only via B.
	line := loopbackConfig(t)
	line.DHT.Mode = "client"
	a, b, c := startTestNode(t, line), startTestNode(t, line), startTestNode(t, line)
	testsupport.Connect(t, a.Host, b.Host)
	testsupport.Connect(t, b.Host, c.Host)

	const topic = "glitr-test-topic"
	var cSawBad atomic.Bool // C's validator saw a bad message: B forwarded it
	validator := func(n *Node) pubsub.ValidatorEx {
		return func(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
			if strings.HasPrefix(string(m.Data), "bad") {
				if n == c {
					cSawBad.Store(true)
				}
				return pubsub.ValidationReject
			}
			return pubsub.ValidationAccept
		}
	}
	for _, n := range []*Node{b, c} {
		if err := n.RegisterTopicValidator(topic, validator(n)); err != nil {
			t.Fatal(err)
		}
	}
	subs := map[string]*pubsub.Subscription{}
	topics := map[string]*pubsub.Topic{}
	for name, n := range map[string]*Node{"a": a, "b": b, "c": c} {
		tp, err := n.PubSub.Join(topic)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tp.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		topics[name], subs[name] = tp, s
	}
	testsupport.Eventually(t, 10*time.Second, "meshes to form", func() bool {
		return len(topics["a"].ListPeers()) == 1 && len(topics["b"].ListPeers()) == 2 && len(topics["c"].ListPeers()) == 1
	})
	time.Sleep(1200 * time.Millisecond) // one heartbeat to graft

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topics["a"].Publish(ctx, []byte("bad: forged block")); err != nil {
		t.Fatal(err)
	}
	if err := topics["a"].Publish(ctx, []byte("good block")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b", "c"} {
		m, err := subs[name].Next(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(m.Data) != "good block" {
			t.Fatalf("%s received %q, want only the good block", name, m.Data)
		}
		// StrictNoSign without author: no signature, key, sender or
		// sequence number on the wire, and the id is the hash of the bytes.
		if m.Signature != nil || m.Key != nil || m.From != nil || m.Seqno != nil {
			t.Fatalf("%s: message carries signature/key/from/seqno: %+v", name, m.Message)
		}
		if sum := sha256.Sum256(m.Data); m.ID != string(sum[:]) {
			t.Fatalf("%s: message id %x is not SHA-256 of the bytes", name, m.ID)
		}
	}
	// Nothing else arrives: the bad message was dropped, not delayed.
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if m, err := subs["c"].Next(short); err == nil {
		t.Fatalf("c received %q after the good block", m.Data)
	}
	if len(a.Host.Network().ConnsToPeer(c.Host.ID())) != 0 {
		t.Fatal("test topology broken: A connected to C directly")
	}
	if cSawBad.Load() {
		t.Fatal("B forwarded the rejected message to C")
	}
	// The validator also guards the node's own publishing.
	if err := topics["b"].Publish(ctx, []byte("bad: own")); err == nil {
		t.Fatal("b published a message its own validator rejects")
	}
}

func TestStoreSurvivesRestartAndLockRefusesSecondProcess(t *testing.T) {
	dir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := Start(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Store.Put(ctx, ds.NewKey("/hello"), []byte("world")); err != nil {
		t.Fatal(err)
	}
	id := n.Host.ID()

	// A second node on the same directory is refused, and the first keeps
	// running.
	if _, err := Start(ctx, dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Start = %v, want ErrLocked", err)
	}
	if v, err := n.Store.Get(ctx, ds.NewKey("/hello")); err != nil || string(v) != "world" {
		t.Fatalf("first node's store after refused second start: %q, %v", v, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2, err := Start(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if n2.Host.ID() != id {
		t.Fatal("peer ID changed across restart")
	}
	v, err := n2.Store.Get(ctx, ds.NewKey("/hello"))
	if err != nil || string(v) != "world" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
}

func TestStartRefusesBadDataDirectory(t *testing.T) {
	ctx := context.Background()
	t.Run("corrupt peer key", func(t *testing.T) {
		dir, _ := Init(t.TempDir(), loopbackConfig(t))
		path := filepath.Join(dir.Path, PeerKeyFile)
		if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Start(ctx, dir, Options{})
		if !errors.Is(err, ErrBadPeerKey) || !strings.Contains(err.Error(), PeerKeyFile) {
			t.Fatalf("Start = %v, want ErrBadPeerKey naming the file", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "not a key" {
			t.Fatal("corrupt key file was overwritten")
		}
	})
	t.Run("missing peer key", func(t *testing.T) {
		dir, _ := Init(t.TempDir(), loopbackConfig(t))
		os.Remove(filepath.Join(dir.Path, PeerKeyFile))
		if _, err := Start(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), PeerKeyFile) {
			t.Fatalf("Start = %v, want an error naming %s", err, PeerKeyFile)
		}
	})
	t.Run("peer key readable by others", func(t *testing.T) {
		dir, _ := Init(t.TempDir(), loopbackConfig(t))
		os.Chmod(filepath.Join(dir.Path, PeerKeyFile), 0o644)
		if _, err := Start(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("Start = %v, want a permissions error", err)
		}
	})
	t.Run("corrupt config", func(t *testing.T) {
		dir, _ := Init(t.TempDir(), loopbackConfig(t))
		path := filepath.Join(dir.Path, ConfigFile)
		b, _ := os.ReadFile(path)
		bad := strings.Replace(string(b), `"mode": "server"`, `"mode": "turbo"`, 1)
		os.WriteFile(path, []byte(bad), 0o600)
		_, err := Start(ctx, dir, Options{})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "dht.mode") {
			t.Fatalf("Start = %v, want ErrConfig naming dht.mode", err)
		}
		if after, _ := os.ReadFile(path); string(after) != bad {
			t.Fatal("config was rewritten")
		}
	})
	t.Run("API port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := loopbackConfig(t)
		cfg.API.Listen = ln.Addr().String()
		dir, _ := Init(t.TempDir(), cfg)
		_, err = Start(ctx, dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "api.listen") {
			t.Fatalf("Start = %v, want an error naming api.listen", err)
		}
		// The refused node released the directory.
		if l, err := dir.Lock(); err != nil {
			t.Fatalf("lock after failed start: %v", err)
		} else {
			l.Release()
		}
	})
	t.Run("libp2p port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		// The other address is free: libp2p alone would start without
		// the TCP listener and only log it.
		cfg := loopbackConfig(t, "/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/"+portOf(ln.Addr()))
		dir, _ := Init(t.TempDir(), cfg)
		if _, err := Start(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), "network.listenAddrs[1]") {
			t.Fatalf("Start = %v, want an error naming network.listenAddrs[1]", err)
		}
	})
	t.Run("listen address not on this machine", func(t *testing.T) {
		cfg := loopbackConfig(t, "/ip4/127.0.0.1/tcp/0", "/ip4/203.0.113.77/tcp/4999")
		dir, _ := Init(t.TempDir(), cfg)
		if _, err := Start(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), "network.listenAddrs[1]") {
			t.Fatalf("Start = %v, want an error naming network.listenAddrs[1]", err)
		}
	})
	t.Run("not initialized", func(t *testing.T) {
		if _, err := Open(t.TempDir()); !errors.Is(err, ErrNotInitialized) {
			t.Fatalf("Open = %v, want ErrNotInitialized", err)
		}
	})
	t.Run("init twice", func(t *testing.T) {
		path := t.TempDir()
		Init(path, loopbackConfig(t))
		before, _ := os.ReadFile(filepath.Join(path, PeerKeyFile))
		if _, err := Init(path, loopbackConfig(t)); !errors.Is(err, ErrAlreadyInit) {
			t.Fatalf("second Init = %v, want ErrAlreadyInit", err)
		}
		after, _ := os.ReadFile(filepath.Join(path, PeerKeyFile))
		if string(before) != string(after) {
			t.Fatal("second Init replaced the peer key")
		}
	})
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// Close must finish well within the 2 s shutdown budget even with peers
// connected.
func TestCloseIsPrompt(t *testing.T) {
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, a.Host, b.Host)
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %s", d)
	}
	if _, err := os.Stat(filepath.Join(a.Dir.Path, APIAddrFile)); !os.IsNotExist(err) {
		t.Fatal("api.addr left behind after Close")
	}
}

func TestPenalizeDisconnectsPersistentOffender(t *testing.T) {
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, a.Host, b.Host)
	a.Penalize(b.Host.ID(), 10, "test: bad block")
	if len(a.Host.Network().ConnsToPeer(b.Host.ID())) == 0 {
		t.Fatal("a small penalty should not disconnect")
	}
	if got := a.pen.get(b.Host.ID()); got > -9.9 || got < -10 {
		t.Fatalf("app score = %v, want -10 (a moment's decay less)", got)
	}
	a.Penalize(b.Host.ID(), 100, "test: flood")
	testsupport.Eventually(t, 5*time.Second, "disconnect", func() bool {
		return len(a.Host.Network().ConnsToPeer(b.Host.ID())) == 0
	})
}

// A graylisted peer stays cut off until its penalty decays: whoever dials
// (the offender itself, or the penalizing node's discovery, catch-up or
// DHT) must not restore the connection Penalize closed.
func TestGraylistedPeerStaysCutOff(t *testing.T) {
	a := startTestNode(t, loopbackConfig(t))
	b := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, a.Host, b.Host)
	// Half again the threshold: cut off for about 35 s of continuous decay.
	a.Penalize(b.Host.ID(), -1.5*scoreThresholds.GraylistThreshold, "test: bad blocks")
	testsupport.Eventually(t, 5*time.Second, "disconnect on both sides", func() bool {
		return len(a.Host.Network().ConnsToPeer(b.Host.ID())) == 0 &&
			len(b.Host.Network().ConnsToPeer(a.Host.ID())) == 0
	})
	var admitted atomic.Int32
	a.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == b.Host.ID() {
			admitted.Add(1)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The offender's dial may complete on its side (a QUIC client is done
	// with the handshake before the server has checked it), but a closes
	// it without adding it.
	_ = b.Host.Connect(ctx, addrInfo(a.Host))
	if err := a.Host.Connect(ctx, addrInfo(b.Host)); err == nil {
		t.Error("the node dialed the peer it graylisted")
	}
	testsupport.Eventually(t, 5*time.Second, "the offender's connection closed", func() bool {
		return len(b.Host.Network().ConnsToPeer(a.Host.ID())) == 0
	})
	if n := admitted.Load(); n != 0 {
		t.Errorf("the graylisted peer was let in %d times", n)
	}
	// A minute later the penalty is three quarters of the threshold: let
	// back in.
	a.pen.mu.Lock()
	a.pen.now = func() time.Time { return time.Now().Add(penaltyHalfLife) }
	a.pen.mu.Unlock()
	testsupport.Connect(t, a.Host, b.Host)
}

// A relay serves Prometheus metrics: libp2p's collectors and ours.
func TestRelayServesMetrics(t *testing.T) {
	cfg, err := DefaultConfig(ProfileRelay)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = "127.0.0.1:0"
	r := startTestNode(t, cfg)
	if r.Chat != nil || r.PubSub != nil || r.Store != nil {
		t.Fatal("a relay keeps no chat state")
	}
	// A DHT server from the start: it answers /glitr/kad/1.0.0.
	if !slices.Contains(r.Host.Mux().Protocols(), protocol.DHTProtocol) {
		t.Fatalf("relay does not serve %s", protocol.DHTProtocol)
	}
	peer := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, peer.Host, r.Host)
	addr := r.metricsAddr
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, want := range []string{"glitr_build_info", "glitr_connected_peers 1", "libp2p_rcmgr_", "libp2p_swarm_", "libp2p_identify_", "libp2p_relaysvc_", "libp2p_autonat_", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The chat API answers "not here" on a relay.
	if _, err := r.Conversations(context.Background()); !errors.Is(err, webui.ErrUnavailable) {
		t.Fatalf("relay Conversations = %v, want ErrUnavailable", err)
	}
}
