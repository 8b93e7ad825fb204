package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	coreconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/gologshim"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	webrtc "github.com/libp2p/go-libp2p/p2p/transport/webrtc"
	webtransport "github.com/libp2p/go-libp2p/p2p/transport/webtransport"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/glitr-chat/glitr/protocol"
)

// NewHost builds the libp2p host a config describes: QUIC-v1, TCP,
// WebRTC-direct and WebTransport; Noise and yamux; circuit relay v2 (client
// always, service when configured); AutoRelay over the configured relays;
// DCUtR hole punching; AutoNAT; a resource manager scaled to the machine; a
// connection manager. reg receives libp2p's own metrics (nil: none); gater
// vets every dial and every incoming connection (nil: all are allowed).
func NewHost(cfg Config, key crypto.PrivKey, reg prometheus.Registerer, gater coreconnmgr.ConnectionGater) (host.Host, error) {
	n := cfg.Network
	if err := checkListenPorts(n.ListenAddrs); err != nil {
		return nil, err
	}

	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	var concrete rcmgr.ConcreteLimitConfig
	if n.MaxMemoryMB > 0 || n.MaxFileDescriptors > 0 {
		mem := int64(n.MaxMemoryMB) << 20
		if mem == 0 {
			mem = 1 << 30
		}
		fds := n.MaxFileDescriptors
		if fds == 0 {
			fds = 4096
		}
		concrete = limits.Scale(mem, fds)
	} else {
		concrete = limits.AutoScale()
	}
	// The connection manager trims at connHigh; a resource manager that
	// refuses connections below that makes the water marks moot (a relay's
	// 2048 is above what libp2p scales to on most machines: 504 on 24 GiB).
	// Only the connection counts are raised: memory and descriptor limits
	// still hold.
	p := concrete.ToPartialLimitConfig()
	want := rcmgr.LimitVal(n.ConnHigh + n.ConnHigh/4)
	for _, v := range []*rcmgr.LimitVal{&p.System.Conns, &p.System.ConnsInbound, &p.System.ConnsOutbound} {
		if *v != rcmgr.Unlimited && *v < want {
			*v = want
		}
	}
	concrete = p.Build(concrete)
	rmOpts := []rcmgr.Option{}
	if reg != nil {
		rcmgr.MustRegisterWith(reg)
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, fmt.Errorf("resource manager metrics: %w", err)
		}
		rmOpts = append(rmOpts, rcmgr.WithTraceReporter(str))
	}
	// The rate of new connections is limited for inbound ones only (see
	// inboundRateLimited); libp2p's own limiter, which counts dials too, is
	// turned off.
	rmOpts = append(rmOpts, rcmgr.WithConnRateLimiters(&rate.Limiter{}))
	inner, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete), rmOpts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	rm := newInboundRateLimited(inner)
	cm, err := connmgr.NewConnManager(n.ConnLow, n.ConnHigh, connmgr.WithGracePeriod(time.Duration(n.ConnGrace)))
	if err != nil {
		return nil, fmt.Errorf("connection manager: %w", err)
	}

	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.UserAgent(protocol.UserAgent),
		libp2p.Transport(quic.NewTransport),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(webrtc.New),
		libp2p.Transport(webtransport.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.EnableRelay(),
	}
	if gater != nil {
		opts = append(opts, libp2p.ConnectionGater(gater))
	}
	if len(n.ListenAddrs) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	} else {
		opts = append(opts, libp2p.ListenAddrStrings(n.ListenAddrs...))
	}
	if reg != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(reg))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if len(n.AnnounceAddrs) > 0 {
		announce := make([]ma.Multiaddr, 0, len(n.AnnounceAddrs))
		for _, s := range n.AnnounceAddrs {
			a, err := ma.NewMultiaddr(s)
			if err != nil {
				return nil, fmt.Errorf("network.announceAddrs: %w", err)
			}
			announce = append(announce, a)
		}
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	switch n.Reachability {
	case "public":
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case "private":
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if n.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if n.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if len(n.Relays) > 0 {
		relays, err := parsePeers(n.Relays)
		if err != nil {
			return nil, fmt.Errorf("network.relays: %w", err)
		}
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(relays,
			autorelay.WithBootDelay(0), autorelay.WithMinCandidates(1)))
	}
	if r := cfg.Relay; r.Service {
		res := relay.DefaultResources()
		res.MaxReservations = r.MaxReservations
		res.MaxCircuits = r.MaxCircuits
		res.ReservationTTL = time.Duration(r.ReservationTTL)
		if r.LimitDuration == 0 && r.LimitDataBytes == 0 {
			res.Limit = nil // unlimited
		} else {
			res.Limit = &relay.RelayLimit{Duration: time.Duration(r.LimitDuration), Data: r.LimitDataBytes}
		}
		ropts := []relay.Option{relay.WithResources(res)}
		if reg != nil {
			ropts = append(ropts, relay.WithMetricsTracer(relay.NewMetricsTracer(relay.WithRegisterer(reg))))
		}
		// A relay also answers AutoNAT dial-backs, so the nodes that use it
		// learn whether they are reachable.
		opts = append(opts, libp2p.EnableRelayService(ropts...), libp2p.EnableNATService())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	if err := checkListening(n.ListenAddrs, h.Network().ListenAddresses()); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// checkListening refuses a host that did not get a listener for every
// configured address: libp2p starts as long as one works and only logs the
// rest. IPv6 addresses are let go on a machine without IPv6, so the default
// config runs there.
func checkListening(want []string, have []ma.Multiaddr) error {
	noIPv6 := false
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		noIPv6 = true
	} else {
		ln.Close()
	}
	for i, s := range want {
		w, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("%w: network.listenAddrs[%d]: %q: %v", ErrConfig, i, s, err)
		}
		if noIPv6 && w[0].Code() == ma.P_IP6 {
			continue
		}
		if !slices.ContainsFunc(have, func(l ma.Multiaddr) bool { return listensOn(l, w) }) {
			return fmt.Errorf("network.listenAddrs[%d] %s: could not listen there (another transport on the same port? an address this machine does not have?)", i, s)
		}
	}
	return nil
}

