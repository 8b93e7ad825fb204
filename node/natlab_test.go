package node

// Real-NAT test of hole punching (issue 2). The shared netlab script builds
// two NAT'd homes and a public net out of network namespaces; this test runs
// a relay R on the public net and nodes A and B in the homes, each as its own
// process (this test binary re-executed with `ip netns exec`), and checks that
// B, after reaching A through R, ends up with a direct connection to A that
// a stream can use without network.WithAllowLimitedConn. Every host is built
// by NewHost from a Config, so the production host code is what is tested.
// A third run checks AutoNAT with nothing forced: a node in a home learns it
// is private, a node on the public net that it is public, from R's dial-backs.
//
// The role processes speak JSON lines on stdout, one per event. They exit
// when their stdin closes, so a dying parent cannot leave them behind.
//
// ../shared/notes/nat-lab.md lists three things that stop the upgrade in
// this lab; the test deals with each:
//  1. 198.51.100.0/24 (TEST-NET-2) counts as unroutable in go-multiaddr, so
//     the hosts never see a public address: the role processes remove it
//     from manet.Unroutable4 (test processes only).
//  2. A dialer race: B connects to R first, waits until both its own host
//     and A's serve the DCUtR protocol, and only then dials A's circuit
//     address, which it builds by hand.
//  3. Linux routers answer unsolicited packets where home routers drop them:
//     netlab installs the drop rules itself.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// Environment of a role process.
	natlabEnvRole      = "GLITR_NATLAB_ROLE"      // relay, a or b
	natlabEnvTransport = "GLITR_NATLAB_TRANSPORT" // quic or tcp
	natlabEnvKey       = "GLITR_NATLAB_KEY"       // base64 of the marshalled private key
	natlabEnvRelay     = "GLITR_NATLAB_RELAY"     // the relay's full multiaddr (a, b)
	natlabEnvPeer      = "GLITR_NATLAB_PEER"      // A's peer id (b)
	natlabEnvListen    = "GLITR_NATLAB_LISTEN"    // the listen multiaddr (detect)

	// The lab's fixed addresses (see the netlab script). Fixed ports make
	// the NAT mappings readable.
	natlabRelayIP = "198.51.100.1" // R, on the public net
	natlabNATIPA  = "198.51.100.2" // public side of A's home router
	natlabNATIPB  = "198.51.100.3" // public side of B's home router
	natlabPortR   = 4001
	natlabPortA   = 4002
	natlabPortB   = 4003
	// A node on the public net beside R (AutoNAT test), in a namespace of
	// its own that the test adds to the lab: in R's namespace its dials to
	// R would leave from R's own address.
	natlabPublicIP = "198.51.100.9"
	natlabPortP    = 4004

	// natlabDirectTimeout bounds the upgrade from relayed to direct,
	// counted from B's relayed connection (measured: well under a second).
	natlabDirectTimeout = 15 * time.Second

	natlabEchoProto = "/glitr/test/natlab-echo/1.0.0"
)

// natlabEvent is one line a role process writes on stdout.
type natlabEvent struct {
	Event  string       `json:"event"`
	Peer   string       `json:"peer,omitempty"`
	Addrs  []string     `json:"addrs,omitempty"`
	Conn   *natlabConn  `json:"conn,omitempty"`
	Conns  []natlabConn `json:"conns,omitempty"`
	Millis float64      `json:"ms,omitempty"`
	Tries  int          `json:"tries,omitempty"`
	Reach  string       `json:"reach,omitempty"`
	Err    string       `json:"err,omitempty"`
}

type natlabConn struct {
	Remote    string `json:"remote"`
	Local     string `json:"local"`
	Transport string `json:"transport"`
	Limited   bool   `json:"limited"`
	Direction string `json:"direction"`
}

func natlabConnInfo(c network.Conn) natlabConn {
	return natlabConn{
		Remote:    c.RemoteMultiaddr().String(),
		Local:     c.LocalMultiaddr().String(),
		Transport: c.ConnState().Transport,
		Limited:   c.Stat().Limited,
		Direction: c.Stat().Direction.String(),
	}
}

func (c natlabConn) String() string {
	return fmt.Sprintf("%s (transport %q, limited=%v, %s)", c.Remote, c.Transport, c.Limited, c.Direction)
}

func natlabListenAddr(transport string, port int) string {
	if transport == "quic" {
		return fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", port)
	}
	return fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", port)
}

func natlabRelayAddr(transport string, id peer.ID) string {
	if transport == "quic" {
		return fmt.Sprintf("/ip4/%s/udp/%d/quic-v1/p2p/%s", natlabRelayIP, natlabPortR, id)
	}
	return fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", natlabRelayIP, natlabPortR, id)
}

