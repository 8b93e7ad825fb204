package node

// Tests of issue 2's foundation that run against a started node or host:
// the local API on a real listener, Noise and yamux, the connection and
// resource managers, the private DHT's separation from the public IPFS DHT,
// metrics off for personal nodes, AutoNAT service on relays.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

// The API of a started node, over its real listener: the guards answer
// 401 and 403, and /api/v1/status reports peer ID, addresses, connected
// peers and version.
func TestFoundationStatusAPIOnRunningNode(t *testing.T) {
	n := startTestNode(t, loopbackConfig(t))
	other := startTestNode(t, loopbackConfig(t))
	testsupport.Connect(t, other.Host, n.Host)
	token, err := n.Dir.Token()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + n.APIAddr() + "/api/v1/status"
	_, apiPort, _ := net.SplitHostPort(n.APIAddr())
	get := func(mod func(*http.Request)) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		mod(req)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, body
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	for _, c := range []struct {
		name string
		mod  func(*http.Request)
		want int
	}{
		{"no token", func(*http.Request) {}, http.StatusUnauthorized},
		{"wrong token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+strings.Repeat("A", len(token))) }, http.StatusUnauthorized},
		{"wrong Host", func(r *http.Request) { bearer(r); r.Host = "rebind.example:" + apiPort }, http.StatusForbidden},
		{"foreign Origin", func(r *http.Request) { bearer(r); r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden},
		{"bearer token", bearer, http.StatusOK},
	} {
		res, body := get(c.mod)
		if res.StatusCode != c.want {
			t.Fatalf("%s: status %d, want %d (%s)", c.name, res.StatusCode, c.want, body)
		}
	}
	// The login URL the node prints turns the token into a cookie that
	// opens the API.
	loginURL := webui.LoginURL(n.APIAddr(), token)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(loginURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if strings.HasPrefix(c.Name, "glitr_session_") {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login set %v, want an HttpOnly SameSite=Strict session cookie", res.Cookies())
	}
	if res, body := get(func(r *http.Request) { r.AddCookie(session) }); res.StatusCode != http.StatusOK {
		t.Fatalf("API with the login cookie: %d (%s)", res.StatusCode, body)
	}

	_, body := get(bearer)
	var st webui.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("status body %s: %v", body, err)
	}
	if st.PeerID != n.Host.ID().String() {
		t.Fatalf("peerId %q, want %s", st.PeerID, n.Host.ID())
	}
	if st.Version != "test" || st.Profile != ProfilePersonal {
		t.Fatalf("version %q profile %q, want test and personal", st.Version, st.Profile)
	}
	if len(st.Addrs) == 0 || len(st.ListenAddrs) == 0 {
		t.Fatalf("no addresses in %+v", st)
	}
	for _, a := range st.Addrs {
		if !strings.HasSuffix(a, "/p2p/"+st.PeerID) {
			t.Fatalf("address %s does not end in /p2p/<peer id>", a)
		}
	}
	if !slices.Contains(st.ConnectedPeers, other.Host.ID().String()) {
		t.Fatalf("connectedPeers %v lacks %s", st.ConnectedPeers, other.Host.ID())
	}
}

// TCP connections are secured by Noise and multiplexed by yamux (QUIC,
// WebTransport and WebRTC bring their own security and streams).
func TestFoundationTCPUsesNoiseAndYamux(t *testing.T) {
	tcp := "/ip4/127.0.0.1/tcp/0"
	a := newTestHost(t, loopbackConfig(t, tcp))
	b := newTestHost(t, loopbackConfig(t, tcp))
	testsupport.Connect(t, a, b)
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	st := conns[0].ConnState()
	if st.Security != "/noise" || st.StreamMultiplexer != "/yamux/1.0.0" {
		t.Fatalf("connection state %+v, want /noise and /yamux/1.0.0", st)
	}
}

// The connection manager uses the configured water marks: a node past
// connHigh trims down to connLow.
func TestFoundationConnManagerTrims(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Network.ConnLow, cfg.Network.ConnHigh, cfg.Network.ConnGrace = 1, 2, 0
	h := newTestHost(t, cfg)
	for range 4 {
		testsupport.Connect(t, newTestHost(t, loopbackConfig(t)), h)
	}
	if got := len(h.Network().Peers()); got != 4 {
		t.Fatalf("%d peers before trimming, want 4", got)
	}
	h.ConnManager().TrimOpenConns(context.Background())
	testsupport.Eventually(t, 5*time.Second, "trimming to connLow", func() bool { return len(h.Network().Peers()) <= 1 })
}

// The resource manager's limits are scaled to the machine unless the
// config caps them.
func TestFoundationResourceManagerScaledToMachine(t *testing.T) {
	systemLimit := func(cfg Config) rcmgr.Limit {
		t.Helper()
		h := newTestHost(t, cfg)
		var lim rcmgr.Limit
		if err := h.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
			l, ok := s.(rcmgr.ResourceScopeLimiter)
			if !ok {
				t.Fatalf("system scope %T has no limit", s)
			}
			lim = l.Limit()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return lim
	}
	want := func(scale func(*rcmgr.ScalingLimitConfig) rcmgr.ConcreteLimitConfig) rcmgr.ResourceLimits {
		l := rcmgr.DefaultLimits
		libp2p.SetDefaultServiceLimits(&l)
		return scale(&l).ToPartialLimitConfig().System
	}

	auto := systemLimit(loopbackConfig(t))
	wantAuto := want(func(l *rcmgr.ScalingLimitConfig) rcmgr.ConcreteLimitConfig { return l.AutoScale() })
	if auto.GetMemoryLimit() != int64(wantAuto.Memory) || auto.GetConnTotalLimit() != int(wantAuto.Conns) {
		t.Fatalf("default system limit: memory %d conns %d, want the machine-scaled %d and %d",
			auto.GetMemoryLimit(), auto.GetConnTotalLimit(), wantAuto.Memory, wantAuto.Conns)
	}

	capped := loopbackConfig(t)
	capped.Network.MaxMemoryMB, capped.Network.MaxFileDescriptors = 64, 256
	got := systemLimit(capped)
	wantCap := want(func(l *rcmgr.ScalingLimitConfig) rcmgr.ConcreteLimitConfig { return l.Scale(64<<20, 256) })
	if got.GetMemoryLimit() != int64(wantCap.Memory) || got.GetFDLimit() != int(wantCap.FD) {
		t.Fatalf("capped system limit: memory %d fds %d, want %d and %d", got.GetMemoryLimit(), got.GetFDLimit(), wantCap.Memory, wantCap.FD)
	}
	if got.GetMemoryLimit() >= auto.GetMemoryLimit() {
		t.Fatalf("a 64 MB cap (%d) is not below the machine-scaled limit (%d)", got.GetMemoryLimit(), auto.GetMemoryLimit())
	}

	// A relay's connection manager trims at 2048 connections: the
	// resource manager admits that many (and keeps its memory limit).
	rcfg, _ := DefaultConfig(ProfileRelay)
	rcfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	relay := systemLimit(rcfg)
	if relay.GetConnTotalLimit() < rcfg.Network.ConnHigh || relay.GetConnLimit(network.DirInbound) < rcfg.Network.ConnHigh {
		t.Fatalf("relay: system connection limit %d (inbound %d) below connHigh %d", relay.GetConnTotalLimit(), relay.GetConnLimit(network.DirInbound), rcfg.Network.ConnHigh)
	}
	if relay.GetMemoryLimit() != auto.GetMemoryLimit() {
		t.Fatalf("relay: memory limit %d, want the machine-scaled %d", relay.GetMemoryLimit(), auto.GetMemoryLimit())
	}
}

// A node of the public IPFS DHT (protocol /ipfs/kad/1.0.0) connected to a
// Glitr node never enters its routing table, and the Glitr node never
// enters the IPFS node's: the two DHTs cannot merge.
func TestFoundationPublicIPFSDHTCannotJoin(t *testing.T) {
	n := startTestNode(t, loopbackConfig(t))
	glitrPeer := startTestNode(t, loopbackConfig(t))

	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ipfsHost, err := NewHost(loopbackConfig(t), sk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ipfsHost.Close() })
	// The stock Amino (IPFS) DHT, with no bootstrap peers so nothing
	// leaves the machine.
	ipfs, err := dht.New(ipfsHost, dht.Mode(dht.ModeServer), dht.BootstrapPeers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ipfs.Close() })

	testsupport.Connect(t, ipfsHost, n.Host)
	testsupport.Connect(t, glitrPeer.Host, n.Host)
	// The Glitr peer shows the routing tables work; by then identify has
	// long run with the IPFS host too.
	testsupport.Eventually(t, 10*time.Second, "the Glitr peer in the routing table", func() bool {
		return n.DHT.RoutingTable().Find(glitrPeer.Host.ID()) != ""
	})
	time.Sleep(500 * time.Millisecond)
	if n.DHT.RoutingTable().Find(ipfsHost.ID()) != "" {
		t.Fatal("an IPFS DHT node entered the Glitr routing table")
	}
	if ipfs.RoutingTable().Find(n.Host.ID()) != "" {
		t.Fatal("the Glitr node entered the IPFS routing table")
	}
	protos, _ := ipfsHost.Peerstore().GetProtocols(n.Host.ID())
	for _, p := range protos {
		if strings.HasPrefix(string(p), "/ipfs/kad/") {
			t.Fatalf("the Glitr node offers %s", p)
		}
	}
}