// listensOn reports whether listener address l serves configured address
// w: the same components, certificate hashes aside, and any port where w
// asked for port 0.
func listensOn(l, w ma.Multiaddr) bool {
	l = slices.DeleteFunc(slices.Clone(l), func(c ma.Component) bool { return c.Code() == ma.P_CERTHASH })
	if len(l) != len(w) {
		return false
	}
	for i := range w {
		if l[i].Code() != w[i].Code() {
			return false
		}
		port := w[i].Code() == ma.P_TCP || w[i].Code() == ma.P_UDP
		if l[i].Value() != w[i].Value() && !(port && w[i].Value() == "0") {
			return false
		}
	}
	return true
}

// checkListenPorts refuses, before libp2p starts, a listen address whose
// fixed port is taken (or not ours to take) or whose IP the machine does
// not have, with the reason. It matters beyond the message: libp2p's TCP
// listeners share a port with any process that set SO_REUSEPORT (another
// node on the same port), so checkListening alone would not notice.
// Other failures (no IPv6 on the machine) are left to libp2p and
// checkListening.
func checkListenPorts(addrs []string) error {
	for i, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("%w: network.listenAddrs[%d]: %q: %v", ErrConfig, i, s, err)
		}
		network, hostport, ok := listenSocket(m)
		if !ok {
			continue
		}
		if strings.HasPrefix(network, "tcp") {
			var ln net.Listener
			if ln, err = net.Listen(network, hostport); err == nil {
				ln.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(network, hostport); err == nil {
				pc.Close()
			}
		}
		switch {
		case errors.Is(err, syscall.EADDRINUSE), errors.Is(err, syscall.EACCES):
			return fmt.Errorf("network.listenAddrs[%d] %s: port in use or not permitted: %w", i, s, err)
		case errors.Is(err, syscall.EADDRNOTAVAIL):
			return fmt.Errorf("network.listenAddrs[%d] %s: this machine has no such address: %w", i, s, err)
		}
	}
	return nil
}

