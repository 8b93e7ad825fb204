package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/catchup"
	"github.com/glitr-chat/glitr/node/devices"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/files"
	"github.com/glitr-chat/glitr/node/history"
	"github.com/glitr-chat/glitr/node/identity"
	"github.com/glitr-chat/glitr/node/links"
	"github.com/glitr-chat/glitr/node/offline"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/node/signals"
	"github.com/glitr-chat/glitr/protocol"
)

// Errors the API maps to HTTP statuses.
var (
	// ErrBadPeer marks an error caused by what a peer sent: the catch-up
	// engine penalises the peer for it, and so do the gossip validator and
	// the history transfer.
	ErrBadPeer = catchup.ErrBadPeer

	ErrNoConversation = errors.New("no such conversation")
	ErrNotContact     = errors.New("not a contact: add their card first")
	ErrEmptyMessage   = errors.New("message is empty")
	ErrMessageTooLong = errors.New("message is too long")
	ErrNotSynced      = errors.New("conversation is still arriving: try again in a moment")
)

// MaxMessageText caps one message's text (the CRDT's limit, so that what is
// committed always applies).
const MaxMessageText = crdt.MaxTextLen

// Chat is the conversation service of a personal node: it creates
// conversations, sends and receives blocks (gossip live, catch-up on
// connect), keeps each conversation's CRDT state in memory and persists
// everything else.
type Chat struct {
	net     chatNet
	id      *identity.Identity
	idMu    sync.Mutex // guards id.Keyring (prekeys are not safe for concurrent use) and spk
	spk     signedPrekeyCache
	store   *dag.Store
	ds      ds.Batching
	log     *slog.Logger
	catchup *catchup.Engine
	// catchupReady is set once catchup is (conversations load before it).
	catchupReady atomic.Bool
	events       *eventLog
	now          func() time.Time
	// clockSkew shifts now (tests of schedules measured in days); 0 in
	// production.
	clockSkew atomic.Int64

	mu       sync.RWMutex
	convs    map[string]*conversation // by hex conversation id
	bySync   map[string]*conversation // by sync id
	contacts map[keyring.AccountID]card.Verified
	account  *conversation // the account DAG, shared by this account's devices
	// people answers invites and token requests (node/people); requests
	// is the per-peer budget every one-shot request handler shares.
	people  *people.Service
	devices *devices.Service
	// files is the attachment service (node/files), offline the mailbox
	// one (node/offline); mailboxAddr is this device's mailbox address,
	// announced in every conversation (nil: no mailbox relays).
	files       *files.Service
	offline     *offline.Service
	mailboxAddr []byte
	// history hands stored blocks to devices that cannot read them
	// (node/history).
	history  *history.Service
	requests *request.Limiter
	pairs    map[keyring.AccountID][discovery.PairSecretSize]byte // rendezvous secrets by contact
	ownDevs  map[keyring.DeviceID]devices.Record                  // the account's other devices
	seenMu   sync.Mutex
	lastSeen map[keyring.DeviceID]time.Time // latest block of each own device
	sig      *signals.Service               // ephemeral typing and presence (node/signals)
	// revokedSelf: another device removed this one from the account.
	revokedSelf selfRevoked
	// discovery finds contacts through the DHT; set once at start.
	discovery *discovery.Service

	ctx    context.Context
	cancel context.CancelFunc
	wg     tasks.Group

	// onPublish, when set (benchmarks), is called just before a block is
	// handed to gossipsub.
	onPublish func(dag.Block)

	// links probes member links after writes and re-dials lost ones;
	// gossipSync spaces the catch-ups gossip asks for (chat_sync.go).
	links      *links.Keeper
	gossipSync gossipSyncs

	statsMu  sync.Mutex
	sessions []catchup.Stats // recent catch-up sessions, newest last (bounded)

	// Client ids of recent sends (SendOnce), for message views.
	clientMu    sync.Mutex
	clientIDs   map[crdt.MsgID]string
	clientOrder []crdt.MsgID
}

