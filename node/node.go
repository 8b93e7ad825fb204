// Package node assembles a running Glitr node from its parts: the libp2p
// host, the private DHT, gossipsub, the pebble store, the local web server
// and metrics. It owns their lifecycles: Start acquires, Close releases.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	pebbleds "github.com/ipfs/go-ds-pebble"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/glitr-chat/glitr/node/devices"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/identity"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/protocol"
	"github.com/glitr-chat/glitr/webui"
)

// Options are the parts of a node that do not come from its config.
type Options struct {
	// Logger receives the node's logs (nil: discard).
	Logger *slog.Logger
	// Version is reported by the API and metrics.
	Version string
	// Passphrase unlocks a passphrase-protected keyring at start. Without
	// it such a node starts locked: the host runs, chat waits for Unlock.
	Passphrase []byte
}

// Node is a running Glitr node. Personal nodes have a store and gossipsub;
// relay nodes have neither (they keep no chat state), but both have the
// host, the DHT and the local API.
type Node struct {
	Dir    DataDir
	Config Config
	Host   host.Host
	DHT    *dht.IpfsDHT
	PubSub *pubsub.PubSub // nil in relay mode
	Store  ds.Batching    // chat state; nil in relay mode
	// Chat is the conversation service; nil in relay mode and while the
	// keyring is locked (use chatService from code that runs then).
	Chat    *Chat
	Metrics *prometheus.Registry

	log     *slog.Logger
	version string
	started time.Time
	lock    *Lock
	db      *pebbleds.Datastore
	api     *webui.Server
	apiAddr string
	metrics *http.Server
	// metricsAddr is where /metrics listens (empty when metrics are off).
	metricsAddr string
	pen         *penalties
	reach       network.Reachability
	reachMu     sync.Mutex
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
	chatMu      sync.RWMutex    // guards Chat and locked after Start
	mailboxes   *relayMailboxes // the relay's mailbox service, if offered
	locked      bool            // the keyring waits for its passphrase
	unlockMu    sync.Mutex      // one Unlock at a time

	catchupMetricsOnce sync.Once
	catchupSessions    *prometheus.CounterVec
	catchupBlocksIn    prometheus.Counter
	catchupBytesIn     prometheus.Counter
}

// Start opens the data directory (taking its lock), loads the config and
// brings every part up. On error, whatever was started is stopped again.
func Start(ctx context.Context, dir DataDir, opts Options) (_ *Node, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{Dir: dir, log: log, version: opts.Version, started: time.Now(), pen: newPenalties(nil)}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if n.lock, err = dir.Lock(); err != nil {
		return nil, err
	}
	if n.Config, err = dir.Config(); err != nil {
		return nil, err
	}
	key, err := dir.PeerKey()
	if err != nil {
		return nil, err
	}
	token, err := dir.Token()
	if err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	n.cancel = cancel

	n.Metrics = prometheus.NewRegistry()
	n.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The store opens first: a corrupt or locked database should stop the
	// node before it announces itself to the network.
	// The block store's pebble tuning (64 MiB memtables: a 100k-block
	// catch-up is one flush, without write stalls; pebble starts a memtable
	// small and grows it only under write load); see docs/benchmarks.md.
	if n.db, err = pebbleds.NewDatastore(dir.StorePath(), pebbleds.WithPebbleOpts(dag.PebbleOptions())); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir.StorePath(), err)
	}
	var reg prometheus.Registerer
	if n.Config.Metrics.Enabled {
		reg = n.Metrics
	}
	if n.Host, err = NewHost(n.Config, key, reg, graylistGater{n.pen}); err != nil {
		return nil, err
	}
	// The gater checks a connection before the swarm adds it; one that
	// passed just before its peer crossed the threshold is added after
	// Penalize's ClosePeer has run. Close it here instead.
	n.Host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			if n.pen.graylisted(c.RemotePeer()) {
				_ = c.Close()
			}
		},
	})
	n.registerMetrics()
	n.watchReachability(bg)

	mode := map[string]dht.ModeOpt{"auto": dht.ModeAuto, "client": dht.ModeClient, "server": dht.ModeServer}[n.Config.DHT.Mode]
	boot, _ := parsePeers(n.Config.Network.BootstrapPeers) // validated at load
	n.DHT, err = dht.New(n.Host,
		dht.ProtocolPrefix(protocol.DHTPrefix),
		dht.Mode(mode),
		dht.BootstrapPeers(boot...),
		dht.Datastore(namespace.Wrap(n.db, ds.NewKey("/dht"))),
		// Replace the IPFS validators (pk, ipns): our DHT stores only
		// Glitr's own records.
		dht.Validator(record.NamespacedValidator{protocol.RendezvousNamespace: protocol.RendezvousValidator{}}),
	)
	if err != nil {
		return nil, fmt.Errorf("start DHT: %w", err)
	}
	if n.Config.Profile == ProfilePersonal {
		n.Store = namespace.Wrap(n.db, ds.NewKey("/chat"))
		if n.PubSub, err = newPubSub(bg, n.Host, n.pen); err != nil {
			return nil, fmt.Errorf("start gossipsub: %w", err)
		}
		n.wg.Go(func() { n.prunePenalties(bg) })
		switch err := n.startChat(ctx, opts.Passphrase); {
		case errors.Is(err, identity.ErrNeedsPassphrase):
			n.locked = true
			log.Info("the keyring is protected by a passphrase: unlock it in the browser UI or with `glitr unlock`")
		case err != nil:
			return nil, err
		}
	}
	if err := n.startMailboxService(); err != nil {
		return nil, err
	}
	n.wg.Go(func() { n.connectBootstrap(bg, boot) })

	if err := n.startAPI(token); err != nil {
		return nil, err
	}
	if n.Config.Metrics.Enabled {
		if err := n.startMetrics(); err != nil {
			return nil, err
		}
	}
	log.Info("node started", "profile", n.Config.Profile, "peer", n.Host.ID().String(), "api", n.apiAddr, "took", time.Since(n.started).Round(time.Millisecond))
	return n, nil
}

