package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Profiles, as in Kubo: a named set of defaults for a kind of node.
const (
	ProfilePersonal = "personal" // a person's chat node
	ProfileRelay    = "relay"    // a public relay/bootstrap node with no chat state
)

// ConfigFile is the name of the config file inside the data directory.
const ConfigFile = "config.json"

// ErrConfig marks every configuration error; the message names the field.
var ErrConfig = errors.New("invalid config")

// Config is the whole configuration of a node, stored as JSON in the data
// directory. Every field is documented in docs/config.md; a test keeps the
// two in step.
type Config struct {
	// Profile is "personal" or "relay".
	Profile string `json:"profile"`
	// Network configures the libp2p host.
	Network NetworkConfig `json:"network"`
	// DHT configures the private Kademlia DHT.
	DHT DHTConfig `json:"dht"`
	// Relay configures the circuit relay v2 service (relay profile).
	Relay RelayConfig `json:"relay"`
	// API configures the local HTTP API and browser UI.
	API APIConfig `json:"api"`
	// Metrics configures the Prometheus endpoint.
	Metrics MetricsConfig `json:"metrics"`
	// Memory bounds the process's heap (memory.go).
	Memory MemoryConfig `json:"memory"`
	// Mailbox configures blind mailboxes: the service a relay offers, and
	// the relays a personal node keeps its mailbox on.
	Mailbox MailboxConfig `json:"mailbox"`
	// Attachments configures the attachment store (personal profile).
	Attachments AttachmentsConfig `json:"attachments"`
}

// MailboxConfig configures blind mailboxes (docs/mailbox.md).
type MailboxConfig struct {
	// Service (relay profile) offers mailboxes to others, within the
	// limits below.
	Service bool `json:"service"`
	// MaxStorageMB caps the bytes of all mailboxes.
	MaxStorageMB int64 `json:"maxStorageMB"`
	// MaxMailboxMB and MaxMailboxMessages cap one mailbox.
	MaxMailboxMB       int64 `json:"maxMailboxMB"`
	MaxMailboxMessages int64 `json:"maxMailboxMessages"`
	// MaxMailboxes caps how many mailboxes the relay keeps.
	MaxMailboxes int64 `json:"maxMailboxes"`
	// DepositorMBPerHour caps what one peer deposits per hour.
	DepositorMBPerHour int64 `json:"depositorMBPerHour"`
	// Retention is how long a mailbox is kept after its day ends.
	Retention Duration `json:"retention"`
	// Relays (personal profile) are full multiaddrs (with /p2p/<id>) of
	// the relays this device keeps its mailbox on; contacts learn them
	// inside the encrypted conversation data. Empty: no mailbox.
	Relays []string `json:"relays"`
}

// AttachmentsConfig configures the attachment store.
type AttachmentsConfig struct {
	// QuotaMB caps the sealed bytes of attachments kept (0: 4096).
	QuotaMB int64 `json:"quotaMB"`
}

// NetworkConfig configures transports, addresses and connection limits.
type NetworkConfig struct {
	// ListenAddrs are the multiaddrs the host listens on.
	ListenAddrs []string `json:"listenAddrs"`
	// AnnounceAddrs, when set, replace the addresses the host advertises.
	AnnounceAddrs []string `json:"announceAddrs"`
	// BootstrapPeers are full multiaddrs (with /p2p/<id>) of DHT bootstrap nodes.
	BootstrapPeers []string `json:"bootstrapPeers"`
	// Relays are full multiaddrs of circuit relays used by AutoRelay when
	// this node is not publicly reachable.
	Relays []string `json:"relays"`
	// HolePunching enables DCUtR hole punching through relayed connections.
	HolePunching bool `json:"holePunching"`
	// NATPortMap asks the home router for a port mapping (UPnP / NAT-PMP).
	NATPortMap bool `json:"natPortMap"`
	// Reachability forces the AutoNAT verdict: "" (detect), "public" or "private".
	Reachability string `json:"reachability"`
	// ConnLow and ConnHigh are the connection manager's water marks.
	ConnLow  int `json:"connLow"`
	ConnHigh int `json:"connHigh"`
	// ConnGrace is how long a new connection is protected from trimming.
	ConnGrace Duration `json:"connGrace"`
	// MaxMemoryMB caps the resource manager's memory (0: scale to the machine).
	MaxMemoryMB int `json:"maxMemoryMB"`
	// MaxFileDescriptors caps the resource manager's descriptors (0: scale to the machine).
	MaxFileDescriptors int `json:"maxFileDescriptors"`
}