// recordSession keeps the stats of recent catch-up sessions for the status
// report and benchmarks.
func (c *Chat) recordSession(st catchup.Stats) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	c.sessions = append(c.sessions, st)
	if len(c.sessions) > 64 {
		c.sessions = append(c.sessions[:0], c.sessions[len(c.sessions)-64:]...)
	}
}

// RecentSessions returns the stats of recent catch-up sessions.
func (c *Chat) RecentSessions() []catchup.Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return slices.Clone(c.sessions)
}

// conversation is one conversation's live state. mu guards everything
// below it; the dag store has its own locking.
type conversation struct {
	id     []byte
	hexID  string
	dagID  dag.DAGID
	root   []byte // conversation root secret: topic names and sync id
	syncID []byte

	mu     sync.Mutex
	cipher *keyring.Cipher
	state  *crdt.Conversation
	acct   *crdt.Account // set instead of state for the account DAG
	// revoked holds the revocations published in this conversation.
	revoked map[keyring.DeviceID]keyring.Revocation
	// acctEpochLamport is the Lamport clock of the account-DAG rotation
	// this device sends under.
	acctEpochLamport uint64
	accounts         map[dag.DeviceID]crdt.AccountID
	topics           map[string]*joinedTopic
	ackedSeq         uint64 // our highest seq another device is known to hold
	receipt          *time.Timer
	lastSync         map[peer.ID]time.Time
	lastMerge        time.Time // when this device last emitted a merge block
	sealBuf          []byte    // reused by convSealer for every own block
	// The current rotation (event, op) as last verified by epochStale,
	// with its epoch and creation time.
	curRotation     cid.Cid
	curRotationOp   uint16
	curEpoch        keyring.EpochID
	curEpochCreated time.Time
	// topicEpoch is the epoch whose topics were joined last; the one
	// before it (prevTopicEpoch) stays joined for topicOverlap after
	// topicEpochSince (topicEpochs).
	topicEpoch      keyring.EpochID
	prevTopicEpoch  keyring.EpochID
	topicEpochSince time.Time
	// held is gossip waiting for the rotation of its epoch (held.go).
	held []heldEnvelope
	// rejoinPending: a rejoin of the topics is scheduled (topicsChanged).
	rejoinPending atomic.Bool
	// healPending: a rotation for devices the epoch misses is scheduled.
	healPending bool
	// confirmPending: a delivery check is scheduled (confirmDelivery).
	confirmPending bool
	// syncFailures counts consecutive failed catch-up sessions per peer.
	syncFailures map[peer.ID]int
	// syncPending marks peers with a catch-up already scheduled.
	syncPending map[peer.ID]bool
}

type joinedTopic struct {
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	cancel context.CancelFunc
}

// chatNet is what the conversation service needs from the node that runs
// it (the consumer owns the interface, as in go-libp2p's core/): the host
// and gossipsub it talks on, the penalty box, and the owner's presence
// preference. The node fills it in when it starts the service.
type chatNet struct {
	Host   host.Host
	PubSub *pubsub.PubSub // nil in an offline copy (tests)
	Log    *slog.Logger
	// Penalize lowers a misbehaving peer's score; Graylisted reports a peer
	// whose penalty is past the graylist threshold.
	Penalize   func(p peer.ID, amount float64, reason string)
	Graylisted func(peer.ID) bool
	// ShowPresence reports whether the owner shares presence and typing.
	ShowPresence func(context.Context) bool
}

var canonicalEnc, _ = cbor.CanonicalEncOptions().EncMode()

// datastore keys
var (
	convPrefix    = ds.NewKey("/conv")
	keysPrefix    = ds.NewKey("/keys")
	contactPrefix = ds.NewKey("/contact")
)