// natlabSkip skips the NAT lab loudly (labSkip).
func natlabSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	labSkip(t, "NAT LAB SKIPPED", "issue 2's real-NAT hole punching test", format, args...)
}

// natlabScript finds the netlab script: $GLITR_NETLAB, else
// ../shared/tools/netlab relative to the repository root.
func natlabScript() (string, error) {
	if p := os.Getenv("GLITR_NETLAB"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("GLITR_NETLAB=%s: %w", p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod) not found")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "tools", "netlab")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("netlab not found at ../shared/tools/netlab from the repository root (set GLITR_NETLAB): %w", err)
	}
	return filepath.Clean(p), nil
}

func TestNATLab(t *testing.T) {
	if os.Geteuid() != 0 {
		natlabSkip(t, "needs root to create network namespaces (run `make test` as root)")
	}
	for _, tool := range []string{"ip", "nft", "sysctl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			natlabSkip(t, "%s not found (install iproute2, nftables and procps)", tool)
		}
	}
	script, err := natlabScript()
	if err != nil {
		natlabSkip(t, "%v", err)
	}
	if err := netnsProbe(t, "gtprobe"); err != nil {
		natlabSkip(t, "%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []string{"quic", "tcp"} {
		t.Run(tr, func(t *testing.T) { natlabRun(t, script, self, tr) })
	}
	t.Run("autonat", func(t *testing.T) { natlabAutoNAT(t, script, self) })
}