// DHTConfig configures the private DHT.
type DHTConfig struct {
	// Mode is "auto", "client" or "server".
	Mode string `json:"mode"`
}

// RelayConfig configures the relay service offered to others.
type RelayConfig struct {
	// Service turns on the circuit relay v2 service.
	Service bool `json:"service"`
	// MaxReservations is the number of peers that may hold a reservation.
	MaxReservations int `json:"maxReservations"`
	// MaxCircuits is the number of open relayed connections per peer.
	MaxCircuits int `json:"maxCircuits"`
	// ReservationTTL is how long a reservation lasts before it must be renewed.
	ReservationTTL Duration `json:"reservationTTL"`
	// LimitDuration is the longest a relayed connection may live.
	LimitDuration Duration `json:"limitDuration"`
	// LimitDataBytes is the most bytes relayed per direction per connection.
	LimitDataBytes int64 `json:"limitDataBytes"`
}

// APIConfig configures the local web server.
type APIConfig struct {
	// Listen is the host:port of the local API; it must be a loopback address
	// unless AllowNonLoopback is set.
	Listen string `json:"listen"`
	// AllowNonLoopback permits listening beyond loopback (for a phone on the
	// same network); the token is still required.
	AllowNonLoopback bool `json:"allowNonLoopback"`
}

// MetricsConfig configures the Prometheus metrics endpoint.
type MetricsConfig struct {
	// Enabled serves /metrics on Listen.
	Enabled bool `json:"enabled"`
	// Listen is the host:port of the metrics endpoint.
	Listen string `json:"listen"`
}

// Duration is a time.Duration written as a string such as "90s" or "2m".
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig returns the defaults of a profile.
func DefaultConfig(profile string) (Config, error) {
	c := Config{
		Profile: profile,
		Network: NetworkConfig{
			ListenAddrs: []string{
				"/ip4/0.0.0.0/udp/4101/quic-v1",
				"/ip4/0.0.0.0/udp/4101/quic-v1/webtransport",
				"/ip4/0.0.0.0/udp/4102/webrtc-direct",
				"/ip4/0.0.0.0/tcp/4101",
				"/ip6/::/udp/4101/quic-v1",
				"/ip6/::/tcp/4101",
			},
			AnnounceAddrs:  []string{},
			BootstrapPeers: []string{},
			Relays:         []string{},
			HolePunching:   true,
			ConnLow:        32,
			ConnHigh:       96,
			ConnGrace:      Duration(time.Minute),
		},
		DHT: DHTConfig{Mode: "auto"},
		Mailbox: MailboxConfig{
			MaxStorageMB: 1024, MaxMailboxMB: 8, MaxMailboxMessages: 4096, MaxMailboxes: 100_000,
			DepositorMBPerHour: 16, Retention: Duration(30 * 24 * time.Hour), Relays: []string{},
		},
		Attachments: AttachmentsConfig{QuotaMB: 4096},
		API:         APIConfig{Listen: "127.0.0.1:7878"},
		Metrics:     MetricsConfig{Listen: "127.0.0.1:9464"},
	}
	switch profile {
	case ProfilePersonal:
	case ProfileRelay:
		c.Network.ListenAddrs = []string{
			"/ip4/0.0.0.0/udp/4001/quic-v1",
			"/ip4/0.0.0.0/udp/4001/quic-v1/webtransport",
			"/ip4/0.0.0.0/udp/4002/webrtc-direct",
			"/ip4/0.0.0.0/tcp/4001",
			"/ip6/::/udp/4001/quic-v1",
			"/ip6/::/tcp/4001",
		}
		c.Network.HolePunching = false
		c.Network.Reachability = "public"
		c.Network.ConnLow, c.Network.ConnHigh = 512, 2048
		c.DHT.Mode = "server"
		c.Relay = RelayConfig{
			Service:         true,
			MaxReservations: 1024,
			MaxCircuits:     16,
			ReservationTTL:  Duration(time.Hour),
			// Generous compared with relay v2's default (2 min, 128 KiB):
			// Glitr's catch-up over a relay is chunked, but a relay we run
			// ourselves can afford to carry a first sync.
			LimitDuration:  Duration(10 * time.Minute),
			LimitDataBytes: 8 << 20,
		}
		c.API.Listen = "127.0.0.1:7879"
		c.Metrics.Enabled = true
	default:
		return Config{}, fmt.Errorf("%w: profile: %q is not %q or %q", ErrConfig, profile, ProfilePersonal, ProfileRelay)
	}
	return c, nil
}