func newChat(net chatNet, id *identity.Identity, st *dag.Store, d ds.Batching) *Chat {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Chat{
		net: net, id: id, store: st, ds: d, log: net.Log.With("component", "chat"),
		events: newEventLog(4096),
		convs:  map[string]*conversation{}, bySync: map[string]*conversation{},
		contacts: map[keyring.AccountID]card.Verified{},
		pairs:    map[keyring.AccountID][discovery.PairSecretSize]byte{},
		ownDevs:  map[keyring.DeviceID]devices.Record{},
		lastSeen: map[keyring.DeviceID]time.Time{},
		ctx:      ctx, cancel: cancel,
	}
	c.now = func() time.Time { return time.Now().Add(time.Duration(c.clockSkew.Load())) }
	c.links = links.New(net.Host, linkMembers{c}, c.log)
	c.requests = request.NewLimiter(net.Penalize)
	c.history = history.New(net.Host, historyStore{c}, history.Options{Requests: c.requests, Penalize: net.Penalize, Logger: net.Log})
	return c
}

func (c *Chat) storeKey() []byte { return c.id.StoreKey() }

// load restores contacts and conversations from the store and rebuilds each
// conversation's CRDT state from its blocks.
func (c *Chat) load(ctx context.Context) error {
	if err := c.each(ctx, contactPrefix, func(k string, v []byte) error {
		var cd card.Card
		if err := card.Dec.Unmarshal(v, &cd); err != nil {
			return fmt.Errorf("contact %s: %w", k, err)
		}
		// Stored cards are not re-checked for expiry: an old prekey
		// only matters when sealing a new epoch, which checks it.
		vc, err := card.Verify(cd, time.Time{})
		if err != nil {
			c.log.Warn("stored contact card no longer verifies; ignoring it", "key", k, "err", err)
			return nil
		}
		c.contacts[vc.Cert.Account] = vc
		c.net.Host.Peerstore().AddAddrs(vc.Peer.ID, vc.Peer.Addrs, time.Hour)
		return nil
	}); err != nil {
		return err
	}
	if err := c.loadPairSecrets(ctx); err != nil {
		return err
	}
	if err := c.loadOwnDevices(ctx); err != nil {
		return err
	}
	if err := c.loadSelfRevoked(ctx); err != nil {
		return err
	}
	accountID, err := c.accountConversationID(ctx)
	if err != nil {
		return err
	}
	return c.each(ctx, convPrefix, func(k string, v []byte) error {
		hexID := ds.RawKey(k).BaseNamespace()
		isAccount := hexID == accountID
		conv, err := c.openConversation(ctx, hexID, v, isAccount)
		if err != nil {
			return fmt.Errorf("conversation %s: %w", hexID, err)
		}
		if isAccount {
			c.setAccount(conv)
			return nil
		}
		c.register(conv)
		c.installMissedEpochs(conv)
		return nil
	})
}

// installMissedEpochs installs the epochs sealed to this device whose
// rotations are committed but were not installed, and sends under the
// current one: a crash between the commit of a rotation block and its
// installation would otherwise leave the conversation's current epoch
// unopenable, and this device writing under a replaced one, until the
// next rotation.
func (c *Chat) installMissedEpochs(conv *conversation) {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	cur, ok := conv.state.CurrentEpoch()
	if !ok {
		return
	}
	r, err := keyring.VerifyRotation(cur.Payload)
	if err != nil {
		return
	}
	if sending, _, ok := conv.cipher.Sent(); ok && sending == r.Epoch {
		return
	}
	c.noteRotations(conv)
}

func (c *Chat) each(ctx context.Context, prefix ds.Key, fn func(k string, v []byte) error) error {
	res, err := c.ds.Query(ctx, query.Query{Prefix: prefix.String()})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		if err := fn(r.Key, r.Value); err != nil {
			return err
		}
	}
	return nil
}