// Metrics are off for a personal node by default: no endpoint, libp2p's
// collectors not registered. On relays they are on (TestRelayServesMetrics).
func TestFoundationPersonalNodeHasNoMetricsEndpoint(t *testing.T) {
	cfg := loopbackConfig(t)
	if cfg.Metrics.Enabled {
		t.Fatal("metrics on by default for a personal node")
	}
	n := startTestNode(t, cfg)
	if n.metrics != nil || n.metricsAddr != "" {
		t.Fatalf("personal node serves metrics on %q", n.metricsAddr)
	}
	mfs, err := n.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "libp2p_") {
			t.Fatalf("libp2p collector %s registered with metrics off", mf.GetName())
		}
	}
}

// A relay answers AutoNAT dial-back requests, so the nodes behind it learn
// whether they are reachable (the verdicts themselves are tested in the
// NAT lab, where addresses are public); a personal node does not serve it.
func TestFoundationRelayServesAutoNAT(t *testing.T) {
	rcfg, err := DefaultConfig(ProfileRelay)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	r := newTestHost(t, rcfg)
	p := newTestHost(t, loopbackConfig(t))
	testsupport.Connect(t, p, r)
	testsupport.Eventually(t, 5*time.Second, "identify", func() bool {
		ps, _ := p.Peerstore().SupportsProtocols(r.ID(), autonat.AutoNATProto)
		return len(ps) == 1
	})
	if slices.Contains(p.Mux().Protocols(), autonat.AutoNATProto) {
		t.Fatal("a personal node serves AutoNAT")
	}
}