// LoadConfig reads and validates a config file. Unknown fields, wrong types
// and invalid values are errors that name the file and the field; nothing
// is silently defaulted over what the user wrote.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates config JSON.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ):
			return Config{}, fmt.Errorf("%w: %s: expected %s, got JSON %s", ErrConfig, typ.Field, typ.Type, typ.Value)
		case errors.As(err, &syn):
			return Config{}, fmt.Errorf("%w: JSON syntax error at byte %d: %w", ErrConfig, syn.Offset, err)
		default:
			// Unknown fields come here as `json: unknown field "x"`.
			return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if dec.More() {
		return Config{}, fmt.Errorf("%w: trailing data after the config object", ErrConfig)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every field and returns the first problem, naming it.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if c.Profile != ProfilePersonal && c.Profile != ProfileRelay {
		return bad("profile", "%q is not %q or %q", c.Profile, ProfilePersonal, ProfileRelay)
	}
	n := c.Network
	if len(n.ListenAddrs) == 0 && c.Profile == ProfileRelay {
		return bad("network.listenAddrs", "a relay needs at least one listen address")
	}
	for i, s := range n.ListenAddrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return bad(fmt.Sprintf("network.listenAddrs[%d]", i), "%q: %v", s, err)
		}
		if !listenable(m) {
			return bad(fmt.Sprintf("network.listenAddrs[%d]", i), "%q: no transport listens there; use /ip4|ip6/<ip>/ followed by tcp/<port>, udp/<port>/quic-v1, udp/<port>/quic-v1/webtransport or udp/<port>/webrtc-direct", s)
		}
	}
	for i, s := range n.AnnounceAddrs {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return bad(fmt.Sprintf("network.announceAddrs[%d]", i), "%q: %v", s, err)
		}
	}
	for i, s := range n.BootstrapPeers {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			return bad(fmt.Sprintf("network.bootstrapPeers[%d]", i), "%q: need a multiaddr ending in /p2p/<peer id>: %v", s, err)
		}
	}
	for i, s := range n.Relays {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			return bad(fmt.Sprintf("network.relays[%d]", i), "%q: need a multiaddr ending in /p2p/<peer id>: %v", s, err)
		}
	}
	switch n.Reachability {
	case "", "public", "private":
	default:
		return bad("network.reachability", "%q is not \"\", \"public\" or \"private\"", n.Reachability)
	}
	if n.ConnLow < 0 || n.ConnHigh <= 0 || n.ConnLow > n.ConnHigh {
		return bad("network.connLow/connHigh", "need 0 <= connLow <= connHigh and connHigh > 0 (got %d, %d)", n.ConnLow, n.ConnHigh)
	}
	if n.ConnGrace < 0 {
		return bad("network.connGrace", "must not be negative")
	}
	if n.MaxMemoryMB < 0 || (n.MaxMemoryMB > 0 && n.MaxMemoryMB < 32) {
		return bad("network.maxMemoryMB", "%d: use 0 (scale to the machine) or at least 32", n.MaxMemoryMB)
	}
	if n.MaxFileDescriptors < 0 || (n.MaxFileDescriptors > 0 && n.MaxFileDescriptors < 64) {
		return bad("network.maxFileDescriptors", "%d: use 0 (scale to the machine) or at least 64", n.MaxFileDescriptors)
	}
	if m := c.Memory.SoftLimitMB; m < -1 || (m > 0 && m < 64) {
		return bad("memory.softLimitMB", "%d: use 0 (the default, %d MiB), -1 (no limit) or at least 64", m, DefaultSoftLimitMB)
	}
	switch c.DHT.Mode {
	case "auto", "client", "server":
	default:
		return bad("dht.mode", "%q is not \"auto\", \"client\" or \"server\"", c.DHT.Mode)
	}
	if r := c.Relay; r.Service {
		if r.MaxReservations <= 0 {
			return bad("relay.maxReservations", "must be positive when relay.service is on")
		}
		if r.MaxCircuits <= 0 {
			return bad("relay.maxCircuits", "must be positive when relay.service is on")
		}
		if r.ReservationTTL <= 0 {
			return bad("relay.reservationTTL", "must be positive when relay.service is on")
		}
		if r.LimitDuration < 0 || r.LimitDataBytes < 0 {
			return bad("relay.limitDuration/limitDataBytes", "must not be negative (0 means unlimited)")
		}
	}
	if m := c.Mailbox; m.Service {
		if c.Profile != ProfileRelay {
			return bad("mailbox.service", "only a relay offers mailboxes (profile %q)", c.Profile)
		}
		for _, f := range []struct {
			name string
			v    int64
		}{{"maxStorageMB", m.MaxStorageMB}, {"maxMailboxMB", m.MaxMailboxMB}, {"maxMailboxMessages", m.MaxMailboxMessages},
			{"maxMailboxes", m.MaxMailboxes}, {"depositorMBPerHour", m.DepositorMBPerHour}} {
			if f.v <= 0 {
				return bad("mailbox."+f.name, "must be positive when mailbox.service is on")
			}
		}
		if m.Retention < Duration(time.Hour) {
			return bad("mailbox.retention", "%s: at least 1h", time.Duration(m.Retention))
		}
	}
	for i, s := range c.Mailbox.Relays {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			return bad(fmt.Sprintf("mailbox.relays[%d]", i), "%q: need a multiaddr ending in /p2p/<peer id>: %v", s, err)
		}
	}
	if len(c.Mailbox.Relays) > 8 {
		return bad("mailbox.relays", "%d relays: at most 8", len(c.Mailbox.Relays))
	}
	if c.Attachments.QuotaMB < 0 {
		return bad("attachments.quotaMB", "must not be negative (0: 4096)")
	}
	if err := validateHostPort(c.API.Listen, !c.API.AllowNonLoopback); err != nil {
		return bad("api.listen", "%v", err)
	}
	if c.Metrics.Enabled {
		if err := validateHostPort(c.Metrics.Listen, false); err != nil {
			return bad("metrics.listen", "%v", err)
		}
	}
	return nil
}

// listenable reports whether one of the node's transports (TCP, QUIC-v1,
// WebTransport, WebRTC-direct) can listen on m. libp2p would start without
// such an address and only log it, silently dropping the user's setting.
func listenable(m ma.Multiaddr) bool {
	if len(m) < 2 || (m[0].Code() != ma.P_IP4 && m[0].Code() != ma.P_IP6) {
		return false
	}
	var rest []int
	for _, c := range m[1:] {
		rest = append(rest, c.Code())
	}
	for _, shape := range [][]int{
		{ma.P_TCP},
		{ma.P_UDP, ma.P_QUIC_V1},
		{ma.P_UDP, ma.P_QUIC_V1, ma.P_WEBTRANSPORT},
		{ma.P_UDP, ma.P_WEBRTC_DIRECT},
	} {
		if slices.Equal(rest, shape) {
			return true
		}
	}
	return false
}

func validateHostPort(s string, loopbackOnly bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if port == "" {
		return fmt.Errorf("%q: missing port", s)
	}
	if loopbackOnly {
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%q is not a loopback address (set api.allowNonLoopback to expose the API)", s)
		}
	}
	return nil
}

// Marshal encodes the config as indented JSON.
func (c Config) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
