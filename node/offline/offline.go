// Package offline delivers to devices that are not online when a message
// is written: the personal node's side of the blind mailboxes on relays
// (docs/mailbox.md). It deposits the envelopes this device writes into
// the mailboxes of member devices it cannot reach, and drains this
// device's own mailboxes on start, on reconnecting to a relay and
// periodically, handing what it drains to the conversations through the
// same ingest as sync.
//
// The relay protocol, the key schedule and the relay's store are package
// node/mailbox; this package decides when to deposit, where, and what to
// do with what is drained. It reaches the conversations only through
// Chat.
package offline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/glitr-chat/glitr/node/mailbox"
	"github.com/glitr-chat/glitr/protocol"
)

// Chat is what the service needs from the conversation service.
type Chat interface {
	// IngestMailbox takes envelopes drained from a mailbox, in the order
	// they were deposited, for the conversation whose sync id is syncID,
	// as a catch-up batch. The bytes are untrusted: an error wrapping
	// protocol.ErrBadPeer (or naming an unknown conversation,
	// ErrUnknownConversation) drops them; any other error is a local
	// failure, and the envelopes are left at the relay to come again.
	IngestMailbox(ctx context.Context, syncID []byte, envelopes [][]byte) error
}

// ErrNotReady is what Chat.IngestMailbox returns when it holds the
// envelopes only in part: blocks waiting for parents that have not
// arrived, or sealed under an epoch not here yet. They stay at the relay
// and are drained again later; the other conversations' are taken.
var ErrNotReady = errors.New("offline: envelopes not all taken yet")

// ErrUnknownConversation is what Chat.IngestMailbox returns for a sync id
// it does not know (a conversation left, or a forged item).
var ErrUnknownConversation = errors.New("offline: no conversation with that sync id")

// Recipient is a member device to deliver to.
type Recipient struct {
	Peer peer.ID
	// Mailbox is the device's announced mailbox address (encoded
	// mailbox.Address); a device without one gets nothing here.
	Mailbox []byte
}

// Options configure a Service.
type Options struct {
	// Secret is this device's mailbox secret (the node keeps it sealed at
	// rest with its keys).
	Secret [mailbox.SecretSize]byte
	// Relays are this device's mailbox relays; none: no own mailbox (this
	// device still deposits for others).
	Relays []peer.AddrInfo
	// DrainEvery is how often the mailboxes are drained besides on start
	// and on reconnecting to a relay (default 2 min).
	DrainEvery time.Duration
	// Delay batches deposits: an envelope waits this long for others to
	// the same mailbox (default 250 ms).
	Delay time.Duration
	// Retention is how far back a drain looks (default 30 days, the
	// relays' default retention).
	Retention time.Duration
	// MaxQueued caps the envelope bytes waiting for deposit (default
	// 64 MiB); past it the oldest go (they still sync when both sides are
	// online).
	MaxQueued int
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Client tunes the mailbox client (tests).
	Client mailbox.ClientOptions
}