func (n *Node) startChat(ctx context.Context, passphrase []byte) error {
	id, err := loadIdentity(n.Dir, time.Now(), passphrase)
	if err != nil {
		return err
	}
	if err := n.finishAdoption(ctx, id); err != nil {
		return err
	}
	blocks, err := identity.OpenBlocks(ctx, n.db, id)
	if err != nil {
		return fmt.Errorf("open block store: %w", err)
	}
	c := newChat(n.chatNet(), id, blocks, n.Store)
	if err := n.prepareOffline(ctx, c); err != nil {
		return err
	}
	if err := c.load(ctx); err != nil {
		return fmt.Errorf("load conversations: %w", err)
	}
	// The chat service can start more than once (after linking this
	// device to another account); its metrics are registered once.
	n.catchupMetricsOnce.Do(func() {
		n.catchupSessions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "glitr_catchup_sessions_total", Help: "Catch-up sessions by role and outcome.",
		}, []string{"role", "outcome"})
		n.catchupBlocksIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "glitr_catchup_blocks_received_total", Help: "Blocks received through catch-up."})
		n.catchupBytesIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "glitr_catchup_bytes_received_total", Help: "Catch-up bytes received, frames included."})
		n.Metrics.MustRegister(n.catchupSessions, n.catchupBlocksIn, n.catchupBytesIn)
	})
	sessions, blocksIn, bytesIn := n.catchupSessions, n.catchupBlocksIn, n.catchupBytesIn
	c.catchup = catchup.New(n.Host, c, c, catchup.Options{
		Penalize: n.Penalize,
		Logger:   n.log,
		OnSession: func(p peer.ID, initiator bool, st catchup.Stats, err error) {
			role, outcome := "responder", "ok"
			if initiator {
				role = "initiator"
			}
			if err != nil {
				outcome = "error"
			}
			sessions.WithLabelValues(role, outcome).Inc()
			blocksIn.Add(float64(st.BlocksRecv))
			bytesIn.Add(float64(st.BytesRecv))
			c.recordSession(st)
		},
	})
	c.catchupReady.Store(true)
	if err := n.startDelivery(ctx, c); err != nil {
		return err
	}
	if err := c.ensureAccount(ctx); err != nil {
		return fmt.Errorf("account: %w", err)
	}
	if n.DHT != nil {
		c.discovery, err = discovery.New(n.Host, n.DHT,
			discovery.Self{Account: id.AccountID(), Device: id.Keyring.Device},
			c.discoveryContacts,
			discovery.Options{Logger: n.log, KeepLoopback: loopbackOnly(n.Config.Network.ListenAddrs)})
		if err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	popts := people.Options{Requests: c.requests, StoreKey: c.storeKey(), Now: c.now, Logger: n.log}
	if n.DHT != nil {
		popts.Router = n.DHT
	}
	c.people = people.New(n.Host, n.Store, peopleChat{c}, popts)
	c.devices = devices.New(n.Host, devicesChat{c}, c.people, devices.Options{Requests: c.requests, Now: c.now, Logger: n.log})
	n.chatMu.Lock()
	n.Chat = c
	n.locked = false
	n.chatMu.Unlock()
	n.Host.SetStreamHandler(WelcomeProtocol, c.handleWelcome)
	n.Host.SetStreamHandler(CardProtocol, c.handleCardRequest)
	c.people.Start()
	c.devices.Start()
	c.history.Start()
	c.startSignals()
	c.mu.RLock()
	for _, conv := range c.convs {
		c.joinTopics(conv)
	}
	if c.account != nil {
		c.joinTopics(c.account)
	}
	c.mu.RUnlock()
	// Registered before the first dial, so no connection is missed.
	n.Host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, conn network.Conn) { c.onConnected(conn.RemotePeer()) },
	})
	c.wg.Go(c.antiEntropy)
	c.links.Start()
	c.wg.Go(c.dialContacts)
	c.wg.Go(c.keyUpkeep)
	// Rebuilding the CRDT states from the blocks leaves a lot of garbage
	// behind; hand those pages back now rather than whenever the scavenger
	// gets to them (a phone-sized budget matters more than a few ms here).
	debug.FreeOSMemory()
	return nil
}