func (c *Chat) openConversation(ctx context.Context, hexID string, sealedRoot []byte, account bool) (*conversation, error) {
	id, err := hex.DecodeString(hexID)
	if err != nil {
		return nil, err
	}
	root, err := keyring.OpenAtRest(c.storeKey(), convPrefix.ChildString(hexID).String(), sealedRoot)
	if err != nil {
		return nil, err
	}
	keysKey := keysPrefix.ChildString(hexID)
	sealedKeys, err := c.ds.Get(ctx, keysKey)
	if err != nil {
		return nil, fmt.Errorf("key state: %w", err)
	}
	plainKeys, err := keyring.OpenAtRest(c.storeKey(), keysKey.String(), sealedKeys)
	if err != nil {
		return nil, err
	}
	ciph, err := keyring.UnmarshalCipher(plainKeys, rand.Reader)
	if err != nil {
		return nil, err
	}
	conv := newConversation(id, root, ciph)
	if account {
		conv.acct = crdt.NewAccount()
	}
	// Rebuild the CRDT from the committed blocks, in display order
	// (which is topological).
	var batch []crdt.Event
	for b, err := range c.store.Blocks(ctx, conv.dagID, dag.Position{}, false) {
		if err != nil {
			return nil, err
		}
		ev, err := conv.event(b)
		if err != nil {
			c.log.Warn("stored block has an undecodable body", "conv", hexID, "block", b.CID.String(), "err", err)
		}
		batch = append(batch, ev)
		if len(batch) == 4096 {
			if _, err := conv.applyBatch(batch); err != nil {
				return nil, err
			}
			c.noteRevocations(conv, batch)
			c.noteSeen(batch)
			batch = batch[:0]
		}
	}
	if _, err := conv.applyBatch(batch); err != nil {
		return nil, err
	}
	c.noteRevocations(conv, batch)
	c.noteSeen(batch)
	return conv, nil
}

func newConversation(id, root []byte, ciph *keyring.Cipher) *conversation {
	hexID := hex.EncodeToString(id)
	return &conversation{
		id: id, hexID: hexID, dagID: dag.DAGID(hexID), root: root,
		syncID:       deriveSecret(root, "sync-id", 32),
		cipher:       ciph,
		state:        crdt.NewConversation(),
		accounts:     map[dag.DeviceID]crdt.AccountID{},
		topics:       map[string]*joinedTopic{},
		lastSync:     map[peer.ID]time.Time{},
		syncPending:  map[peer.ID]bool{},
		revoked:      map[keyring.DeviceID]keyring.Revocation{},
		syncFailures: map[peer.ID]int{},
	}
}

// deriveSecret derives a per-conversation value from the root secret.
func deriveSecret(root []byte, label string, n int) []byte {
	m := hmac.New(sha256.New, root)
	m.Write([]byte(protocol.Label(label)))
	return m.Sum(nil)[:n]
}

// topicName is the gossip topic of a conversation's epoch on a given UTC
// day: derived from the epoch's exporter secret, so it is unlinkable across
// conversations, days and epochs for anyone without that epoch — a member
// removed by the rotation that started it cannot even name it. ok is false
// when the cipher does not hold the epoch. conv.mu is held.
func (conv *conversation) topicName(epoch keyring.EpochID, day time.Time) (string, bool) {
	b, err := conv.cipher.Export(epoch, protocol.Label("topic/"+day.UTC().Format("2006-01-02")), 16)
	if err != nil {
		return "", false
	}
	return "glitr/" + hex.EncodeToString(b), true
}

// sendTopic is the topic this device publishes on now: today's of the
// epoch it sends under. conv.mu is held.
func (conv *conversation) sendTopic(now time.Time) (string, bool) {
	id, _, ok := conv.cipher.Sent()
	if !ok {
		return "", false
	}
	return conv.topicName(id, now)
}

// topicOverlap is how long the previous epoch's topics stay joined after
// this device moved to a new one: members who have not seen the rotation
// yet still publish there (catch-up covers anyone slower).
const topicOverlap = 48 * time.Hour

// topicEpochs are the epochs whose topics this device joins: the one it
// sends under, and the one before it for topicOverlap after the switch.
// The switch is noticed here, when the topics are joined. conv.mu is held.
func (conv *conversation) topicEpochs(now time.Time) []keyring.EpochID {
	cur, _, ok := conv.cipher.Sent()
	if !ok {
		return nil
	}
	if cur != conv.topicEpoch {
		if conv.topicEpoch != (keyring.EpochID{}) {
			conv.prevTopicEpoch, conv.topicEpochSince = conv.topicEpoch, now
		}
		conv.topicEpoch = cur
	}
	out := []keyring.EpochID{cur}
	if conv.prevTopicEpoch != (keyring.EpochID{}) && conv.prevTopicEpoch != cur && now.Sub(conv.topicEpochSince) < topicOverlap && conv.cipher.HasEpoch(conv.prevTopicEpoch) {
		out = append(out, conv.prevTopicEpoch)
	}
	return out
}