func (o *Options) defaults() {
	if o.DrainEvery <= 0 {
		o.DrainEvery = 2 * time.Minute
	}
	if o.Delay <= 0 {
		o.Delay = 250 * time.Millisecond
	}
	if o.Retention <= 0 {
		o.Retention = 30 * 24 * time.Hour
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 64 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// skew is how far from the relay's clock a deposit's period may lie; the
// drain looks that far around the periods it covers.
const skew = time.Hour

// Service is the offline-delivery service; see the package doc.
type Service struct {
	h      host.Host
	d      ds.Batching
	chat   Chat
	opts   Options
	log    *slog.Logger
	owner  *mailbox.OwnerKey
	client *mailbox.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     tasks.Group
	// Deposits run under their own context, which Close ends only once
	// they are done (or its deadline passed): a message written just
	// before the node stops still reaches the mailbox.
	depositCtx     context.Context
	cancelDeposits context.CancelFunc
	inflight       sync.WaitGroup
	kick           chan struct{} // asks the drain loop for a drain now

	mu      sync.Mutex
	queues  map[string]*queue // by encoded mailbox address
	queued  int               // bytes in all queues
	drainMu sync.Mutex        // one drain at a time
	stats   Stats
}

// queue is what waits for one mailbox.
type queue struct {
	addr  mailbox.Address
	peer  peer.ID
	items [][]byte // sealed
	bytes int
	timer bool // a flush is scheduled
	fails int
}

// Stats count what the service did.
type Stats struct {
	Deposited, DepositFailed, Drained, Dropped, Bad int
}

// New returns a service on h; Start runs it.
func New(h host.Host, d ds.Batching, chat Chat, opts Options) *Service {
	opts.defaults()
	co := opts.Client
	if co.Logger == nil {
		co.Logger = opts.Logger
	}
	if co.Now == nil {
		co.Now = opts.Now
	}
	s := &Service{
		h: h, d: d, chat: chat, opts: opts, log: opts.Logger,
		owner: mailbox.OwnerKeyFromSecret(opts.Secret), client: mailbox.NewClient(h, co),
		kick: make(chan struct{}, 1), queues: map[string]*queue{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.depositCtx, s.cancelDeposits = context.WithCancel(context.Background())
	return s
}

// Address is this device's mailbox address to announce to its
// conversations (nil when it has no relays).
func (s *Service) Address() ([]byte, error) {
	if len(s.opts.Relays) == 0 {
		return nil, nil
	}
	return mailbox.Address{Key: s.owner.DepositKey(), Relays: s.opts.Relays}.MarshalBinary()
}

// Start drains at once, then on every reconnection to a relay and every
// DrainEvery.
func (s *Service) Start() {
	if len(s.opts.Relays) == 0 {
		return
	}
	sub, err := s.h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		s.log.Warn("offline: no connection events; draining on a timer only", "err", err)
	}
	relays := map[peer.ID]bool{}
	for _, r := range s.opts.Relays {
		relays[r.ID] = true
	}
	if sub != nil {
		s.wg.Go(func() {
			defer sub.Close()
			for {
				select {
				case <-s.ctx.Done():
					return
				case e, ok := <-sub.Out():
					if !ok {
						return
					}
					if ev := e.(event.EvtPeerConnectednessChanged); ev.Connectedness == network.Connected && relays[ev.Peer] {
						s.Kick()
					}
				}
			}
		})
	}
	s.wg.Go(func() {
		t := time.NewTicker(s.opts.DrainEvery)
		defer t.Stop()
		for {
			if _, err := s.Drain(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Debug("offline: drain", "err", err)
			}
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			case <-s.kick:
			}
		}
	})
}

// Kick asks for a drain now (coalesced with one that is due).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close deposits what is queued, waiting for deposits under way (for at
// most a few seconds), then stops.
func (s *Service) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		s.cancelDeposits()
	}()
	s.flushAll(ctx)
	s.inflight.Wait()
	s.flushAll(ctx) // what a deposit under way gave back
	s.cancel()
	s.cancelDeposits()
	s.wg.Close()
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Items are this format inside the sealed item (mailbox.SealItem):
//
//	version 1 ‖ uvarint(len(sync id)) ‖ sync id ‖ envelope
const itemVersion = 1

// MaxSyncID caps a sync id in an item.
const MaxSyncID = 64

func encodeItem(syncID, env []byte) []byte {
	b := []byte{itemVersion}
	b = binary.AppendUvarint(b, uint64(len(syncID)))
	b = append(b, syncID...)
	return append(b, env...)
}

// ErrBadItem marks an item whose payload does not decode.
var ErrBadItem = errors.New("offline: malformed mailbox item")

func decodeItem(b []byte) (syncID, env []byte, err error) {
	if len(b) < 2 || b[0] != itemVersion {
		return nil, nil, fmt.Errorf("%w: version", ErrBadItem)
	}
	n, w := binary.Uvarint(b[1:])
	if w <= 0 || n == 0 || n > MaxSyncID || n > uint64(len(b)-1-w) {
		return nil, nil, fmt.Errorf("%w: sync id", ErrBadItem)
	}
	syncID = b[1+w : 1+w+int(n)]
	env = b[1+w+int(n):]
	if len(env) == 0 {
		return nil, nil, fmt.Errorf("%w: no envelope", ErrBadItem)
	}
	return syncID, env, nil
}

// Deposit queues env (an envelope of the conversation with sync id
// syncID, written by this device) for every recipient that is not
// connected and has a mailbox. The deposit happens after Options.Delay,
// batched per mailbox; a recipient that connects meanwhile gets it by
// sync instead.
func (s *Service) Deposit(syncID, env []byte, to []Recipient) {
	payload := encodeItem(syncID, env)
	for _, r := range to {
		if len(r.Mailbox) == 0 || r.Peer == s.h.ID() || s.h.Network().Connectedness(r.Peer) == network.Connected {
			continue
		}
		addr, err := mailbox.ParseAddress(r.Mailbox)
		if err != nil {
			s.log.Debug("offline: a member's mailbox address does not parse", "peer", r.Peer, "err", err)
			continue
		}
		item, err := addr.Key.SealItem(payload)
		if err != nil {
			s.log.Warn("offline: seal", "err", err)
			continue
		}
		s.enqueue(string(r.Mailbox), addr, r.Peer, item)
	}
}

func (s *Service) enqueue(key string, addr mailbox.Address, p peer.ID, item []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	if q == nil {
		q = &queue{addr: addr, peer: p}
		s.queues[key] = q
	}
	q.items = append(q.items, item)
	q.bytes += len(item)
	s.queued += len(item)
	s.trimLocked()
	s.rescheduleLocked(key, q)
}

// trimLocked drops the oldest queued items past MaxQueued.
func (s *Service) trimLocked() {
	for s.queued > s.opts.MaxQueued {
		var oldest *queue
		for _, q := range s.queues {
			if len(q.items) > 0 && (oldest == nil || q.bytes > oldest.bytes) {
				oldest = q
			}
		}
		if oldest == nil {
			return
		}
		n := len(oldest.items[0])
		oldest.items, oldest.bytes, s.queued = oldest.items[1:], oldest.bytes-n, s.queued-n
		s.stats.Dropped++
	}
}

func (s *Service) flushAll(ctx context.Context) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.queues))
	for k := range s.queues {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		if ctx.Err() != nil {
			return
		}
		s.flush(k)
	}
}

