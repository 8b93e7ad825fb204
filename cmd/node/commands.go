package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/glitr-chat/glitr/node"
	"github.com/glitr-chat/glitr/webui"
)

func defaultDataDir() (string, error) { return node.DefaultDataDir() }

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// nodeCommands run a node or ask the running one about itself.
func nodeCommands() []command {
	return []command{
		{name: "init", synopsis: "init [--profile personal|relay] [flags]", summary: "create a data directory (config, peer key, API token, store)", setup: setupInit},
		{name: "run", synopsis: "run", summary: "start the personal chat node and its local web UI", setup: noFlags(func(ctx context.Context, x *call) error {
			return serve(ctx, x.g, node.ProfilePersonal)
		})},
		{name: "relay", synopsis: "relay", summary: "start a relay/bootstrap node (no chat state)", setup: noFlags(func(ctx context.Context, x *call) error {
			return serve(ctx, x.g, node.ProfileRelay)
		})},
		{name: "status", synopsis: "status [--json]", summary: "show the running node's status", api: true, setup: setupStatus},
		{name: "id", synopsis: "id [--addrs]", summary: "print the running node's peer ID (and addresses)", api: true, setup: setupID},
		{name: "version", synopsis: "version", summary: "print the version of this binary and of the running node", setup: noFlags(runVersion)},
	}
}

func setupInit(fs *flag.FlagSet) runFunc {
	profile := fs.String("profile", node.ProfilePersonal, "personal (a chat node) or relay (a relay/bootstrap node)")
	port := fs.Int("port", 0, "libp2p port for every transport (0: the profile's default)")
	api := fs.String("api", "", "host:port of the local API (default: the profile's, 127.0.0.1:7878 for personal)")
	ifMissing := fs.Bool("if-missing", false, "do nothing if the data directory is already initialized")
	loopback := fs.Bool("loopback", false, "listen on 127.0.0.1 only (a node for trying things out on one machine)")
	var boot, relays stringList
	fs.Var(&boot, "bootstrap", "bootstrap peer multiaddr with /p2p/<id> (repeatable)")
	fs.Var(&relays, "relay", "relay multiaddr with /p2p/<id> for AutoRelay (repeatable)")
	return func(ctx context.Context, x *call) error {
		dir, err := x.g.dataDir()
		if err != nil {
			return err
		}
		cfg, err := node.DefaultConfig(*profile)
		if err != nil {
			return err
		}
		if *port != 0 || *loopback {
			if *port < 0 || *port > 65534 {
				return fmt.Errorf("--port %d: must be 1..65534", *port)
			}
			p := *port
			if p == 0 {
				p = map[string]int{node.ProfilePersonal: 4101, node.ProfileRelay: 4001}[*profile]
			}
			cfg.Network.ListenAddrs = portAddrs(p, *loopback)
		}
		if *api != "" {
			cfg.API.Listen = *api
		}
		cfg.Network.BootstrapPeers = append(cfg.Network.BootstrapPeers, boot...)
		cfg.Network.Relays = append(cfg.Network.Relays, relays...)
		if _, err := node.Init(dir, cfg); err != nil {
			if *ifMissing && errors.Is(err, node.ErrAlreadyInit) {
				return nil
			}
			return err
		}
		fmt.Fprintf(x.g.stdout, "initialized %s node in %s\n", *profile, dir)
		return nil
	}
}

// portAddrs lists the listen addresses of every transport on one port
// (QUIC and WebTransport share the UDP port; WebRTC-direct takes the next).
func portAddrs(port int, loopback bool) []string {
	p, p1 := strconv.Itoa(port), strconv.Itoa(port+1)
	ip4 := "/ip4/0.0.0.0"
	if loopback {
		ip4 = "/ip4/127.0.0.1"
	}
	addrs := []string{
		ip4 + "/udp/" + p + "/quic-v1",
		ip4 + "/udp/" + p + "/quic-v1/webtransport",
		ip4 + "/udp/" + p1 + "/webrtc-direct",
		ip4 + "/tcp/" + p,
	}
	if !loopback {
		addrs = append(addrs, "/ip6/::/udp/"+p+"/quic-v1", "/ip6/::/tcp/"+p)
	}
	return addrs
}

