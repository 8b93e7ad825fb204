package node

// Catch-up from the chat service's side: the catchup.Source and Sink over
// the conversations, what starts a session and how sessions are spaced
// (docs/sync.md §11, "Triggers"), the connections kept to contacts, and the
// link keeper's view of them (node/links).

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/glitr-chat/glitr/protocol"
)

// Summary implements catchup.Source, for p's view of the conversation
// (syncview.go): a stranger who learnt the sync id gets the answer for a
// conversation this node does not hold, a former member device the summary
// of the part it may fetch.
func (c *Chat) Summary(ctx context.Context, p peer.ID, syncID []byte) (protocol.Hello, bool, error) {
	conv, v, ok := c.viewOf(syncID, p)
	if !ok {
		return protocol.Hello{}, false, nil
	}
	if !v.full {
		h, err := c.restrictedHello(ctx, conv, syncID, v)
		return h, err == nil, err
	}
	h := protocol.Hello{SyncID: syncID, Vector: map[string]uint64{}}
	heads, err := c.store.Heads(ctx, conv.dagID)
	if err != nil {
		return h, false, err
	}
	for _, r := range heads {
		if len(h.Heads) == protocol.MaxHelloHeads {
			break
		}
		h.Heads = append(h.Heads, r.CID.Bytes())
	}
	vec, err := c.store.SeqVector(ctx, conv.dagID)
	if err != nil {
		return h, false, err
	}
	for d, s := range vec {
		h.Vector[string(d[:])] = s
	}
	n, err := c.store.Count(ctx, conv.dagID)
	h.Count = n
	return h, true, err
}

// Missing implements catchup.Source, within p's view.
func (c *Chat) Missing(ctx context.Context, p peer.ID, syncID []byte, theirs protocol.Hello, fn func(env []byte) error) error {
	conv, v, ok := c.viewOf(syncID, p)
	if !ok {
		return ErrNoConversation
	}
	heads := make([]cid.Cid, 0, len(theirs.Heads))
	for _, b := range theirs.Heads {
		if _, cd, err := cid.CidFromBytes(b); err == nil {
			heads = append(heads, cd)
		}
	}
	vec := make(map[dag.DeviceID]uint64, len(theirs.Vector))
	for k, s := range theirs.Vector {
		var d dag.DeviceID
		copy(d[:], k)
		vec[d] = s
	}
	// Their vector also tells us how far our own blocks have reached.
	self := c.id.DeviceID()
	if s := vec[dag.DeviceID(self)]; s > 0 {
		conv.mu.Lock()
		conv.ackedSeq = max(conv.ackedSeq, s)
		conv.mu.Unlock()
	}
	return c.store.MissingFunc(ctx, conv.dagID, heads, vec, v.filtered(fn))
}

// Ingest implements catchup.Sink.
func (c *Chat) Ingest(ctx context.Context, from peer.ID, syncID []byte, envs [][]byte) error {
	c.mu.RLock()
	conv := c.bySync[string(syncID)]
	c.mu.RUnlock()
	if conv == nil {
		return ErrNoConversation
	}
	res, err := c.ingest(ctx, conv, from, envs, false)
	// The batch crossed a rotation: what came before the first block under
	// the new epoch is in, and committing it installed the epoch. The rest
	// is taken at once, instead of failing the session and catching up
	// again (at least a second per rotation crossed, a retry backoff
	// soon after, for a device that was away for several epochs). Each
	// round installs an epoch, so the rounds are bounded by the batch.
	for rounds, n := 0, len(envs); errors.Is(err, errEpochArrived) && res.rest < len(envs) && rounds < n; rounds++ {
		envs = envs[res.rest:]
		var more ingestResult
		more, err = c.ingest(ctx, conv, from, envs, false)
		res.add(more)
		res.rest = more.rest
	}
	if errors.Is(err, errEpochWithheld) {
		// Written under an epoch this device never got: a device that
		// opened it can hand it over.
		c.history.Request(conv.id)
	}
	if res.committed > 0 {
		c.releaseHeld(ctx, conv)
	}
	c.log.Debug("catch-up batch", "conv", conv.hexID, "blocks", len(envs), "committed", res.committed, "notReady", res.notReady, "duplicates", res.duplicates, "err", err)
	if errors.Is(err, errDuplicate) {
		return nil
	}
	if res.notReady > 0 && err == nil {
		// Some blocks came before their links (a concurrent session is
		// bringing those); ask again once this session is over.
		c.wg.Go(func() {
			select {
			case <-c.ctx.Done():
			case <-time.After(3 * time.Second):
				c.syncWith(c.ctx, conv, from)
			}
		})
	}
	return err
}

// syncInterval spaces catch-up sessions with one peer for one conversation.
const syncInterval = time.Second