// flush deposits one mailbox's queue: at the first of its relays that
// takes it; on refusal or failure at the next; when all refuse, again
// later with backoff.
func (s *Service) flush(key string) {
	s.mu.Lock()
	q := s.queues[key]
	if q == nil || len(q.items) == 0 {
		if q != nil {
			q.timer = false
		}
		s.mu.Unlock()
		return
	}
	items, addr, p := q.items, q.addr, q.peer
	q.items, q.bytes = nil, 0
	s.queued -= sumLen(items)
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	// Deposits run under their own context: see Close.
	ctx := s.depositCtx
	if s.h.Network().Connectedness(p) == network.Connected {
		// Online now: sync delivers it.
		s.mu.Lock()
		q.timer = false
		s.mu.Unlock()
		return
	}
	var errs []error
	done := false
	now := s.opts.Now()
	for _, relay := range addr.Relays {
		capa, err := addr.Key.Capability(mailbox.PeriodOf(now))
		if err != nil {
			errs = append(errs, err)
			break
		}
		res, err := s.client.Deposit(ctx, relay, capa, items)
		if err == nil {
			done = true
			s.mu.Lock()
			s.stats.Deposited += len(items)
			s.mu.Unlock()
			break
		}
		// What the relay stored before a refusal stays stored.
		items = items[res.Stored+res.Duplicate:]
		errs = append(errs, fmt.Errorf("relay %s: %w", relay.ID, err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q.timer = false
	if done {
		q.fails = 0
		if len(q.items) > 0 {
			s.rescheduleLocked(key, q)
		}
		return
	}
	s.stats.DepositFailed++
	q.fails++
	s.log.Info("offline: deposit failed; will retry", "peer", p, "envelopes", len(items), "err", errors.Join(errs...))
	if ctx.Err() != nil {
		return
	}
	q.items = append(items, q.items...)
	q.bytes += sumLen(items)
	s.queued += sumLen(items)
	s.trimLocked()
	s.rescheduleLocked(key, q)
}

func (s *Service) rescheduleLocked(key string, q *queue) {
	if q.timer {
		return
	}
	q.timer = true
	delay := s.opts.Delay
	if q.fails > 0 {
		delay = min(time.Duration(1<<min(q.fails, 8))*time.Second, 5*time.Minute)
	}
	s.wg.Go(func() {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(delay):
		}
		s.flush(key)
	})
}

func sumLen(items [][]byte) int {
	n := 0
	for _, it := range items {
		n += len(it)
	}
	return n
}

// drainPage caps the items one drain request brings, so a page of the
// largest envelopes is about 33 MiB in memory.
const drainPage = 512

// lastKey remembers, per relay, when a drain last completed.
func lastKey(relay peer.ID) ds.Key { return ds.NewKey("/offline/drained/" + relay.String()) }

// Drain drains every own mailbox at every relay and returns how many
// envelopes it handed to the conversations.
func (s *Service) Drain(ctx context.Context) (int, error) {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	total := 0
	var errs []error
	for _, relay := range s.opts.Relays {
		n, err := s.drainRelay(ctx, relay)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("relay %s: %w", relay.ID, err))
		}
	}
	return total, errors.Join(errs...)
}

