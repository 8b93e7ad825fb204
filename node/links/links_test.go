package links

import (
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
)

// members is a fake Members: every peer in targets is kept.
type members struct {
	mu      sync.Mutex
	targets map[peer.ID]peer.AddrInfo
	refused map[peer.ID]bool
	back    []peer.ID
}

func (m *members) Target(p peer.ID) (peer.AddrInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ai, ok := m.targets[p]
	return ai, ok
}

func (m *members) Refused(p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused[p]
}

func (m *members) Back(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.back = append(m.back, p)
}

func (m *members) backs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.back)
}

// A member whose connection closes is re-dialled, and the owner hears that
// it is back; the owner's dial rounds are told to leave it alone meanwhile.
func TestLostMemberRedialled(t *testing.T) {
	a, b := testsupport.Host(t), testsupport.Host(t)
	m := &members{targets: map[peer.ID]peer.AddrInfo{b.ID(): testsupport.AddrInfo(b)}}
	k := New(a, m, testsupport.Logger(t))
	k.Start()
	t.Cleanup(k.Close)
	testsupport.Connect(t, a, b)
	start := time.Now()
	if err := b.Network().ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 2*time.Second, "a re-dial loop for B", func() bool { return k.Redialing(b.ID()) })
	testsupport.Eventually(t, 5*time.Second, "B back", func() bool { return m.backs() == 1 })
	if a.Network().Connectedness(b.ID()) != network.Connected {
		t.Fatal("Back was called, but A is not connected to B")
	}
	t.Logf("B back after %v", time.Since(start).Round(time.Millisecond))
	testsupport.Eventually(t, 2*time.Second, "the loop to end", func() bool { return !k.Redialing(b.ID()) })
}

// A peer that is not a member is not re-dialled, nor is a member that the
// owner refuses (graylisted) once the loop looks again.
func TestNoRedialForStrangersOrRefused(t *testing.T) {
	a, b, c := testsupport.Host(t), testsupport.Host(t), testsupport.Host(t)
	m := &members{
		targets: map[peer.ID]peer.AddrInfo{c.ID(): testsupport.AddrInfo(c)},
		refused: map[peer.ID]bool{c.ID(): true},
	}
	k := New(a, m, testsupport.Logger(t))
	k.Start()
	t.Cleanup(k.Close)
	testsupport.Connect(t, a, b)
	testsupport.Connect(t, a, c)
	if err := b.Network().ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	if err := c.Network().ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the first attempt (≈ 1 s)
	if k.Redialing(b.ID()) {
		t.Error("a stranger is being re-dialled")
	}
	if a.Network().Connectedness(c.ID()) == network.Connected || m.backs() != 0 {
		t.Error("a refused member was dialled again")
	}
}

// A probe of a link that answers leaves it open; Close ends every loop.
func TestProbeKeepsLiveLink(t *testing.T) {
	a, b := testsupport.Host(t), testsupport.Host(t)
	m := &members{targets: map[peer.ID]peer.AddrInfo{b.ID(): testsupport.AddrInfo(b)}}
	k := New(a, m, testsupport.Logger(t))
	k.Start()
	testsupport.Connect(t, a, b)
	conns := a.Network().ConnsToPeer(b.ID())
	if !k.probeLink(t.Context(), b.ID()) {
		t.Fatal("the probe of a live link found it dead")
	}
	k.Probe([]peer.ID{b.ID(), b.ID()})
	time.Sleep(300 * time.Millisecond)
	for _, c := range conns {
		if c.IsClosed() {
			t.Fatal("a live connection was closed")
		}
	}
	done := make(chan struct{})
	go func() { k.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if k.spawn(func() {}) {
		t.Error("a closed keeper started a goroutine")
	}
}