// maxSyncRetries bounds the quick retries of a failed catch-up session.
const maxSyncRetries = 5

// syncWith runs a catch-up session with p, at most once per syncInterval
// per peer and conversation.
func (c *Chat) syncWith(ctx context.Context, conv *conversation, p peer.ID) {
	if p == c.net.Host.ID() {
		return
	}
	if wait := c.claimSync(conv, p); wait > 0 {
		// Too soon after the last session: run once more when the
		// interval is over (coalescing further requests), never drop it.
		conv.mu.Lock()
		defer conv.mu.Unlock()
		if !conv.syncPending[p] {
			conv.syncPending[p] = true
			c.wg.Go(func() {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
				conv.mu.Lock()
				delete(conv.syncPending, p)
				conv.mu.Unlock()
				if ctx.Err() == nil {
					c.syncWith(ctx, conv, p)
				}
			})
		}
		return
	}
	c.runSync(ctx, conv, p)
}

// claimSync reserves a session with p: it returns 0 when one may start now
// (and records it as started), else how long until one may.
func (c *Chat) claimSync(conv *conversation, p peer.ID) time.Duration {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if wait := syncInterval - time.Since(conv.lastSync[p]); wait > 0 {
		return wait
	}
	conv.lastSync[p] = time.Now()
	return 0
}

// errEngineStarting: a session asked for before the engine was made.
var errEngineStarting = errors.New("catch-up engine not started yet")

// runSync runs the session claimSync reserved, and schedules the retries
// of one that failed.
func (c *Chat) runSync(ctx context.Context, conv *conversation, p peer.ID) catchup.Stats {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Loading the conversations at start can ask for a session before the
	// engine exists: it fails, and is retried like any failed one.
	var st catchup.Stats
	err := errEngineStarting
	if c.catchupReady.Load() {
		st, err = c.catchup.Sync(ctx, p, conv.syncID)
	}
	conv.mu.Lock()
	if err == nil {
		delete(conv.syncFailures, p)
	} else {
		conv.syncFailures[p]++
	}
	failures := conv.syncFailures[p]
	conv.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return st
		}
		c.log.Debug("catch-up", "conv", conv.hexID, "peer", p.String(), "err", err)
		// A session that failed (often on a connection that died under
		// it while a new one came up: the peer restarted) is retried
		// with backoff while the peer stays connected; the periodic
		// anti-entropy pass is too far away for a node that just
		// reconnected.
		// "Unknown" from a peer this device counts as a member device is
		// the peer's state lagging behind ours (it has not applied the
		// block that made us members yet): worth a retry too.
		if failures <= maxSyncRetries && (!errors.Is(err, catchup.ErrUnknown) || c.maySync(conv, p)) {
			delay := syncInterval << (failures - 1)
			c.wg.Go(func() {
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(delay):
				}
				if c.net.Host.Network().Connectedness(p) == network.Connected {
					c.syncWith(c.ctx, conv, p)
				}
			})
		}
		return st
	}
	c.log.Debug("caught up", "conv", conv.hexID, "peer", p.String(), "received", st.BlocksRecv, "sent", st.BlocksSent, "took", st.Duration)
	return st
}

// gossipHushMax bounds how far apart syncOnGossip spaces the sessions with
// a peer whose gossip keeps asking for catch-ups that bring nothing.
const gossipHushMax = time.Minute

// gossipSyncs spaces the catch-ups gossip asks for, per conversation and
// forwarding peer. The zero value is ready.
type gossipSyncs struct {
	mu sync.Mutex
	m  map[gossipKey]*gossipSync
}

type gossipKey struct {
	conv *conversation
	peer peer.ID
}

type gossipSync struct {
	// hush is the least time between two sessions: none at first, then
	// from a second, doubling up to gossipHushMax, while they bring
	// nothing.
	hush time.Duration
	last time.Time
	// running: a session is scheduled or running; again: another was
	// asked for meanwhile (it runs after, at most one).
	running, again bool
}

// trust ends the spacing of p's gossip-started sessions: p forwarded an
// authentic block (in a burst, gossip often delivers what a session was
// started for before the session runs, which then brings nothing).
func (g *gossipSyncs) trust(conv *conversation, p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.m[gossipKey{conv, p}]; st != nil {
		st.hush = 0
	}
}