// natlabUp brings the shared netlab up for one subtest, under a prefix
// made of the process id and tag (namespace and interface names derive
// from it; netlab's longest interface name is PREFIX-r1-w, and Linux allows
// 15 bytes), and takes it down when the test ends, after the processes
// started into procs are stopped.
func natlabUp(t *testing.T, script string, tag byte) (prefix string, procs *[]*natlabProc) {
	prefix = fmt.Sprintf("gt%d%c", os.Getpid(), tag)
	if len(prefix) > 10 {
		prefix = prefix[len(prefix)-10:]
	}
	netlab := func(args ...string) error {
		out, err := exec.Command("bash", append([]string{script}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("netlab %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	// Registered first, so it runs last, after the processes are gone.
	t.Cleanup(func() {
		if err := netlab("down", prefix); err != nil {
			t.Error(err)
		}
	})
	procs = new([]*natlabProc)
	t.Cleanup(func() { natlabStop(t, *procs) })
	start := time.Now()
	if err := netlab("up", prefix); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s up in %v", prefix, time.Since(start).Round(time.Millisecond))
	return prefix, procs
}

// natlabAutoNAT checks AutoNAT's verdicts with nothing forced: a node in a
// NAT'd home learns it is private, a node on the public net that it is
// public, both from R's dial-backs (R runs the AutoNAT service, as every
// relay does); the home node then takes a reservation on R (AutoRelay). Over TCP: its dials leave from the listening port, so R
// sees the node's own address.
func natlabAutoNAT(t *testing.T, script, self string) {
	prefix, procs := natlabUp(t, script, 'n')
	natlabAddPublicHost(t, prefix, "p", natlabPublicIP)
	spawn := func(role, ns string, env ...string) *natlabProc {
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := crypto.MarshalPrivateKey(sk)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, natlabEnvRole+"="+role, natlabEnvTransport+"=tcp", natlabEnvKey+"="+base64.StdEncoding.EncodeToString(kb))
		p := natlabStart(t, role+"@"+ns, prefix+"-"+ns, self, env)
		*procs = append(*procs, p)
		return p
	}
	start := time.Now()
	r := spawn("relay", "pub")
	ev := r.await(t, 20*time.Second, "ready")
	relayAddr := fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", natlabRelayIP, natlabPortR, ev.Peer)
	home := spawn("detect", "a", natlabEnvRelay+"="+relayAddr, fmt.Sprintf("%s=/ip4/0.0.0.0/tcp/%d", natlabEnvListen, natlabPortA))
	public := spawn("detect", "p", natlabEnvRelay+"="+relayAddr, fmt.Sprintf("%s=/ip4/%s/tcp/%d", natlabEnvListen, natlabPublicIP, natlabPortP))
	// A probe starts ~2 s after identify with R; a dial-back into the home
	// fails only when R's dial times out (15 s).
	for _, c := range []struct {
		p    *natlabProc
		want string
	}{{public, network.ReachabilityPublic.String()}, {home, network.ReachabilityPrivate.String()}} {
		ev := c.p.await(t, 45*time.Second, "reachability")
		if ev.Reach != c.want {
			t.Fatalf("%s: AutoNAT says %s, want %s", c.p.name, ev.Reach, c.want)
		}
		t.Logf("+%v %s: AutoNAT verdict %s", time.Since(start).Round(time.Millisecond), c.p.name, ev.Reach)
	}
	// The home node, told it is private, reserves a slot on the relay of
	// its config (AutoRelay), nothing forced.
	ev = home.await(t, 20*time.Second, "circuit", "nocircuit")
	if ev.Event == "nocircuit" {
		t.Fatalf("%s: no circuit address within 15 s of the private verdict: %v", home.name, ev.Addrs)
	}
	t.Logf("+%v %s: AutoRelay reservation: %v", time.Since(start).Round(time.Millisecond), home.name, ev.Addrs)
}

func natlabRun(t *testing.T, script, self, transport string) {
	prefix, procs := natlabUp(t, script, transport[0])
	start := time.Now()

	keys := map[string]crypto.PrivKey{}
	ids := map[string]peer.ID{}
	for _, role := range []string{"relay", "a", "b"} {
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[role] = sk
		if ids[role], err = peer.IDFromPrivateKey(sk); err != nil {
			t.Fatal(err)
		}
	}
	relayAddr := natlabRelayAddr(transport, ids["relay"])
	spawn := func(role, ns string, env ...string) *natlabProc {
		kb, err := crypto.MarshalPrivateKey(keys[role])
		if err != nil {
			t.Fatal(err)
		}
		env = append(env,
			natlabEnvRole+"="+role,
			natlabEnvTransport+"="+transport,
			natlabEnvKey+"="+base64.StdEncoding.EncodeToString(kb))
		p := natlabStart(t, role, prefix+"-"+ns, self, env)
		*procs = append(*procs, p)
		return p
	}

	r := spawn("relay", "pub")
	// The roles give up after 15 s each; wait longer, to get their error.
	ev := r.await(t, 20*time.Second, "ready")
	natlabCheckPeer(t, "relay", ev, ids["relay"])
	since := func() time.Duration { return time.Since(start).Round(time.Millisecond) }
	t.Logf("+%v R %s listens on %v", since(), ev.Peer, ev.Addrs)

	a := spawn("a", "a", natlabEnvRelay+"="+relayAddr)
	ev = a.await(t, 20*time.Second, "ready")
	natlabCheckPeer(t, "A", ev, ids["a"])
	t.Logf("+%v A %s ready (connected to R, serves %s): addrs %v", since(), ev.Peer, holepunch.Protocol, ev.Addrs)

	b := spawn("b", "b", natlabEnvRelay+"="+relayAddr, natlabEnvPeer+"="+ids["a"].String())
	ev = b.await(t, 20*time.Second, "ready")
	natlabCheckPeer(t, "B", ev, ids["b"])
	ev = b.await(t, 20*time.Second, "relayed")
	t.Logf("+%v B reached A through R after %d dial(s): %v", since(), ev.Tries, ev.Conns)
	for _, c := range ev.Conns {
		if !c.Limited || !strings.Contains(c.Remote, "/p2p-circuit") {
			t.Logf("note: B already had a non-relayed connection to A right after the relayed dial: %v", c)
		}
	}

	ev = b.await(t, natlabDirectTimeout+5*time.Second, "direct", "nodirect")
	if ev.Event == "nodirect" {
		t.Fatalf("%s: no direct connection from B to A within %v of the relayed one; B's connections to A: %v",
			transport, natlabDirectTimeout, ev.Conns)
	}
	natlabCheckDirect(t, transport, "B's direct connection to A", *ev.Conn, natlabNATIPA, natlabPortA)
	t.Logf("+%v %s: relayed -> direct in %.1f ms: %v", since(), transport, ev.Millis, *ev.Conn)

	// A stream opened without WithAllowLimitedConn must work, and over the
	// direct connection on both ends.
	ev = b.await(t, 10*time.Second, "stream")
	if ev.Err != "" {
		t.Fatalf("%s: stream from B to A without WithAllowLimitedConn: %s", transport, ev.Err)
	}
	natlabCheckDirect(t, transport, "B's stream to A", *ev.Conn, natlabNATIPA, natlabPortA)
	ev = a.await(t, 5*time.Second, "echo")
	natlabCheckDirect(t, transport, "A's end of B's stream", *ev.Conn, natlabNATIPB, natlabPortB)
	t.Logf("+%v stream without WithAllowLimitedConn echoed over %s", since(), ev.Conn.Remote)
}

func natlabCheckPeer(t *testing.T, who string, ev natlabEvent, want peer.ID) {
	t.Helper()
	if ev.Peer != want.String() {
		t.Fatalf("%s reports peer id %s, want %s", who, ev.Peer, want)
	}
}

// natlabCheckDirect checks that c is a non-limited connection of the given
// transport to the public (NAT) side of the other home.
func natlabCheckDirect(t *testing.T, transport, what string, c natlabConn, wantIP string, port int) {
	t.Helper()
	if c.Limited {
		t.Fatalf("%s: %s is limited: %v", transport, what, c)
	}
	m, err := ma.NewMultiaddr(c.Remote)
	if err != nil {
		t.Fatalf("%s: %s: %v", transport, what, err)
	}
	if _, err := m.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		t.Fatalf("%s: %s is relayed: %v", transport, what, c)
	}
	if ip, _ := m.ValueForProtocol(ma.P_IP4); ip != wantIP {
		t.Fatalf("%s: %s goes to %v, want the NAT's public IP %s", transport, what, c, wantIP)
	}
	var gotPort string
	switch transport {
	case "quic":
		if _, err := m.ValueForProtocol(ma.P_QUIC_V1); err != nil {
			t.Fatalf("%s: %s is not QUIC: %v", transport, what, c)
		}
		gotPort, _ = m.ValueForProtocol(ma.P_UDP)
	case "tcp":
		if gotPort, err = m.ValueForProtocol(ma.P_TCP); err != nil {
			t.Fatalf("%s: %s is not TCP: %v", transport, what, c)
		}
	}
	if gotPort != fmt.Sprint(port) {
		// Masquerade normally keeps the source port; not keeping it is not
		// a failure of hole punching, but worth seeing.
		t.Logf("note: %s: the NAT did not keep port %d: %v", what, port, c)
	}
}

// natlabProc is a role process of the NAT lab.
type natlabProc struct{ *roleProc[natlabEvent] }

func natlabStart(t *testing.T, name, ns, self string, env []string) *natlabProc {
	t.Helper()
	// The timeout is a backstop; the process also ends when stdin closes.
	return &natlabProc{startRole(t, name, ns, self, "^TestNATLabRole$", 2*time.Minute, env, 1<<20,
		func(ev natlabEvent) bool { return ev.Event != "" }, func(natlabEvent) bool { return true })}
}

// natlabStop stops the processes together, and shows their output when the
// test failed.
func natlabStop(t *testing.T, procs []*natlabProc) {
	roles := make([]*roleProc[natlabEvent], len(procs))
	for i, p := range procs {
		roles[i] = p.roleProc
	}
	stopRoles(roles)
	if t.Failed() {
		for _, p := range procs {
			t.Logf("--- output of %s (exit: %v) ---\n%s", p.name, p.err, p.output.String())
		}
	}
}

// await returns the next event with one of the given names, skipping others.
func (p *natlabProc) await(t *testing.T, d time.Duration, names ...string) natlabEvent {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				<-p.done
				t.Fatalf("%s exited (%v) before reporting %v", p.name, p.err, names)
			}
			if ev.Event == "error" {
				t.Fatalf("%s failed: %s", p.name, ev.Err)
			}
			if slices.Contains(names, ev.Event) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("%s did not report %v within %v", p.name, names, d)
		}
	}
}

// natlabAddPublicHost plugs a namespace PREFIX-name with address ip into
// the lab's public net (netlab makes only R's); the test removes it.
func natlabAddPublicHost(t *testing.T, prefix, name, ip string) {
	ns, veth := prefix+"-"+name, prefix+"-"+name+"-w"
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", veth, "type", "veth", "peer", "name", prefix + "-" + name + "-p"},
		{"link", "set", veth, "netns", ns},
		{"link", "set", prefix + "-" + name + "-p", "netns", prefix + "-pub"},
		{"-n", prefix + "-pub", "link", "set", prefix + "-" + name + "-p", "master", "br0"},
		{"-n", prefix + "-pub", "link", "set", prefix + "-" + name + "-p", "up"},
		{"-n", ns, "link", "set", veth, "up"},
		{"-n", ns, "addr", "add", ip + "/24", "dev", veth},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// A bridge port passes traffic once it reaches the forwarding state.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ip", "-n", prefix+"-pub", "-d", "link", "show", prefix+"-"+name+"-p").CombinedOutput()
		if strings.Contains(string(out), "state forwarding") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge port %s-%s-p not forwarding: %s", prefix, name, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