func (s *Service) drainRelay(ctx context.Context, relay peer.AddrInfo) (int, error) {
	var since time.Time
	if b, err := s.d.Get(ctx, lastKey(relay.ID)); err == nil {
		_ = json.Unmarshal(b, &since)
	}
	now := s.opts.Now()
	keys := s.owner.DrainKeys(mailbox.DrainPeriods(now, since, skew, s.opts.Retention))
	byID := map[mailbox.ID]*mailbox.DrainKey{}
	for _, k := range keys {
		byID[k.ID] = k
	}
	total := 0
	after := map[mailbox.ID]uint64{}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), protocol.MaxDrainMailboxes)]
		// Kept at the relay until the conversations hold them: acked
		// only then, so a crash or a full disk loses nothing.
		var items []mailbox.Item
		// At most drainPage items held at once (a relay may send
		// envelopes of 66 KiB each): the rest come with the next page.
		res, err := s.client.Drain(ctx, relay, batch, mailbox.DrainOptions{After: after, Keep: true, Limit: drainPage}, func(it mailbox.Item) error {
			items = append(items, it)
			return nil
		})
		if err != nil {
			return total, err
		}
		taken, acks, takeErr := s.takeAll(ctx, items)
		total += taken
		for id, ds := range acks {
			for len(ds) > 0 {
				n := min(len(ds), protocol.MaxAckDigests)
				if _, err := s.client.Ack(ctx, relay, byID[id], ds[:n]); err != nil {
					return total, fmt.Errorf("ack: %w", err)
				}
				ds = ds[n:]
			}
		}
		if takeErr != nil {
			return total, takeErr
		}
		for id, last := range res.Last {
			after[id] = last
		}
		if res.More {
			continue
		}
		keys = keys[len(batch):]
	}
	if b, err := json.Marshal(now); err == nil {
		if err := s.d.Put(ctx, lastKey(relay.ID), b); err != nil {
			s.log.Warn("offline: remember the drain", "err", err)
		}
	}
	return total, nil
}

// takeAll opens the drained items and hands them to the conversations,
// one batch per conversation in the order they came. It returns how many
// were taken and, per mailbox, the digests to ack: those taken and those
// dropped as bad (they would only come again). A local failure stops it;
// what it had not handed over is not acked.
func (s *Service) takeAll(ctx context.Context, items []mailbox.Item) (int, map[mailbox.ID][]mailbox.Digest, error) {
	acks := map[mailbox.ID][]mailbox.Digest{}
	type group struct {
		sync  []byte
		envs  [][]byte
		items []mailbox.Item
	}
	var order []string
	groups := map[string]*group{}
	bad := 0
	for _, it := range items {
		payload, err := s.owner.OpenItem(it.Envelope)
		var syncID, env []byte
		if err == nil {
			syncID, env, err = decodeItem(payload)
		}
		if err != nil {
			bad++
			acks[it.Mailbox] = append(acks[it.Mailbox], it.Digest)
			s.log.Debug("offline: dropped a mailbox item", "err", err)
			continue
		}
		g := groups[string(syncID)]
		if g == nil {
			g = &group{sync: syncID}
			groups[string(syncID)] = g
			order = append(order, string(syncID))
		}
		g.envs = append(g.envs, env)
		g.items = append(g.items, it)
	}
	taken := 0
	ack := func(its []mailbox.Item) {
		for _, it := range its {
			acks[it.Mailbox] = append(acks[it.Mailbox], it.Digest)
		}
	}
	var stop error
	for _, k := range order {
		g := groups[k]
		err := s.chat.IngestMailbox(ctx, g.sync, g.envs)
		switch {
		case err == nil:
			taken += len(g.envs)
			ack(g.items)
			continue
		case errors.Is(err, ErrUnknownConversation):
			bad += len(g.envs)
			ack(g.items)
			continue
		case errors.Is(err, ErrNotReady):
			s.log.Debug("offline: mailbox envelopes kept for later", "envelopes", len(g.envs), "err", err)
			continue
		case !errors.Is(err, protocol.ErrBadPeer):
			stop = err
		}
		if stop != nil {
			break
		}
		// A bad envelope in the batch: one at a time, to keep the good
		// ones (a duplicate of one taken already costs a lookup).
		for i, env := range g.envs {
			err := s.chat.IngestMailbox(ctx, g.sync, [][]byte{env})
			switch {
			case err == nil:
				taken++
			case errors.Is(err, protocol.ErrBadPeer), errors.Is(err, ErrUnknownConversation):
				bad++
			default:
				stop = err
			}
			if stop != nil {
				break
			}
			ack(g.items[i : i+1])
		}
		if stop != nil {
			break
		}
	}
	s.mu.Lock()
	s.stats.Drained += taken
	s.stats.Bad += bad
	s.mu.Unlock()
	return taken, acks, stop
}