// syncOnGossip starts the catch-up a gossiped block asks for (its parents
// or the blocks before it in its author's chain are missing, or its epoch
// is) with the peer that forwarded it: at once, and coalesced and spaced
// like every session with that peer (syncWith). A session that brought
// nothing doubles the spacing of the next one asked for by that peer's
// gossip: anyone connected can publish on a topic it has seen announced,
// and envelopes under a made-up epoch cannot be told from real ones until
// the epoch arrives, so a peer that sends junk gets at most one session per
// gossipHushMax. The validator calls it, so it does not block.
func (c *Chat) syncOnGossip(conv *conversation, p peer.ID) {
	g := &c.gossipSync
	k := gossipKey{conv, p}
	g.mu.Lock()
	if g.m == nil {
		g.m = map[gossipKey]*gossipSync{}
	}
	st := g.m[k]
	if st == nil {
		st = &gossipSync{}
		g.m[k] = st
	}
	if st.running {
		st.again = true
		g.mu.Unlock()
		return
	}
	st.running = true
	g.mu.Unlock()
	started := c.wg.Go(func() {
		defer func() {
			g.mu.Lock()
			st.running = false
			if st.hush == 0 {
				delete(g.m, k)
			}
			g.mu.Unlock()
		}()
		for {
			g.mu.Lock()
			wait := st.hush - time.Since(st.last)
			st.again = false
			g.mu.Unlock()
			// Past the hush, the session is claimed here rather than left
			// to syncWith, which would schedule one of its own.
			for {
				if wait <= 0 {
					if wait = c.claimSync(conv, p); wait <= 0 {
						break
					}
				}
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = 0
			}
			res := c.runSync(c.ctx, conv, p)
			g.mu.Lock()
			st.last = time.Now()
			if res.BlocksRecv > 0 {
				st.hush = 0
			} else {
				st.hush = min(max(2*st.hush, time.Second), gossipHushMax)
			}
			again := st.again
			g.mu.Unlock()
			if !again || c.ctx.Err() != nil {
				return
			}
		}
	})
	if !started {
		g.mu.Lock()
		st.running = false
		g.mu.Unlock()
	}
}

// maybeMerge emits an empty block when the conversation has more heads
// than one block can name, so the DAG's width stays bounded even when nobody
// writes: dag.Append builds on the oldest 16 heads. At most one per
// conversation per mergeInterval from this device.
func (c *Chat) maybeMerge(ctx context.Context, conv *conversation) error {
	heads, err := c.store.Heads(ctx, conv.dagID)
	if err != nil || len(heads) <= dag.MaxParents {
		return err
	}
	conv.mu.Lock()
	if time.Since(conv.lastMerge) < mergeInterval {
		conv.mu.Unlock()
		return nil
	}
	conv.lastMerge = time.Now()
	conv.mu.Unlock()
	_, err = c.commitOwn(ctx, conv, nil)
	return err
}

const mergeInterval = time.Minute

// memberPeers lists the connected peers of the conversation's other members
// whose cards we hold. Gossipsub's own view of a topic can lag behind the
// connections (a restarted peer can drop out of it for a while), so
// catch-up does not rely on it alone.
func (c *Chat) memberPeers(conv *conversation) []peer.ID {
	conv.mu.Lock()
	members := conv.state.Members()
	conv.mu.Unlock()
	self := c.id.AccountID()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []peer.ID
	for _, d := range c.ownDevs {
		if p, err := peer.IDFromBytes(d.Peer); err == nil && c.net.Host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	for _, m := range members {
		if keyring.AccountID(m.Account) == self {
			continue
		}
		if vc, ok := c.contacts[keyring.AccountID(m.Account)]; ok && c.net.Host.Network().Connectedness(vc.Peer.ID) == network.Connected {
			out = append(out, vc.Peer.ID)
		}
	}
	return out
}

// onConnected starts a catch-up with a contact that just connected, for
// every conversation it is a member of (the side with the smaller peer id
// starts it: sessions are symmetric). A second connection to a peer is a
// hint that the first one died without either side noticing (the peer
// found it dead and dialled again): the older ones are probed, and one
// that does not answer is closed, so that new streams (gossip, catch-up)
// take the new connection. A member coming back also makes the re-dial
// loops of the others try at once: the network may be back for them too.
func (c *Chat) onConnected(p peer.ID) {
	c.links.Connected(p)
	_, member := c.dialTarget(p)
	if c.net.Host.ID() > p {
		return
	}
	if member && !c.isOwnDevicePeer(p) {
		c.wg.Go(func() {
			if err := c.refreshCard(c.ctx, p); err != nil && c.ctx.Err() == nil {
				c.log.Debug("card refresh", "peer", p.String(), "err", err)
			}
		})
	}
	c.syncAllWith(p)
}

// syncAllWith starts a catch-up with p for every conversation it shares
// with this device: all of them for another device of this account, the
// ones a contact is a member of.
func (c *Chat) syncAllWith(p peer.ID) {
	for _, conv := range c.convsWith(p) {
		c.wg.Go(func() { c.syncFresh(conv, p) })
	}
}

// convsWith lists the conversations p takes part in.
func (c *Chat) convsWith(p peer.ID) []*conversation {
	if c.isOwnDevicePeer(p) {
		c.mu.RLock()
		convs := make([]*conversation, 0, len(c.convs)+1)
		if c.account != nil {
			convs = append(convs, c.account)
		}
		for _, conv := range c.convs {
			convs = append(convs, conv)
		}
		c.mu.RUnlock()
		return convs
	}
	c.mu.RLock()
	var acct keyring.AccountID
	found := false
	for a, vc := range c.contacts {
		if vc.Peer.ID == p {
			acct, found = a, true
		}
	}
	var convs []*conversation
	if found {
		for _, conv := range c.convs {
			convs = append(convs, conv)
		}
	}
	c.mu.RUnlock()
	return slices.DeleteFunc(convs, func(conv *conversation) bool {
		conv.mu.Lock()
		defer conv.mu.Unlock()
		member, _ := conv.state.IsMember(crdt.AccountID(acct))
		return !member
	})
}

// syncFresh is syncWith for a connection that just came up: when the last
// session with p failed (it ran on the connection that died), the spacing
// since that session does not hold this one back.
func (c *Chat) syncFresh(conv *conversation, p peer.ID) {
	conv.mu.Lock()
	if conv.syncFailures[p] > 0 {
		delete(conv.lastSync, p)
	}
	conv.mu.Unlock()
	c.syncWith(c.ctx, conv, p)
}

// antiEntropy syncs every conversation with one random member peer every
// 30–60 s, in case gossip dropped something.
func (c *Chat) antiEntropy() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(30*time.Second + mrand.N(30*time.Second)):
		}
		convs := c.conversationList()
		for _, conv := range convs {
			c.joinTopics(conv) // the day may have changed
			if err := c.maybeMerge(c.ctx, conv); err != nil && c.ctx.Err() == nil {
				c.log.Warn("merge block", "conv", conv.hexID, "err", err)
			}
			peers := c.memberPeers(conv)
			conv.mu.Lock()
			for _, jt := range conv.topics {
				peers = append(peers, jt.topic.ListPeers()...)
			}
			conv.mu.Unlock()
			if len(peers) > 0 {
				c.syncWith(c.ctx, conv, peers[mrand.N(len(peers))])
			}
		}
	}
}

