// Package links keeps the links to the peers a node writes to alive, and
// finds a healed partition fast (docs/sync.md §11, "Partitions").
//
// A link that dies upstream closes nothing: libp2p keeps the connection
// (QUIC's idle timeout is 30 s, yamux's keep-alive 30 s) and whatever is
// written to it waits in the transport's retransmission queue, whose timer
// doubles at every loss (QUIC's PTO from about 30 ms on a LAN, TCP's RTO
// from 200 ms). When the link comes back, the next retransmission can be as
// far away as the partition is long, and no connection event starts a
// catch-up. So a node probes a member's link after it writes (the only
// time a dead link costs anything), closes a connection that does not
// answer, and re-dials on a short, bounded schedule: a fresh connection has
// no backoff, and the connection event starts the catch-up.
package links

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
)

const (
	// linkProbeSpacing is the least time between two probes of one peer;
	// probes asked for in between are coalesced into one at its end.
	linkProbeSpacing = time.Second
	// linkProbeMin and linkProbeMax bound how long a probe waits for the
	// answer: four round trips (the peer's latency as libp2p measured it)
	// plus a second, so that a loaded but working link is not cut.
	linkProbeMin = 1500 * time.Millisecond
	linkProbeMax = 5 * time.Second
	// A lost member is re-dialled every redialFastPeriod for
	// redialFastWindow (a partition that heals within it is found within
	// a period by each end: a few QUIC Initial packets per attempt, about
	// 3 KB/s per lost peer), then on a period doubling up to
	// redialMaxPeriod; after redialWindow the loop ends and dialContacts'
	// 5-10 s rounds are left. Most attempts dial only the peer's direct
	// QUIC addresses (one handshake, one connection); every
	// redialFullEvery-th dials them all (TCP, for a network that blocks
	// UDP). libp2p's limit on the rate of new connections per address
	// counted dials too and allowed only 16 before one every 5 s: it is
	// kept for inbound connections only (host.go, inboundRateLimited).
	redialFastPeriod  = 800 * time.Millisecond
	redialFastWindow  = time.Minute
	redialFullEvery   = 7
	redialFirstPeriod = time.Second
	redialMaxPeriod   = 8 * time.Second
	redialWindow      = 3 * time.Minute
	// redialDialMin and redialDialMax bound one dial attempt: three round
	// trips plus 0.4 s. QUIC retransmits its first handshake packet after
	// 200 ms, so an attempt sends two; with the fast period a healed link
	// is found within 0.6 s by each end.
	redialDialMin = 500 * time.Millisecond
	redialDialMax = 5 * time.Second
)

// Members is what the keeper asks of its owner (the chat service).
type Members interface {
	// Target reports whether p is a peer whose connection is kept (a
	// contact's device or one of this account's), with the addresses its
	// card gave.
	Target(p peer.ID) (peer.AddrInfo, bool)
	// Refused reports whether p may no longer be dialled (graylisted).
	Refused(p peer.ID) bool
	// Back is called when a re-dial got p back, after the connection
	// event: the connection may be one the other side does not use yet.
	Back(p peer.ID)
}

// Keeper probes the links to the peers this node writes to, closes dead
// connections and re-dials lost members. New makes one; Start runs it
// until Close.
type Keeper struct {
	h   host.Host
	m   Members
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	tasks  tasks.Group

	mu     sync.Mutex // guards everything below
	probes map[peer.ID]*linkProbe
	lost   map[peer.ID]*lostLink
	// wake is closed (and replaced) to make every re-dial loop try at
	// once: a member came back or the local addresses changed.
	wake chan struct{}
}

// New makes a keeper of h's links to m's peers.
func New(h host.Host, m Members, log *slog.Logger) *Keeper {
	ctx, cancel := context.WithCancel(context.Background())
	return &Keeper{h: h, m: m, log: log, ctx: ctx, cancel: cancel}
}

// Start watches for lost member links and local network changes.
func (k *Keeper) Start() { k.spawn(k.watch) }

// Close stops every probe and re-dial loop and waits for them.
func (k *Keeper) Close() {
	k.cancel()
	k.tasks.Close()
}

// spawn runs f on its own goroutine unless the keeper is closed, and
// reports whether it did.
func (k *Keeper) spawn(f func()) bool { return k.tasks.Go(f) }

// Probe probes the links to peers after this node wrote to them: each at
// once, or at the end of linkProbeSpacing after its last probe.
func (k *Keeper) Probe(peers []peer.ID) {
	peers = slices.Clone(peers)
	slices.Sort(peers)
	for _, p := range slices.Compact(peers) {
		k.probeSoon(p)
	}
}

// Connected is told of a new connection to p. A member coming back makes
// the re-dial loops of the others try at once (the network may be back for
// them too), and a second connection to p is the hint that the first died
// without either side noticing (p found it dead and dialled again): the
// older ones are probed, and one that does not answer is closed, so that
// new streams (gossip, catch-up) take the new connection.
func (k *Keeper) Connected(p peer.ID) {
	if _, member := k.m.Target(p); !member {
		return
	}
	k.wakeAll()
	if len(k.h.Network().ConnsToPeer(p)) > 1 {
		k.spawn(func() { k.probeLink(k.ctx, p) })
	}
}

type linkProbe struct {
	last    time.Time
	running bool
	again   bool // asked for while running: probe once more
}

// lostLink is a member peer being re-dialled.
type lostLink struct {
	since time.Time
	// dead: a probe found the link dead (not a peer that left), so a heal
	// is likely soon and the loop dials at once rather than after a period.
	dead bool
}

// wakeCh returns the channel the next wake-up closes. k.mu is held.
func (k *Keeper) wakeCh() chan struct{} {
	if k.wake == nil {
		k.wake = make(chan struct{})
	}
	return k.wake
}

// Redialing reports whether a re-dial loop owns p (the owner's own dial
// rounds leave it alone).
func (k *Keeper) Redialing(p peer.ID) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost[p] != nil
}

// wakeAll makes every re-dial loop try now.
func (k *Keeper) wakeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.wake != nil && len(k.lost) > 0 {
		close(k.wake)
		k.wake = nil
	}
}

// peerRTT is libp2p's latency estimate for p (from identify and pings),
// or def when it has none.
func (k *Keeper) peerRTT(p peer.ID, def time.Duration) time.Duration {
	if rtt := k.h.Peerstore().LatencyEWMA(p); rtt > 0 {
		return rtt
	}
	return def
}

// probeSoon probes p's link now, or at the end of linkProbeSpacing after
// the last probe (one probe then, however many were asked for).
func (k *Keeper) probeSoon(p peer.ID) {
	k.mu.Lock()
	if k.probes == nil {
		k.probes = map[peer.ID]*linkProbe{}
	}
	st := k.probes[p]
	if st == nil {
		st = &linkProbe{}
		k.probes[p] = st
	}
	if st.running {
		st.again = true
		k.mu.Unlock()
		return
	}
	st.running = true
	wait := linkProbeSpacing - time.Since(st.last)
	k.mu.Unlock()
	started := k.spawn(func() {
		for {
			if wait > 0 {
				select {
				case <-k.ctx.Done():
				case <-time.After(wait):
				}
			}
			k.mu.Lock()
			st.last, st.again = time.Now(), false
			k.mu.Unlock()
			if k.ctx.Err() == nil {
				k.probeLink(k.ctx, p)
			}
			k.mu.Lock()
			if !st.again || k.ctx.Err() != nil {
				st.running = false
				if !st.again && k.h.Network().Connectedness(p) != network.Connected {
					delete(k.probes, p)
				}
				k.mu.Unlock()
				return
			}
			k.mu.Unlock()
			wait = linkProbeSpacing
		}
	})
	if !started {
		k.mu.Lock()
		st.running = false
		k.mu.Unlock()
	}
}

// probeLink pings p over each of its connections at once and closes those
// that do not answer in time; a peer left without a connection is
// re-dialled. It reports whether any connection answered. Each connection
// is probed on its own: after a heal the peer's new connection is the best
// one for new streams, while gossipsub's stream can still sit on the dead
// one. Limited (relayed) connections are left out: a ping a second would
// spend their relay's data budget, and the relay ends them itself.
func (k *Keeper) probeLink(ctx context.Context, p peer.ID) bool {
	conns := slices.DeleteFunc(k.h.Network().ConnsToPeer(p), func(conn network.Conn) bool { return conn.Stat().Limited })
	if len(conns) == 0 {
		return false
	}
	timeout := min(max(4*k.peerRTT(p, 0)+time.Second, linkProbeMin), linkProbeMax)
	silent := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			err := k.ping(ctx, conn, timeout)
			// Only silence counts: a reset or a refusal is an answer (the
			// peer allows two ping streams at a time).
			silent[i] = err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded)
			if err != nil && !silent[i] {
				k.log.Debug("link probe", "peer", p.String(), "err", err)
			}
		})
	}
	wg.Wait()
	var dead []network.Conn
	for i, conn := range conns {
		if silent[i] && !conn.IsClosed() {
			k.log.Debug("link dead: closing the connection", "peer", p.String(), "transport", conn.ConnState().Transport,
				"age", time.Since(conn.Stat().Opened).Round(time.Millisecond).String())
			dead = append(dead, conn)
		}
	}
	if len(dead) == len(conns) {
		// Marked before the close, so that the disconnection finds the
		// fast re-dial state.
		k.linkLost(p, true)
	}
	for _, conn := range dead {
		_ = conn.Close()
	}
	return len(dead) < len(conns)
}

// ping runs one libp2p ping (/ipfs/ping/1.0.0) with the peer over conn,
// within timeout (an error wrapping context.DeadlineExceeded when the
// answer does not come).
func (k *Keeper) ping(ctx context.Context, conn network.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := conn.NewStream(ctx)
	if err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := s.SetProtocol(ping.ID); err != nil {
		s.Reset()
		return err
	}
	if err := s.Scope().SetService(ping.ServiceName); err != nil {
		s.Reset()
		return err
	}
	// Lazy negotiation: the protocol header travels with the ping, so a
	// probe costs one round trip.
	rw := msmux.NewMSSelect(s, ping.ID)
	buf := make([]byte, 2*ping.PingSize)
	_, _ = rand.Read(buf[:ping.PingSize])
	_, err = rw.Write(buf[:ping.PingSize])
	if err == nil {
		_, err = io.ReadFull(rw, buf[ping.PingSize:])
	}
	if err != nil {
		s.Reset()
		if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
			return fmt.Errorf("ping: %w", context.DeadlineExceeded)
		}
		return err
	}
	_ = s.Close()
	if !bytes.Equal(buf[:ping.PingSize], buf[ping.PingSize:]) {
		return errors.New("ping answered with other bytes")
	}
	return nil
}

// linkLost starts re-dialling p (once; dead only makes it faster).
func (k *Keeper) linkLost(p peer.ID, dead bool) {
	if k.ctx.Err() != nil {
		return
	}
	if _, ok := k.m.Target(p); !ok && !dead {
		return // not a peer we keep a connection to
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lost == nil {
		k.lost = map[peer.ID]*lostLink{}
	}
	if ll := k.lost[p]; ll != nil {
		if dead && !ll.dead {
			ll.dead = true
			ll.since = time.Now()
		}
		return
	}
	ll := &lostLink{since: time.Now(), dead: dead}
	k.lost[p] = ll
	if !k.spawn(func() { k.redial(p, ll) }) {
		delete(k.lost, p)
	}
}

// redial dials p until it is connected again, on the schedule of the
// redial constants, and starts the catch-ups a connection event starts.
func (k *Keeper) redial(p peer.ID, ll *lostLink) {
	defer func() {
		k.mu.Lock()
		if k.lost[p] == ll {
			delete(k.lost, p)
		}
		k.mu.Unlock()
	}()
	defer func() {
		if sw, ok := k.h.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p) // the addresses quicOnly left out
		}
	}()
	k.mu.Lock()
	dead := ll.dead
	k.mu.Unlock()
	period := redialFirstPeriod
	next := time.Now().Add(redialJitter(period))
	if dead {
		next = time.Now() // the probe has just failed: the link died a while ago
	}
	for attempts := 0; ; attempts++ {
		k.mu.Lock()
		wake := k.wakeCh()
		since := time.Since(ll.since)
		if ll.dead && !dead {
			// A probe found the link dead meanwhile.
			dead, attempts, next = true, 0, time.Now()
		}
		k.mu.Unlock()
		select {
		case <-k.ctx.Done():
			return
		case <-wake:
		case <-time.After(time.Until(next)):
		}
		if k.h.Network().Connectedness(p) == network.Connected {
			return // the peer dialled us, or another dial got there
		}
		if since > redialWindow || k.m.Refused(p) {
			return
		}
		ai, ok := k.m.Target(p)
		if !ok {
			ai = peer.AddrInfo{ID: p} // a member met on a topic: the peerstore's addresses
		}
		// The swarm's own backoff (5 s and growing, per peer) would refuse
		// the dial: this loop is the backoff. It also serves to leave the
		// addresses other than QUIC out of most attempts.
		if sw, ok := k.h.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(p)
			if attempts%redialFullEvery != redialFullEvery-1 {
				k.quicOnly(sw, p, ai.Addrs)
			}
		}
		started := time.Now()
		timeout := min(max(3*k.peerRTT(p, 0)+400*time.Millisecond, redialDialMin), redialDialMax)
		ctx, cancel := context.WithTimeout(k.ctx, timeout)
		err := k.h.Connect(ctx, ai)
		cancel()
		if err == nil {
			k.log.Debug("link back", "peer", p.String(), "after", time.Since(ll.since).Round(time.Millisecond).String(), "attempts", attempts+1)
			k.m.Back(p)
			return
		}
		k.log.Debug("re-dial", "peer", p.String(), "attempt", attempts+1, "err", err)
		if time.Since(ll.since) < redialFastWindow {
			period = redialFastPeriod
		} else {
			period = min(2*period, redialMaxPeriod)
		}
		next = started.Add(redialJitter(period))
	}
}

// quicOnly puts p's addresses other than direct QUIC ones in the swarm's
// dial backoff, when it has a direct QUIC one, so that the next dial makes
// one connection attempt instead of one per transport.
func (k *Keeper) quicOnly(sw *swarm.Swarm, p peer.ID, extra []ma.Multiaddr) {
	addrs := append(k.h.Peerstore().Addrs(p), extra...)
	isQUIC := func(a ma.Multiaddr) bool {
		quic := false
		for _, c := range a {
			switch c.Code() {
			case ma.P_QUIC_V1:
				quic = true
			case ma.P_WEBTRANSPORT, ma.P_CIRCUIT, ma.P_WEBRTC_DIRECT:
				return false
			}
		}
		return quic
	}
	if !slices.ContainsFunc(addrs, isQUIC) {
		return
	}
	for _, a := range addrs {
		if !isQUIC(a) {
			sw.Backoff().AddBackoff(p, a)
		}
	}
}

// redialJitter spreads d by ±10%, so that the loops for several peers (and
// the two ends of a link) do not dial in step: any one getting through
// wakes the others.
func redialJitter(d time.Duration) time.Duration {
	return d - d/10 + mrand.N(d/5+1)
}

// watch watches for lost member links and local network changes until
// Close.
func (k *Keeper) watch() {
	nb := &network.NotifyBundle{DisconnectedF: func(_ network.Network, conn network.Conn) {
		p := conn.RemotePeer()
		if k.h.Network().Connectedness(p) != network.Connected {
			k.linkLost(p, false)
		}
	}}
	k.h.Network().Notify(nb)
	defer k.h.Network().StopNotify(nb)
	sub, err := k.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		k.log.Warn("subscribe to address changes", "err", err)
		<-k.ctx.Done()
		return
	}
	defer sub.Close()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-sub.Out():
			// A new or lost address: the network changed (another Wi-Fi, a
			// mobile network, an interface back up). Lost members may be
			// reachable again; identify pushes the new addresses to those
			// still connected.
			k.wakeAll()
		}
	}
}