// chatNet is what the conversation service uses of this node.
func (n *Node) chatNet() chatNet {
	return chatNet{
		Host: n.Host, PubSub: n.PubSub, Log: n.log,
		Penalize:   n.Penalize,
		Graylisted: n.pen.graylisted,
		ShowPresence: func(ctx context.Context) bool {
			prefs, err := n.Preferences(ctx)
			return err == nil && prefs.ShowPresence
		},
	}
}

// loopbackOnly reports whether every listen address is on loopback (a
// test or single-machine set-up), where loopback addresses are all there
// is to publish.
func loopbackOnly(listen []string) bool {
	for _, a := range listen {
		if !strings.HasPrefix(a, "/ip4/127.") && !strings.HasPrefix(a, "/ip6/::1/") {
			return false
		}
	}
	return len(listen) > 0
}

// chatService returns the chat service, or nil (relay, locked).
func (n *Node) chatService() *Chat {
	n.chatMu.RLock()
	defer n.chatMu.RUnlock()
	return n.Chat
}

// APIAddr is the host:port the local API listens on.
func (n *Node) APIAddr() string { return n.apiAddr }

// MetricsURL is the Prometheus endpoint's URL, or "" when metrics are off.
func (n *Node) MetricsURL() string {
	if n.metricsAddr == "" {
		return ""
	}
	return "http://" + n.metricsAddr + "/metrics"
}

func (n *Node) startAPI(token string) error {
	ln, err := net.Listen("tcp", n.Config.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen %s: %w", n.Config.API.Listen, err)
	}
	n.apiAddr = ln.Addr().String()
	n.api, err = webui.New(webui.Config{Token: token, Backend: n, Logger: n.log.With("component", "api"), Addr: ln.Addr().(*net.TCPAddr)})
	if err != nil {
		ln.Close()
		return err
	}
	n.wg.Go(func() {
		if err := n.api.Serve(ln); err != nil {
			n.log.Error("api server stopped", "err", err)
		}
	})
	return writeFileAtomic(n.Dir.file(APIAddrFile), []byte(n.apiAddr+"\n"), 0o600)
}

func (n *Node) startMetrics() error {
	ln, err := net.Listen("tcp", n.Config.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen %s: %w", n.Config.Metrics.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.Metrics, promhttp.HandlerOpts{}))
	n.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.metricsAddr = ln.Addr().String()
	n.log.Info("metrics endpoint", "addr", n.MetricsURL())
	n.wg.Go(func() {
		if err := n.metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server stopped", "err", err)
		}
	})
	return nil
}

func (n *Node) registerMetrics() {
	n.Metrics.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "glitr_connected_peers", Help: "Peers with at least one open connection.",
		}, func() float64 { return float64(len(n.Host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "glitr_dht_routing_table_size", Help: "Peers in the private DHT's routing table.",
		}, func() float64 {
			if n.DHT == nil {
				return 0
			}
			return float64(n.DHT.RoutingTable().Size())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "glitr_build_info", Help: "Always 1; the labels name the build.",
			ConstLabels: prometheus.Labels{"version": n.version, "profile": n.Config.Profile},
		}, func() float64 { return 1 }),
	)
}

