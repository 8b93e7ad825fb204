package node

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

// loopbackConfig is a personal config that listens only on loopback with
// ephemeral ports, so tests never collide and never leave the machine.
func loopbackConfig(t testing.TB, listen ...string) Config {
	t.Helper()
	cfg, err := DefaultConfig(ProfilePersonal)
	if err != nil {
		t.Fatal(err)
	}
	if listen == nil {
		listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	}
	cfg.Network.ListenAddrs = listen
	cfg.Network.HolePunching = false
	cfg.DHT.Mode = "server"
	cfg.API.Listen = "127.0.0.1:0"
	return cfg
}

func newTestHost(t testing.TB, cfg Config) host.Host {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(cfg, sk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// startTestNode initializes a data directory with cfg and starts a node.
func startTestNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	dir, err := Init(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), dir, Options{Version: "test", Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// pairConversation makes two nodes that hold each other's cards and a
// conversation between them that both hold.
func pairConversation(t testing.TB) (a, b *Node, conv webui.Conversation) {
	t.Helper()
	a, b = chatPair(t)
	conv, err := a.CreateConversation(context.Background(), "", []string{accountOf(b)})
	if err != nil {
		t.Fatal(err)
	}
	waitForConversation(t, b, conv.ID)
	return a, b, conv
}

// hasMessage reports whether n shows a message with text in conversation id.
func hasMessage(t testing.TB, n *Node, id, text string) bool {
	t.Helper()
	return slices.ContainsFunc(messages(t, n, id), func(m webui.Message) bool { return m.Text == text })
}

// sendTopicOf is the topic conv's device publishes on at now.
func sendTopicOf(conv *conversation, now time.Time) string {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	name, _ := conv.sendTopic(now)
	return name
}