// dialContacts keeps connections to contacts whose card addresses answer,
// so topics form and catch-up runs as soon as both sides are up. (Finding
// contacts whose addresses changed goes through the DHT: see the rendezvous
// records in protocol/.)
func (c *Chat) dialContacts() {
	for {
		c.mu.RLock()
		var peers []peer.AddrInfo
		for _, vc := range c.contacts {
			peers = append(peers, vc.Peer)
		}
		c.mu.RUnlock()
		for _, p := range c.ownDevicePeers() {
			peers = append(peers, peer.AddrInfo{ID: p})
		}
		for _, p := range peers {
			if c.net.Host.Network().Connectedness(p.ID) == network.Connected || c.links.Redialing(p.ID) {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
			_ = c.net.Host.Connect(ctx, p)
			cancel()
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(5*time.Second + mrand.N(5*time.Second)):
		}
	}
}

// ---- Dead and healed links: node/links, docs/sync.md §11 "Partitions" ----

// checkLinks probes the links to the conversation's peers after this
// device wrote to them (called on publish).
func (c *Chat) checkLinks(conv *conversation) {
	peers := c.memberPeers(conv)
	conv.mu.Lock()
	if name, ok := conv.sendTopic(c.now()); ok {
		if jt := conv.topics[name]; jt != nil {
			peers = append(peers, jt.topic.ListPeers()...)
		}
	}
	conv.mu.Unlock()
	c.links.Probe(peers)
}

// dialTarget reports whether p is a peer dialContacts keeps a connection
// to (a contact's or one of this account's devices), with the addresses
// its card gave.
func (c *Chat) dialTarget(p peer.ID) (peer.AddrInfo, bool) {
	c.mu.RLock()
	for _, vc := range c.contacts {
		if vc.Peer.ID == p {
			c.mu.RUnlock()
			return vc.Peer, true
		}
	}
	c.mu.RUnlock()
	if c.isOwnDevicePeer(p) {
		return peer.AddrInfo{ID: p}, true
	}
	return peer.AddrInfo{}, false
}

// linkMembers is the chat service as links.Members.
type linkMembers struct{ c *Chat }

func (m linkMembers) Target(p peer.ID) (peer.AddrInfo, bool) { return m.c.dialTarget(p) }
func (m linkMembers) Refused(p peer.ID) bool                 { return m.c.net.Graylisted(p) }

// Back starts the catch-ups with p when onConnected left them to p, which
// may still be writing to its dead connection.
func (m linkMembers) Back(p peer.ID) {
	if m.c.net.Host.ID() > p {
		m.c.syncAllWith(p)
	}
}