// watchReachability follows AutoNAT's verdict for the status report.
func (n *Node) watchReachability(ctx context.Context) {
	sub, err := n.Host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		n.log.Warn("cannot follow reachability", "err", err)
		return
	}
	n.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				r := e.(event.EvtLocalReachabilityChanged).Reachability
				n.reachMu.Lock()
				n.reach = r
				n.reachMu.Unlock()
				n.log.Info("reachability changed", "reachability", r.String())
			}
		}
	})
}

// connectBootstrap dials the bootstrap peers in the background, retrying
// with backoff, so start-up never waits on the network.
func (n *Node) connectBootstrap(ctx context.Context, boot []peer.AddrInfo) {
	if len(boot) == 0 {
		return
	}
	delay := 500 * time.Millisecond
	for {
		connected := 0
		for _, ai := range boot {
			if ai.ID == n.Host.ID() {
				connected++
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := n.Host.Connect(dctx, ai)
			cancel()
			if err == nil {
				connected++
			} else if ctx.Err() == nil {
				n.log.Debug("bootstrap dial failed", "peer", ai.ID.String(), "err", err)
			}
		}
		if connected > 0 {
			if err := n.DHT.Bootstrap(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("DHT bootstrap", "err", err)
			}
			n.log.Info("connected to bootstrap peers", "count", connected, "of", len(boot))
			return
		}
		n.log.Warn("no bootstrap peer reachable; retrying", "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Minute)
	}
}

func (n *Node) prunePenalties(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.pen.prune()
		}
	}
}

// Penalize lowers a peer's gossipsub score for misbehaviour (a bad block, a
// flood, a malformed frame). Past the graylist threshold its gossip is
// ignored, the connection is closed and the host refuses the peer (see
// graylistGater) until its penalty decays.
func (n *Node) Penalize(p peer.ID, amount float64, reason string) {
	total := n.pen.add(p, amount)
	n.log.Warn("peer penalized", "peer", p.String(), "reason", reason, "penalty", total)
	if -total <= scoreThresholds.GraylistThreshold {
		_ = n.Host.Network().ClosePeer(p)
	}
}

// RegisterTopicValidator installs a validator that gossipsub runs on every
// message of the topic before delivering or forwarding it.
func (n *Node) RegisterTopicValidator(topic string, v pubsub.ValidatorEx) error {
	if n.PubSub == nil {
		return errors.New("gossipsub is not running on a relay node")
	}
	return n.PubSub.RegisterTopicValidator(topic, v)
}

// Status implements webui.Backend.
func (n *Node) Status(ctx context.Context) webui.Status {
	h := n.Host
	st := webui.Status{
		PeerID:        h.ID().String(),
		Profile:       n.Config.Profile,
		Version:       n.version,
		StartedAt:     n.started.UTC().Format(time.RFC3339),
		UptimeSeconds: time.Since(n.started).Seconds(),
		Goroutines:    runtime.NumGoroutine(),
	}
	for _, a := range h.Network().ListenAddresses() {
		st.ListenAddrs = append(st.ListenAddrs, a.String())
	}
	for _, a := range h.Addrs() {
		st.Addrs = append(st.Addrs, a.String()+"/p2p/"+h.ID().String())
	}
	st.ConnectedPeers = []string{}
	for _, p := range h.Network().Peers() {
		st.ConnectedPeers = append(st.ConnectedPeers, p.String())
	}
	slices.Sort(st.ConnectedPeers)
	if n.DHT != nil {
		st.DHTPeers = n.DHT.RoutingTable().Size()
	}
	n.reachMu.Lock()
	st.Reachability = n.reach.String()
	n.reachMu.Unlock()
	return st
}

// Close stops everything Start started, in reverse order, and releases the
// data directory. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if n.api != nil {
			errs = append(errs, n.api.Shutdown(ctx))
			_ = os.Remove(n.Dir.file(APIAddrFile))
		}
		if n.metrics != nil {
			errs = append(errs, n.metrics.Shutdown(ctx))
		}
		if c := n.chatService(); c != nil {
			c.close()
			if c.sig != nil {
				c.sig.Close()
			}
			c.links.Close()
			c.catchup.Close()
		}
		if n.cancel != nil {
			n.cancel()
		}
		errs = append(errs, n.mailboxes.close())
		if n.DHT != nil {
			errs = append(errs, n.DHT.Close())
		}
		if n.Host != nil {
			errs = append(errs, n.Host.Close())
		}
		n.wg.Wait()
		if n.db != nil {
			errs = append(errs, n.db.Close())
		}
		errs = append(errs, n.lock.Release())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func addrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }
