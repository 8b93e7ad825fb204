package node

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/mailbox"
	"github.com/glitr-chat/glitr/protocol"
)

func relayConfig(t testing.TB, mailboxes bool) Config {
	t.Helper()
	cfg, err := DefaultConfig(ProfileRelay)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Network.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Metrics.Enabled = false
	cfg.Mailbox.Service = mailboxes
	return cfg
}

// A relay offers mailboxes only when its config says so, within the
// configured limits, and what it stored survives a restart.
func TestRelayOffersMailboxesByConfig(t *testing.T) {
	if r := startTestNode(t, relayConfig(t, false)); slices.Contains(r.Host.Mux().Protocols(), protocol.MailboxProtocol) {
		t.Fatal("a relay offers mailboxes without being asked to")
	}
	cfg := relayConfig(t, true)
	cfg.Mailbox.MaxMailboxMessages = 5
	dir, err := Init(filepath.Join(t.TempDir(), "relay"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *Node {
		n, err := Start(context.Background(), dir, Options{Version: "test", Logger: testsupport.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	r := start()
	if !slices.Contains(r.Host.Mux().Protocols(), protocol.MailboxProtocol) {
		t.Fatal("mailbox.service on, but no mailbox protocol")
	}
	owner, _ := mailbox.NewOwnerKey(rand.Reader)
	capa, _ := owner.DepositKey().Capability(mailbox.PeriodOf(time.Now()))
	client := mailbox.NewClient(testsupport.Host(t), mailbox.ClientOptions{})
	ctx := context.Background()
	items := [][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5"), []byte("6")}
	res, err := client.Deposit(ctx, addrInfo(r.Host), capa, items)
	if !errors.Is(err, mailbox.ErrMailboxFull) || res.Stored != 0 {
		t.Fatalf("six into a mailbox of five: %+v %v", res, err)
	}
	if _, err := client.Deposit(ctx, addrInfo(r.Host), capa, items[:5]); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = start()
	defer r.Close()
	var got []string
	_, err = client.Drain(ctx, addrInfo(r.Host), owner.DrainKeys([]mailbox.Period{capa.Period}), mailbox.DrainOptions{}, func(it mailbox.Item) error {
		got = append(got, string(it.Envelope))
		return nil
	})
	if err != nil || strings.Join(got, "") != "12345" {
		t.Fatalf("after a restart: %q %v", got, err)
	}
}

func TestMailboxConfigChecked(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"personal offers":  func(c *Config) { c.Profile = ProfilePersonal },
		"no storage":       func(c *Config) { c.Mailbox.MaxStorageMB = 0 },
		"short retention":  func(c *Config) { c.Mailbox.Retention = Duration(time.Minute) },
		"relay without id": func(c *Config) { c.Mailbox.Relays = []string{"/ip4/127.0.0.1/tcp/4001"} },
	} {
		cfg := relayConfig(t, true)
		edit(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "mailbox.") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