// event turns a committed block into a CRDT event, resolving the author's
// account from its certificate (carried in the device's first block, which
// downward closure guarantees was committed first).
func (conv *conversation) event(b dag.Block) (crdt.Event, error) {
	in := &b.Inner
	if len(in.Cert) > 0 {
		if cert, err := keyring.VerifyCertificate(in.Cert); err == nil && cert.Device == keyring.DeviceID(in.Author) {
			conv.accounts[in.Author] = crdt.AccountID(cert.Account)
		}
	}
	// crdt wants each causal link once; Prev is often also a parent.
	links := in.Parents
	if in.Prev.Defined() && !slices.ContainsFunc(links, in.Prev.Equals) {
		links = append(slices.Clip(links), in.Prev)
	}
	ev := crdt.Event{
		ID: b.CID, Parents: links, Device: crdt.DeviceID(in.Author),
		Account: conv.accounts[in.Author], Seq: in.Seq, Height: in.Height,
		Lamport: in.Lamport, Time: in.Time,
	}
	ops, err := crdt.DecodeOps(in.Body)
	ev.Ops = ops
	return ev, err
}

func (c *Chat) register(conv *conversation) {
	c.mu.Lock()
	c.convs[conv.hexID] = conv
	c.bySync[string(conv.syncID)] = conv
	c.mu.Unlock()
}

// conversationList is a snapshot of the conversations (not the account
// DAG), for loops that must not hold c.mu.
func (c *Chat) conversationList() []*conversation {
	c.mu.RLock()
	defer c.mu.RUnlock()
	convs := make([]*conversation, 0, len(c.convs))
	for _, conv := range c.convs {
		convs = append(convs, conv)
	}
	return convs
}

func (c *Chat) conversation(hexID string) (*conversation, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	conv, ok := c.convs[strings.ToLower(hexID)]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoConversation, hexID)
	}
	return conv, nil
}

// persistKeys writes a conversation's key state, encrypted, and syncs it.
// Sending calls it between sealing and committing a block, so a crash can
// skip a chain index but never reuse one.
func (c *Chat) persistKeys(ctx context.Context, conv *conversation, sync bool) error {
	b, err := conv.cipher.MarshalBinary()
	if err != nil {
		return err
	}
	k := keysPrefix.ChildString(conv.hexID)
	sealed, err := keyring.SealAtRest(c.storeKey(), k.String(), b)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, k, sealed); err != nil {
		return fmt.Errorf("persist key state: %w", err)
	}
	if sync {
		return c.ds.Sync(ctx, k)
	}
	return nil
}

// AddContact verifies and stores a card.
func (c *Chat) AddContact(ctx context.Context, text string) (card.Verified, error) {
	vc, err := card.Parse(text, c.now())
	if err != nil {
		return vc, err
	}
	if vc.Cert.Account == c.id.AccountID() {
		return vc, fmt.Errorf("%w: that is your own card", card.ErrBadCard)
	}
	if err := c.putContactCard(ctx, vc); err != nil {
		return vc, err
	}
	c.mu.Lock()
	c.contacts[vc.Cert.Account] = vc
	c.mu.Unlock()
	c.net.Host.Peerstore().AddAddrs(vc.Peer.ID, vc.Peer.Addrs, time.Hour)
	return vc, nil
}