// serve runs a node until SIGINT or SIGTERM.
func serve(ctx context.Context, g *globals, profile string) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	if bridgeLibp2pLogs && os.Getenv("GOLOG_LOG_LEVEL") == "" {
		var lvl slog.Level
		_ = lvl.UnmarshalText([]byte(g.logLevel)) // checked by g.logger
		node.RouteLibp2pLogs(log.Handler(), max(lvl, slog.LevelWarn))
	}
	path, err := g.dataDir()
	if err != nil {
		return err
	}
	dir, err := node.Open(path)
	if err != nil {
		if errors.Is(err, node.ErrNotInitialized) {
			return fmt.Errorf("%w\n  run: glitr --data %s init --profile %s", err, path, profile)
		}
		return err
	}
	cfg, err := dir.Config()
	if err != nil {
		return err
	}
	if cfg.Profile != profile {
		other := map[string]string{node.ProfilePersonal: "run", node.ProfileRelay: "relay"}[cfg.Profile]
		return fmt.Errorf("%s holds a %s node; start it with `glitr %s`", path, cfg.Profile, other)
	}
	ctx, stop := signalContext(ctx)
	defer stop()
	node.GuardMemory(ctx, cfg.Memory, log) // process-wide, so here and not in node.Start
	n, err := node.Start(ctx, dir, node.Options{Logger: log, Version: buildVersion()})
	if err != nil {
		return err
	}
	printBanner(g.stdout, n)
	<-ctx.Done()
	stop()
	log.Info("shutting down")
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("shutdown", "err", err)
		}
		return nil
	case <-time.After(shutdownBudget):
		log.Error("shutdown took longer than the budget; exiting anyway", "budget", shutdownBudget)
		return exitError{1}
	}
}

func printBanner(w io.Writer, n *node.Node) {
	st := n.Status(context.Background())
	fmt.Fprintf(w, "Glitr %s node %s\n", st.Profile, st.PeerID)
	fmt.Fprintln(w, "Listening on:")
	for _, a := range st.Addrs {
		fmt.Fprintln(w, "  "+a)
	}
	if u := n.MetricsURL(); u != "" {
		fmt.Fprintf(w, "Metrics: %s\n", u)
	}
	token, err := n.Dir.Token()
	if err == nil {
		fmt.Fprintf(w, "Open the browser UI: %s\n", webui.LoginURL(n.APIAddr(), token))
	}
}

// client talks to a running node's local API with the token from its data
// directory.
type client struct {
	base  string
	token string
	http  *http.Client
}

func newClient(g *globals) (*client, error) {
	path, err := g.dataDir()
	if err != nil {
		return nil, err
	}
	dir, err := node.Open(path)
	if err != nil {
		return nil, err
	}
	addr, err := dir.APIAddr()
	if err != nil {
		return nil, err
	}
	token, err := dir.Token()
	if err != nil {
		return nil, err
	}
	return &client{base: "http://" + addr, token: token, http: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (c *client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func setupStatus(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the raw JSON")
	return func(ctx context.Context, x *call) error {
		var st webui.Status
		if err := x.api.get(ctx, "/api/v1/status", &st); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(x.g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		w := x.g.stdout
		fmt.Fprintf(w, "Peer ID:       %s\n", st.PeerID)
		fmt.Fprintf(w, "Profile:       %s\n", st.Profile)
		fmt.Fprintf(w, "Version:       %s\n", st.Version)
		fmt.Fprintf(w, "Uptime:        %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
		fmt.Fprintf(w, "Reachability:  %s\n", st.Reachability)
		fmt.Fprintf(w, "Peers:         %d connected, %d in the DHT routing table\n", len(st.ConnectedPeers), st.DHTPeers)
		fmt.Fprintln(w, "Addresses:")
		for _, a := range st.Addrs {
			fmt.Fprintln(w, "  "+a)
		}
		return nil
	}
}

func setupID(fs *flag.FlagSet) runFunc {
	addrs := fs.Bool("addrs", false, "also print the full addresses, one per line")
	return func(ctx context.Context, x *call) error {
		var st webui.Status
		if err := x.api.get(ctx, "/api/v1/status", &st); err != nil {
			return err
		}
		fmt.Fprintln(x.g.stdout, st.PeerID)
		if *addrs {
			for _, a := range st.Addrs {
				fmt.Fprintln(x.g.stdout, a)
			}
		}
		return nil
	}
}

// runVersion also names the running node's version when one answers.
func runVersion(ctx context.Context, x *call) error {
	fmt.Fprintf(x.g.stdout, "glitr %s\n", buildVersion())
	if c, err := newClient(x.g); err == nil {
		var st webui.Status
		if c.get(ctx, "/api/v1/status", &st) == nil {
			fmt.Fprintf(x.g.stdout, "running node: %s\n", st.Version)
		}
	}
	return nil
}