// glitr init's work, at the package level: the key is 0600, the store is
// an empty pebble database that opens, the config is the profile's.
func TestFoundationInitCreatesEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d")
	cfg, _ := DefaultConfig(ProfileRelay)
	dir, err := Init(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(path, PeerKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("peer key: %v, mode %v", err, fi.Mode().Perm())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode: %v %v", fi.Mode().Perm(), err)
	}
	if err := testsupport.PebbleStore(dir.StorePath()); err != nil {
		t.Fatalf("no pebble store after init: %v", err)
	}
	got, err := dir.Config()
	if err != nil || got.Profile != ProfileRelay {
		t.Fatalf("config: %+v, %v", got.Profile, err)
	}
}

// The relay service applies relay.limitDataBytes from its config: with a
// limit of 1 MiB a 64 KiB stream crosses the relay; with 8 KiB it does not
// (the relayed connection's own handshakes and identify use part of it).
// 64 KiB is below relay v2's default of 128 KiB, so ignoring the config
// would fail the second case.
func TestFoundationRelayAppliesConfiguredLimit(t *testing.T) {
	const sent = 64 << 10
	for _, c := range []struct {
		limit   int64
		crosses bool
	}{{1 << 20, true}, {8 << 10, false}} {
		t.Run(fmt.Sprint(c.limit), func(t *testing.T) {
			// Waiting for bytes that never come costs the whole wait;
			// bytes that do come end it early.
			wait := 3 * time.Second
			if c.crosses {
				wait = 15 * time.Second
			}
			n := relayedBytes(t, c.limit, sent, wait)
			if crossed := n == sent; crossed != c.crosses {
				t.Fatalf("limit %d: %d of %d bytes crossed the relay", c.limit, n, sent)
			}
		})
	}
}

// relayedBytes sends size bytes from B to A through a relay whose config
// sets relay.limitDataBytes to limit, and returns how many A received
// within wait.
func relayedBytes(t *testing.T, limit int64, size int, wait time.Duration) int64 {
	rcfg, err := DefaultConfig(ProfileRelay)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	rcfg.Relay.LimitDataBytes = limit
	r := newTestHost(t, rcfg)
	relayAddr := r.Addrs()[0].String() + "/p2p/" + r.ID().String()

	acfg := loopbackConfig(t)
	acfg.Network.ListenAddrs = nil
	acfg.Network.Relays = []string{relayAddr}
	acfg.Network.Reachability = "private"
	a := newTestHost(t, acfg)
	var received atomic.Int64
	a.SetStreamHandler(echoProto, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 4096)
		for {
			n, err := s.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})

	b := newTestHost(t, loopbackConfig(t))
	circuit, err := ma.NewMultiaddr(relayAddr + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testsupport.Eventually(t, 20*time.Second, "a connection through the relay", func() bool {
		b.Peerstore().ClearAddrs(a.ID())
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		return b.Connect(dctx, peer.AddrInfo{ID: a.ID(), Addrs: []ma.Multiaddr{circuit}}) == nil
	})
	s, err := b.NewStream(network.WithAllowLimitedConn(ctx, "glitr-test"), a.ID(), echoProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = s.Write(make([]byte, size))
	_ = s.CloseWrite()
	deadline := time.Now().Add(wait)
	for received.Load() < int64(size) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return received.Load()
}

// libp2p's records reach the node's handler from warn up (RouteLibp2pLogs),
// keeping the attributes libp2p adds.
func TestFoundationLibp2pLogsKeepTheNodeFormat(t *testing.T) {
	var buf bytes.Buffer
	h := minLevelHandler{slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.LevelWarn}
	log := slog.New(h.WithAttrs([]slog.Attr{slog.String("logger", "swarm2")}))
	log.Info("dialing")
	log.Warn("listening failed", "on", "/ip4/127.0.0.1/tcp/1")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("want exactly one JSON record, got %q: %v", buf.String(), err)
	}
	if rec["msg"] != "listening failed" || rec["logger"] != "swarm2" || rec["level"] != "WARN" {
		t.Fatalf("record %v", rec)
	}
}

// checkListening matches the configured listen addresses with the host's
// listeners: resolved port 0 and certificate hashes match, a missing
// listener is named.
func TestFoundationCheckListening(t *testing.T) {
	have := []ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/41234"),
		ma.StringCast("/ip4/0.0.0.0/udp/4101/quic-v1"),
		ma.StringCast("/ip4/0.0.0.0/udp/4101/quic-v1/webtransport/certhash/uEiA4q_1fkCvXYLruP4vQooHunC8JFxFAwnNzwd-JrTjPJg/certhash/uEiCcw53iqMBBdNDy4Dy0d7xi36hsCZb3X6rTVEsmd6E2cA"),
		ma.StringCast("/ip4/0.0.0.0/udp/4102/webrtc-direct/certhash/uEiAeVgv4hx9KfJeYYJ4y4uf_ir0Vu_ax5Oj9g5rBXmP1sw"),
	}
	ok := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/0.0.0.0/udp/4101/quic-v1", "/ip4/0.0.0.0/udp/4101/quic-v1/webtransport", "/ip4/0.0.0.0/udp/4102/webrtc-direct"}
	if err := checkListening(ok, have); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		want  []string
		field string
	}{
		{[]string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/4101"}, "network.listenAddrs[1]"},
		{[]string{"/ip4/0.0.0.0/udp/4103/webrtc-direct"}, "network.listenAddrs[0]"},
		{[]string{"/ip4/0.0.0.0/udp/4101/quic-v1", "/ip4/0.0.0.0/udp/0/quic-v1/webtransport", "/ip4/0.0.0.0/tcp/0"}, "network.listenAddrs[2]"},
	} {
		if err := checkListening(c.want, have); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Fatalf("checkListening(%v) = %v, want an error naming %s", c.want, err, c.field)
		}
	}
}