// CreateConversation starts a conversation with contacts: a new epoch
// sealed to every member device, a genesis block that adds the members,
// and a welcome sent to each of them.
func (c *Chat) CreateConversation(ctx context.Context, title string, members []keyring.AccountID) (string, error) {
	now := c.now()
	var cards []card.Verified
	c.mu.RLock()
	for _, a := range members {
		vc, ok := c.contacts[a]
		if !ok {
			c.mu.RUnlock()
			return "", fmt.Errorf("%w: %x", ErrNotContact, a[:8])
		}
		if err := usableCard(vc, now); err != nil {
			c.mu.RUnlock()
			return "", err
		}
		cards = append(cards, vc)
	}
	c.mu.RUnlock()

	convID := make([]byte, 16)
	if _, err := rand.Read(convID); err != nil {
		return "", err
	}
	_, own, err := c.currentPrekey()
	if err != nil {
		return "", err
	}
	recipients := []keyring.SignedPrekey{own}
	crdtRecipients := []crdt.Recipient{{Account: crdt.AccountID(c.id.AccountID()), Device: crdt.DeviceID(c.id.DeviceID())}}
	for _, vc := range cards {
		recipients = append(recipients, vc.Prekey)
		crdtRecipients = append(crdtRecipients, crdt.Recipient{Account: crdt.AccountID(vc.Cert.Account), Device: crdt.DeviceID(vc.Cert.Device)})
	}
	parts, epoch, err := keyring.NewRotation(rand.Reader, c.id.Keyring.Device, keyring.RotationParams{
		Conversation: convID, Recipients: recipients, Created: now,
	})
	if err != nil {
		return "", fmt.Errorf("seal the first epoch: %w", err)
	}
	conv, err := c.installConversation(ctx, convID, epoch, nil)
	if err != nil {
		return "", err
	}
	var ops []crdt.Op // commitOwn puts this device's announcement first
	if title != "" {
		ops = append(ops, crdt.SetTitle{Title: title})
	}
	for _, vc := range cards {
		ops = append(ops, crdt.AddMember{Account: crdt.AccountID(vc.Cert.Account)})
	}
	for _, p := range parts {
		ops = append(ops, crdt.Rotation{Payload: p, Recipients: crdtRecipients})
	}
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return "", err
	}
	c.register(conv)
	c.joinTopics(conv)
	for _, vc := range cards {
		c.wg.Go(func() { c.sendWelcome(c.ctx, conv, vc, parts, false) })
	}
	c.events.publish(Event{Kind: "conversation", Conversation: conv.hexID})
	return conv.hexID, nil
}

// installConversation persists a new conversation's secrets and key state.
func (c *Chat) installConversation(ctx context.Context, convID []byte, epoch *keyring.Epoch, root []byte) (*conversation, error) {
	ciph, err := keyring.NewCipher(convID, c.id.DeviceID(), rand.Reader)
	if err != nil {
		return nil, err
	}
	epochID := epoch.ID
	if err := ciph.Install(epoch); err != nil {
		return nil, err
	}
	if err := ciph.SetSendingEpoch(epochID); err != nil {
		return nil, err
	}
	// The root secret (topic names, sync id) comes from the first epoch;
	// a member added later is handed it in its welcome.
	if root == nil {
		if root, err = ciph.Export(epochID, protocol.Label("conversation-root"), 32); err != nil {
			return nil, err
		}
	}
	conv := newConversation(convID, root, ciph)
	if err := c.persistKeys(ctx, conv, false); err != nil {
		return nil, err
	}
	k := convPrefix.ChildString(conv.hexID)
	sealed, err := keyring.SealAtRest(c.storeKey(), k.String(), root)
	if err != nil {
		return nil, err
	}
	if err := c.ds.Put(ctx, k, sealed); err != nil {
		return nil, err
	}
	if err := c.ds.Sync(ctx, k); err != nil {
		return nil, err
	}
	return conv, nil
}

// close stops background work.
func (c *Chat) close() {
	c.cancel()
	if c.devices != nil {
		c.devices.Close()
	}
	c.history.Close()
	if c.people != nil {
		c.people.Close()
	}
	if c.discovery != nil {
		_ = c.discovery.Close()
	}
	c.mu.RLock()
	for _, conv := range c.convs {
		conv.mu.Lock()
		if conv.receipt != nil {
			conv.receipt.Stop()
		}
		for _, jt := range conv.topics {
			jt.cancel()
			jt.events.Cancel()
			jt.sub.Cancel()
		}
		conv.mu.Unlock()
	}
	c.mu.RUnlock()
	c.wg.Close()
	// Last: the blocks written while closing (a delivery receipt) still
	// go to the mailboxes of the members who are away.
	c.closeDelivery()
}
