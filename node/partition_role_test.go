package node

// The role of the partition lab (partition_test.go): a node in its
// namespace that takes commands on stdin and reports its state on stdout.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/glitr-chat/glitr/webui"
)

// TestPartitionRole is not a test on its own: the partition lab runs it in
// a namespace as one of the nodes.
func TestPartitionRole(t *testing.T) {
	if os.Getenv(partEnvRole) == "" {
		t.Skip("role process of the partition lab; runs only when started by it")
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(ev partEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
	}
	if err := partRole(emit); err != nil {
		emit(partEvent{Event: "error", Err: err.Error()})
		t.Fatal(err)
	}
}

func partRole(emit func(partEvent)) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := DefaultConfig(ProfilePersonal)
	if err != nil {
		return err
	}
	ip := os.Getenv(partEnvIP)
	cfg.Network.ListenAddrs = []string{
		fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, partPort),
		fmt.Sprintf("/ip4/%s/tcp/%d", ip, partPort),
	}
	cfg.Network.HolePunching = false
	cfg.DHT.Mode = "server"
	cfg.API.Listen = "127.0.0.1:0"
	dir, err := Init(os.Getenv(partEnvDir), cfg)
	if err != nil {
		return err
	}
	lvl := slog.LevelInfo
	if os.Getenv("GLITR_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	n, err := Start(ctx, dir, Options{Version: "test", Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	// Connection events go to the log (shown with GLITR_PARTITION_OUTPUT=1
	// or on failure): when a link comes back matters here.
	n.Host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			log.Info("connected", "peer", c.RemotePeer().String(), "transport", c.ConnState().Transport, "dir", c.Stat().Direction.String(), "remote", c.RemoteMultiaddr().String())
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			log.Info("disconnected", "peer", c.RemotePeer().String(), "transport", c.ConnState().Transport, "age", time.Since(c.Stat().Opened).Round(time.Millisecond).String())
		},
	})
	card, err := n.Card(ctx)
	if err != nil {
		return err
	}
	emit(partEvent{Event: "ready", Card: card, Account: accountOf(n), Peer: n.Host.ID().String()})

	cmds := make(chan partCmd)
	go func() {
		defer close(cmds)
		dec := json.NewDecoder(os.Stdin)
		for {
			var c partCmd
			if err := dec.Decode(&c); err != nil {
				return
			}
			cmds <- c
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for c := range cmds {
		ev := partEvent{Event: c.Cmd}
		var err error
		switch c.Cmd {
		case "add":
			_, err = n.AddContact(ctx, c.Card)
		case "create":
			var cv webui.Conversation
			cv, err = n.CreateConversation(ctx, "partition", c.Peers)
			ev.Conv = cv.ID
		case "watch":
			if err = partWaitConv(ctx, n, c.Conv); err == nil {
				wg.Go(func() { partWatch(ctx, n, c.Conv, emit) })
			}
		case "mesh":
			err = partWaitMesh(ctx, n, c.Conv, c.Peers)
		case "ping":
			var p peer.ID
			if p, err = peer.Decode(c.Peer); err == nil {
				// The least of a few: the first includes the stream's set-up.
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				rs := ping.Ping(pctx, n.Host, p)
				for range 5 {
					r := <-rs
					if err = r.Error; err != nil {
						break
					}
					if ev.Nanos == 0 || int64(r.RTT) < ev.Nanos {
						ev.Nanos = int64(r.RTT)
					}
				}
				pcancel()
			}
		case "send":
			// The answer comes when all are sent; the parent writes
			// three of these at once.
			go func() {
				ev := partEvent{Event: "send"}
				for i := range c.N {
					if _, err := n.Send(ctx, c.Conv, fmt.Sprintf("%s %03d", c.Prefix, i), ""); err != nil {
						ev.Err = err.Error()
						break
					}
				}
				emit(ev)
			}()
			continue
		case "texts":
			var page partPage
			if page, err = partTexts(ctx, n, c.Conv); err == nil {
				ev.Texts = page.texts
			}
		default:
			err = fmt.Errorf("unknown command %q", c.Cmd)
		}
		if err != nil {
			ev.Err = err.Error()
		}
		emit(ev)
	}
	return nil
}

type partPage struct {
	texts []string
	dups  int
}

func partTexts(ctx context.Context, n *Node, conv string) (partPage, error) {
	var out partPage
	seen := map[string]bool{}
	for after := -1; ; {
		p, err := n.MessagePage(ctx, conv, webui.MessageQuery{After: strconv.Itoa(after), Limit: webui.MaxPageLimit})
		if err != nil {
			return partPage{}, err
		}
		for _, m := range p.Messages {
			if seen[m.Text] {
				out.dups++
			}
			seen[m.Text] = true
			out.texts = append(out.texts, m.Text)
		}
		if len(p.Messages) == 0 || p.After >= p.Total-1 {
			return out, nil
		}
		after = p.After
	}
}

func partWaitConv(ctx context.Context, n *Node, conv string) error {
	return natlabPoll(ctx, 20*time.Second, func() bool {
		_, err := n.Chat.conversation(conv)
		return err == nil
	})
}

// partWaitMesh waits until this node is connected to every peer and sees
// them on the conversation's topic of today.
func partWaitMesh(ctx context.Context, n *Node, id string, peers []string) error {
	conv, err := n.Chat.conversation(id)
	if err != nil {
		return err
	}
	name := sendTopicOf(conv, n.Chat.now())
	return natlabPoll(ctx, 20*time.Second, func() bool {
		conv.mu.Lock()
		jt := conv.topics[name]
		conv.mu.Unlock()
		if jt == nil {
			return false
		}
		on := jt.topic.ListPeers()
		for _, s := range peers {
			p, err := peer.Decode(s)
			if err != nil || n.Host.Network().Connectedness(p) != network.Connected || !slices.Contains(on, p) {
				return false
			}
		}
		return true
	})
}

// partWatch reports the conversation's state hash, message count and
// duplicate texts now and after every change: on every event, and every
// 10 ms for the changes that publish none (this device's own receipts).
func partWatch(ctx context.Context, n *Node, id string, emit func(partEvent)) {
	conv, err := n.Chat.conversation(id)
	if err != nil {
		return
	}
	var last [32]byte
	report := func() {
		conv.mu.Lock()
		h := conv.state.StateHash()
		conv.mu.Unlock()
		if h == last {
			return
		}
		at := time.Now()
		page, err := partTexts(ctx, n, id)
		if err != nil {
			return
		}
		last = h
		emit(partEvent{Event: "state", Hash: hex.EncodeToString(h[:]), Count: len(page.texts), Dups: page.dups, At: at.UnixNano()})
	}
	report()
	changed := make(chan struct{}, 1)
	go func() {
		var seq uint64
		for {
			evs, _, err := n.Chat.events.wait(ctx, seq)
			if err != nil {
				return
			}
			for _, e := range evs {
				seq = max(seq, e.Seq)
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
		report()
	}
}