// listenSocket returns the socket a listen multiaddr binds first (an IP
// and a TCP or UDP port), when the port is fixed. The network is tcp4,
// tcp6, udp4 or udp6, as libp2p binds it (an IPv6 wildcard does not also
// take the IPv4 port).
func listenSocket(m ma.Multiaddr) (network, hostport string, ok bool) {
	if len(m) < 2 {
		return "", "", false
	}
	switch m[0].Code() {
	case ma.P_IP4, ma.P_IP6:
	default:
		return "", "", false
	}
	switch m[1].Code() {
	case ma.P_TCP:
		network = "tcp"
	case ma.P_UDP:
		network = "udp"
	default:
		return "", "", false
	}
	if m[0].Code() == ma.P_IP4 {
		network += "4"
	} else {
		network += "6"
	}
	if m[1].Value() == "0" {
		return "", "", false
	}
	return network, net.JoinHostPort(m[0].Value(), m[1].Value()), true
}

// RouteLibp2pLogs sends libp2p's own log records at level min and above
// through h, so they share the node's format (text or JSON). Call it before
// the first host starts: libp2p binds each of its loggers to a handler once,
// for the whole process. Without it libp2p writes its errors to stderr in
// its own format (level set by GOLOG_LOG_LEVEL).
func RouteLibp2pLogs(h slog.Handler, min slog.Level) {
	gologshim.SetDefaultHandler(minLevelHandler{h, min})
}

// minLevelHandler drops records below min: libp2p's debug and info records
// are many and for libp2p's developers.
type minLevelHandler struct {
	slog.Handler
	min slog.Level
}

func (h minLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevelHandler{h.Handler.WithAttrs(as), h.min}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{h.Handler.WithGroup(name), h.min}
}

func parsePeers(ss []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	byID := map[peer.ID]int{}
	for _, s := range ss {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		if i, ok := byID[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		byID[ai.ID] = len(out)
		out = append(out, *ai)
	}
	return out, nil
}

// inboundRateLimited limits the rate of new inbound connections per
// address block, as libp2p's resource manager does by default (an IPv4
// address or IPv6 /56: a burst of 16, then one every 5 s; an IPv6 /48: 80,
// then two a second; loopback: no limit), and leaves dials alone. libp2p's
// limiter counts every dial attempt as well, so a node re-dialling a member
// whose link died (node/links) ran out of it after 16 attempts and could
// then try only every 5 s, which is what a partition's heal waited for. How often this node dials is its own
// decision, bounded by its dial loops.
type inboundRateLimited struct {
	network.ResourceManager
	limiter *rate.Limiter
}

func newInboundRateLimited(rm network.ResourceManager) *inboundRateLimited {
	perAddress := rate.Limit{RPS: 0.2, Burst: 16}
	return &inboundRateLimited{ResourceManager: rm, limiter: &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: perAddress}},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: perAddress},
				{PrefixLength: 48, Limit: rate.Limit{RPS: 0.5, Burst: 80}},
			},
			GracePeriod: time.Minute,
		},
	}}
}

// OpenConnection refuses an inbound connection over its address's rate.
func (r *inboundRateLimited) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	if dir == network.DirInbound {
		if ip, err := manet.ToIP(endpoint); err == nil {
			if addr, ok := netip.AddrFromSlice(ip); ok && !r.limiter.Allow(addr.Unmap()) {
				return nil, errors.New("rate limit exceeded")
			}
		}
	}
	return r.ResourceManager.OpenConnection(dir, usefd, endpoint)
}
