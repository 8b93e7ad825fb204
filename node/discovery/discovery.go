package discovery

// Private-DHT discovery of contacts (docs/discovery.md).
//
// Each device publishes, for every contact, a rendezvous record holding its
// current addresses under a DHT key that only the two accounts of the pair
// can compute (HKDF over their pair secret, the UTC day and the publishing
// account and device). Contacts look those keys up to find a device whose
// addresses changed; DHT servers see unlinkable keys and opaque payloads.
//
// Using it:
//
//	d, err := New(n.Host, n.DHT,
//		Self{Account: id.AccountID(), Device: id.Keyring.Device},
//		func() []Contact { ... }, // current contacts; called often, keep it cheap
//		Options{Logger: log})
//	...
//	d.ContactsChanged()  // after a contact, a contact's device or a pair secret was added or removed
//	d.Find(ctx, c)       // one-off lookup of a contact's devices (ErrContactNotFound)
//	d.Publish(ctx)       // publish now; the loop does it by itself
//	d.Reconnect(ctx)     // one reconnect pass; the loop does it by itself
//	d.Close()            // before the DHT and the host are closed
//
// New starts two loops owned by the Service: the publisher (on
// start, on every change of the host's addresses, periodically with jitter,
// and before each UTC day rollover) and the reconnector (dials contact
// devices that are not connected, with per-contact backoff). Close stops
// both.

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

// PairSecretSize is the size of the secret two contacts' accounts share.
var canonicalEnc, _ = cbor.CanonicalEncOptions().EncMode()

const PairSecretSize = 32

// Discovery payload limits.
const (
	// MaxDiscoveryAddrs caps the addresses one record carries.
	MaxDiscoveryAddrs = 32
	// discoveryPadBlock is the padding granule of the sealed payload, so a
	// record's size says little about how many addresses it holds.
	discoveryPadBlock = 256
	// discoverySealOverhead is nonce plus tag.
	discoverySealOverhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	// maxDiscoveryPlain is the largest padded plaintext a record can hold.
	maxDiscoveryPlain = protocol.MaxRendezvousPayload - discoverySealOverhead
	daySeconds        = 24 * 60 * 60
)

// Labels of the discovery key schedule and signatures.
var (
	labelRendezvousKeys    = protocol.Label("rendezvous-keys")
	labelRendezvousPayload = protocol.Label("rendezvous-payload")
	labelRendezvousAddrs   = protocol.Label("rendezvous-addrs")
)

// Errors of discovery. Callers act on ErrContactNotFound (try again later);
// the others say why a record that was found was not used.
var (
	// ErrContactNotFound reports that no usable record of any of the
	// contact's devices was found under today's or yesterday's keys.
	ErrContactNotFound = errors.New("discovery: no record of the contact found")
	// ErrPayloadOpen reports a sealed payload that does not decrypt under
	// the pair's key: sealed by someone without the pair secret, or damaged.
	ErrPayloadOpen = errors.New("discovery: payload does not open")
	// ErrPayloadMalformed reports a decrypted payload that is not a
	// canonical, well-formed address record.
	ErrPayloadMalformed = errors.New("discovery: malformed payload")
	// ErrPayloadSignature reports a payload not signed by the device it is
	// filed under (forged by another holder of the pair secret).
	ErrPayloadSignature = errors.New("discovery: payload not signed by the device")
	// ErrPayloadTime reports a payload timestamp too far in the future or
	// older than any record may live.
	ErrPayloadTime = errors.New("discovery: payload timestamp out of range")
)

// Self is this device as discovery needs it.
type Self struct {
	Account keyring.AccountID
	// Device signs the address payloads, so that a contact (who also holds
	// the pair secret) cannot forge this device's addresses.
	Device *keyring.DeviceKey
}

// Device is one device of a contact.
type Device struct {
	ID keyring.DeviceID
	// Peer is the device's last known peer ID; empty if unknown. The
	// payload names the current one, signed by the device.
	Peer peer.ID
}

// Contact is a contact account, the secret this account and the
// contact's share, and the contact's devices.
type Contact struct {
	Account    keyring.AccountID
	PairSecret [PairSecretSize]byte
	Devices    []Device
}

// Options tune a Service. Zero values take the documented
// defaults.
type Options struct {
	// Logger receives debug and warning logs (nil: discard).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now). Day keys follow its UTC date.
	Now func() time.Time
	// RecordTTL is how long a published record stays valid (default 6 h,
	// at most protocol.MaxRendezvousTTL).
	RecordTTL time.Duration
	// Refresh is the republishing period, jittered by ±10 % (default 1 h;
	// must be at most RecordTTL/3 so two refreshes can fail before expiry).
	Refresh time.Duration
	// RetryMin is the first retry delay after a failed publish; it doubles
	// up to Refresh (default 5 s).
	RetryMin time.Duration
	// ClockSkew is the clock difference between contacts that discovery
	// tolerates: records are also published under the neighbouring day's
	// key within ClockSkew of midnight UTC (default 1 h, at most 12 h).
	ClockSkew time.Duration
	// AddrDebounce delays publishing after an address change, since changes
	// come in bursts (default 500 ms).
	AddrDebounce time.Duration
	// ReconnectInterval is the period of the reconnect pass and the first
	// per-contact backoff after a failed lookup (default 30 s).
	ReconnectInterval time.Duration
	// MaxBackoff caps the per-contact backoff (default 10 min).
	MaxBackoff time.Duration
	// Concurrency bounds the parallel DHT operations and dials (default 4).
	Concurrency int
	// LookupTimeout bounds one Find (default 30 s); DialTimeout one dial
	// (default 10 s).
	LookupTimeout time.Duration
	DialTimeout   time.Duration
	// Addrs returns the addresses to publish (nil: the host's Addrs, which
	// include /p2p-circuit addresses once AutoRelay holds a reservation).
	// Set it to add circuit addresses built by hand, e.g. through a relay
	// on a private network that AutoRelay does not advertise.
	Addrs func() []ma.Multiaddr
	// KeepLoopback publishes loopback addresses even when the host has
	// others. Loopback addresses are always kept by a loopback-only host.
	KeepLoopback bool
	// NoReconnect turns the reconnect loop off: the Service only
	// publishes, and the caller dials contacts itself (Find, Reconnect).
	NoReconnect bool
}

func (o Options) withDefaults() (Options, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.RecordTTL, 6*time.Hour)
	def(&o.Refresh, time.Hour)
	def(&o.RetryMin, 5*time.Second)
	def(&o.ClockSkew, time.Hour)
	def(&o.AddrDebounce, 500*time.Millisecond)
	def(&o.ReconnectInterval, 30*time.Second)
	def(&o.MaxBackoff, 10*time.Minute)
	def(&o.LookupTimeout, 30*time.Second)
	def(&o.DialTimeout, 10*time.Second)
	if o.Concurrency == 0 {
		o.Concurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.RecordTTL < 0 || o.Refresh < 0 || o.RetryMin < 0 || o.ClockSkew < 0 || o.AddrDebounce < 0 ||
		o.ReconnectInterval < 0 || o.MaxBackoff < 0 || o.LookupTimeout < 0 || o.DialTimeout < 0 || o.Concurrency < 0:
		return o, errors.New("discovery options: negative duration or concurrency")
	case o.RecordTTL > protocol.MaxRendezvousTTL:
		return o, fmt.Errorf("discovery options: record TTL %s > %s", o.RecordTTL, protocol.MaxRendezvousTTL)
	case o.Refresh > o.RecordTTL/3:
		return o, fmt.Errorf("discovery options: refresh %s must be at most a third of the record TTL %s", o.Refresh, o.RecordTTL)
	case o.ClockSkew > 12*time.Hour:
		return o, fmt.Errorf("discovery options: clock skew %s > 12h", o.ClockSkew)
	case o.MaxBackoff < o.ReconnectInterval:
		return o, fmt.Errorf("discovery options: max backoff %s < reconnect interval %s", o.MaxBackoff, o.ReconnectInterval)
	}
	return o, nil
}

// Service publishes this device's addresses for its contacts and finds
// theirs, through rendezvous records in the private DHT.
type Service struct {
	h        host.Host
	dht      *dht.IpfsDHT
	self     Self
	signer   ed25519.PrivateKey
	contacts func() []Contact
	opts     Options
	log      *slog.Logger

	publishNow   chan struct{}
	reconnectNow chan struct{}
	sub          event.Subscription
	notifiee     *network.NotifyBundle
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	closeOnce    sync.Once

	mu      sync.Mutex
	lastSeq uint64
	backoff map[keyring.AccountID]*contactBackoff
	learned map[keyring.DeviceID]peer.ID // peer IDs named by verified payloads
}

type contactBackoff struct {
	failures int
	next     time.Time
}

// New starts discovery for this device on h and d (the private
// DHT, with protocol.RendezvousValidator registered). contacts returns the
// current contacts; it is called from the Service's goroutines. Close
// stops everything New started; it does not close h or d.
func New(h host.Host, d *dht.IpfsDHT, self Self, contacts func() []Contact, opts Options) (*Service, error) {
	if h == nil || d == nil || contacts == nil {
		return nil, errors.New("new discovery: host, DHT and contacts are required")
	}
	if self.Device == nil {
		return nil, errors.New("new discovery: no device key")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return nil, fmt.Errorf("new discovery: subscribe to address changes: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	disc := &Service{
		h:            h,
		dht:          d,
		self:         self,
		signer:       ed25519.NewKeyFromSeed(self.Device.Seed()),
		contacts:     contacts,
		opts:         opts,
		log:          opts.Logger.With("component", "discovery"),
		publishNow:   make(chan struct{}, 1),
		reconnectNow: make(chan struct{}, 1),
		sub:          sub,
		cancel:       cancel,
		backoff:      map[keyring.AccountID]*contactBackoff{},
		learned:      map[keyring.DeviceID]peer.ID{},
	}
	disc.wg.Go(func() { disc.publishLoop(ctx) })
	if !opts.NoReconnect {
		// A dropped connection may mean the contact moved: look it up soon
		// rather than at the next tick.
		disc.notifiee = &network.NotifyBundle{
			DisconnectedF: func(network.Network, network.Conn) { nudge(disc.reconnectNow) },
		}
		h.Network().Notify(disc.notifiee)
		disc.wg.Go(func() { disc.reconnectLoop(ctx) })
	}
	return disc, nil
}

// ContactsChanged makes the Service publish for, and look up, the current
// contacts soon. Call it after adding a contact, a contact's device or a
// pair secret.
func (d *Service) ContactsChanged() {
	nudge(d.publishNow)
	nudge(d.reconnectNow)
}

// Close stops the Service's loops. Records already in the DHT stay until
// they expire.
func (d *Service) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.cancel()
		if d.notifiee != nil {
			d.h.Network().StopNotify(d.notifiee)
		}
		err = d.sub.Close()
		d.wg.Wait()
	})
	return err
}

func nudge(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ---- publishing ----

func (d *Service) addrs() []ma.Multiaddr {
	var all []ma.Multiaddr
	if d.opts.Addrs != nil {
		all = d.opts.Addrs()
	} else {
		all = d.h.Addrs()
	}
	return publishableAddrs(all, d.opts.KeepLoopback)
}

// nextSeq is the record sequence number: unix nanoseconds, strictly
// increasing within the process, so a later publish replaces an earlier
// one (across restarts too, unless the clock went back).
func (d *Service) nextSeq(now time.Time) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastSeq = max(d.lastSeq+1, uint64(max(now.UnixNano(), 0)))
	return d.lastSeq
}

// Publish puts this device's current addresses under every contact's
// current day keys. It returns the joined errors of the puts that failed.
func (d *Service) Publish(ctx context.Context) error {
	addrs := d.addrs()
	if len(addrs) == 0 {
		return errors.New("publish: the host has no addresses yet")
	}
	now := d.opts.Now()
	seq := d.nextSeq(now)
	days := publishDays(now, d.opts.ClockSkew)
	contacts := d.contacts()
	acct, dev := d.self.Account, d.self.Device.ID()

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, d.opts.Concurrency)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, c := range contacts {
		for _, day := range days {
			k, err := deriveRendezvousKeys(c.PairSecret, day, acct, dev)
			if err != nil {
				fail(err)
				continue
			}
			sealed, err := sealPayload(k, d.signer, acct, d.h.ID(), addrs, now)
			if err != nil {
				fail(fmt.Errorf("seal for %s: %w", c.Account, err))
				continue
			}
			key, rec, err := protocol.SignRendezvous(k.record, seq, now.Add(d.opts.RecordTTL), sealed)
			if err != nil {
				fail(fmt.Errorf("sign for %s: %w", c.Account, err))
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				fail(ctx.Err())
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := d.dht.PutValue(ctx, key, rec); err != nil {
					fail(fmt.Errorf("put record for %s: %w", c.Account, err))
				}
			})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("publish: %w", errors.Join(errs...))
	}
	d.log.Debug("published addresses", "contacts", len(contacts), "days", len(days), "addrs", len(addrs), "seq", seq)
	return nil
}

// jitter returns d shifted by a uniform ±frac of itself.
func jitter(d time.Duration, frac float64) time.Duration {
	span := time.Duration(float64(d) * frac)
	if span <= 0 {
		return d
	}
	return d - span + mrand.N(2*span+1)
}

func (d *Service) publishLoop(ctx context.Context) {
	timer := time.NewTimer(0) // publish on start
	defer timer.Stop()
	retry := d.opts.RetryMin
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-d.sub.Out():
			if !ok {
				return
			}
			timer.Reset(d.opts.AddrDebounce)
			continue
		case <-d.publishNow:
			timer.Reset(d.opts.AddrDebounce)
			continue
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(ctx, d.opts.LookupTimeout)
		err := d.Publish(pctx)
		cancel()
		next := jitter(d.opts.Refresh, 0.1)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Debug("publish failed; retrying", "in", retry, "err", err)
			next, retry = retry, min(retry*2, d.opts.Refresh)
		} else {
			retry = d.opts.RetryMin
		}
		// Publish under the new day's key a little after it enters the
		// window, spread so that not every node publishes at once.
		now := d.opts.Now()
		if roll := nextRollover(now, d.opts.ClockSkew).Add(mrand.N(d.opts.ClockSkew/8 + 1)); roll.Sub(now) < next {
			next = roll.Sub(now)
		}
		timer.Reset(next)
	}
}

// ---- finding ----

type foundDevice struct {
	device keyring.DeviceID
	opened openedPayload
}

// Find looks up the records of every device of c under today's and
// yesterday's keys and returns the addresses of each device found (the
// newest payload per device). It fails with ErrContactNotFound (wrapping
// the reasons records were rejected, if any) when no device was found.
func (d *Service) Find(ctx context.Context, c Contact) ([]peer.AddrInfo, error) {
	found, err := d.find(ctx, c)
	if err != nil {
		return nil, err
	}
	out := make([]peer.AddrInfo, 0, len(found))
	for _, f := range found {
		out = append(out, f.opened.Info)
	}
	return out, nil
}

func (d *Service) find(ctx context.Context, c Contact) ([]foundDevice, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.LookupTimeout)
	defer cancel()
	now := d.opts.Now()
	type result struct {
		dev    keyring.DeviceID
		opened openedPayload
		err    error
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		sem     = make(chan struct{}, d.opts.Concurrency)
	)
	for _, dv := range c.Devices {
		for _, day := range lookupDays(now) {
			k, err := deriveRendezvousKeys(c.PairSecret, day, c.Account, dv.ID)
			if err != nil {
				results = append(results, result{dv.ID, openedPayload{}, err})
				continue
			}
			var op openedPayload
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				results = append(results, result{dv.ID, op, ctx.Err()})
				mu.Unlock()
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				op, err := d.lookup(ctx, k, c.Account, dv.ID, now)
				mu.Lock()
				results = append(results, result{dv.ID, op, err})
				mu.Unlock()
			})
		}
	}
	wg.Wait()

	var errs []error
	best := map[keyring.DeviceID]openedPayload{}
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if b, ok := best[r.dev]; !ok || r.opened.Time.After(b.Time) {
			best[r.dev] = r.opened
		}
	}
	if len(best) == 0 {
		if len(errs) == 0 {
			return nil, fmt.Errorf("find %s: %w: no devices", c.Account, ErrContactNotFound)
		}
		return nil, fmt.Errorf("find %s: %w: %w", c.Account, ErrContactNotFound, errors.Join(errs...))
	}
	var out []foundDevice
	d.mu.Lock()
	for _, dv := range c.Devices { // contact's device order, deterministic
		if op, ok := best[dv.ID]; ok {
			out = append(out, foundDevice{dv.ID, op})
			d.learned[dv.ID] = op.Info.ID
		}
	}
	d.mu.Unlock()
	return out, nil
}

// lookup reads one slot and opens its payload.
func (d *Service) lookup(ctx context.Context, k rendezvousKeys, acct keyring.AccountID, dev keyring.DeviceID, now time.Time) (openedPayload, error) {
	val, err := d.dht.GetValue(ctx, k.dhtKey)
	if err != nil {
		return openedPayload{}, fmt.Errorf("get %s: %w", k.dhtKey, err)
	}
	// The DHT validated the record already; checking again costs one
	// signature and does not trust the DHT's configuration.
	if err := (protocol.RendezvousValidator{Now: d.opts.Now}).Validate(k.dhtKey, val); err != nil {
		return openedPayload{}, fmt.Errorf("record %s: %w", k.dhtKey, err)
	}
	rec, err := protocol.DecodeRendezvous(val)
	if err != nil {
		return openedPayload{}, fmt.Errorf("record %s: %w", k.dhtKey, err)
	}
	op, err := openPayload(k, acct, dev, rec.Payload)
	if err != nil {
		return openedPayload{}, fmt.Errorf("record %s: %w", k.dhtKey, err)
	}
	if op.Time.After(now.Add(d.opts.ClockSkew+time.Minute)) || op.Time.Before(now.Add(-protocol.MaxRendezvousTTL)) {
		return openedPayload{}, fmt.Errorf("record %s: %w: %s", k.dhtKey, ErrPayloadTime, op.Time.UTC().Format(time.RFC3339))
	}
	return op, nil
}

// ---- reconnecting ----

func (d *Service) connected(p peer.ID) bool {
	if p == "" {
		return false
	}
	switch d.h.Network().Connectedness(p) {
	case network.Connected, network.Limited:
		return true
	}
	return false
}

// devicePeer is the peer ID a device is reached at: the one its newest
// verified payload named, else the contact's last known one.
func (d *Service) devicePeer(dv Device) peer.ID {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.learned[dv.ID]; ok {
		return p
	}
	return dv.Peer
}

// Reconnect makes one pass over the contacts: for each contact with a
// device that is not connected and whose backoff has passed, it looks the
// contact up and dials the devices found. Lookups run with bounded
// concurrency; a contact that could not be reached waits ReconnectInterval,
// doubling to MaxBackoff, before the next try. It returns how many devices
// it connected.
func (d *Service) Reconnect(ctx context.Context) int {
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		connected int
		sem       = make(chan struct{}, d.opts.Concurrency)
		now       = time.Now()
	)
	contacts := d.contacts()
	d.prune(contacts)
	for _, c := range contacts {
		missing := map[keyring.DeviceID]bool{}
		for _, dv := range c.Devices {
			if !d.connected(d.devicePeer(dv)) {
				missing[dv.ID] = true
			}
		}
		d.mu.Lock()
		b := d.backoff[c.Account]
		if len(missing) == 0 {
			delete(d.backoff, c.Account)
		}
		d.mu.Unlock()
		if len(missing) == 0 || (b != nil && now.Before(b.next)) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return connected
		}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := d.reconnect(ctx, c, missing)
			mu.Lock()
			connected += n
			mu.Unlock()
			d.settle(c.Account, n > 0, err)
		})
	}
	wg.Wait()
	return connected
}

// reconnect looks c up and dials its missing devices. A record found
// right after a contact dropped often still names the old addresses, and a
// dial to a dead QUIC port only fails at its timeout; so while dials are
// pending, the contact is looked up again, and a newer record is dialed at
// once (the swarm joins it to the pending dial of the same peer).
func (d *Service) reconnect(ctx context.Context, c Contact, missing map[keyring.DeviceID]bool) (int, error) {
	found, err := d.find(ctx, c)
	if err != nil {
		return 0, err
	}
	dctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "glitr-discovery"), d.opts.DialTimeout)
	defer cancel()
	type dialResult struct {
		dev keyring.DeviceID
		err error
	}
	var (
		results = make(chan dialResult)
		pending int
		dialed  = map[keyring.DeviceID]time.Time{} // payload time of the newest record dialed
		done    = map[keyring.DeviceID]bool{}
		errs    []error
	)
	dial := func(f foundDevice) {
		if !missing[f.device] || done[f.device] || !f.opened.Time.After(dialed[f.device]) {
			return
		}
		if d.connected(f.opened.Info.ID) {
			done[f.device] = true
			return
		}
		dialed[f.device] = f.opened.Time
		pending++
		// A relayed address gives a limited connection; that is enough to
		// start with, and hole punching may upgrade it.
		go func() { results <- dialResult{f.device, d.h.Connect(dctx, f.opened.Info)} }()
	}
	for _, f := range found {
		dial(f)
	}
	tick := time.NewTicker(max(min(d.opts.ReconnectInterval, d.opts.DialTimeout/4), 10*time.Millisecond))
	defer tick.Stop()
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err != nil {
				errs = append(errs, fmt.Errorf("dial device %s: %w", r.dev, r.err))
				continue
			}
			if !done[r.dev] {
				done[r.dev] = true
				d.log.Debug("reconnected to contact device", "account", c.Account.String(), "device", r.dev.String())
			}
		case <-tick.C:
			again, err := d.find(dctx, c)
			if err != nil {
				continue
			}
			for _, f := range again {
				dial(f)
			}
		}
	}
	n := 0
	for _, ok := range done {
		if ok {
			n++
		}
	}
	if n > 0 {
		return n, nil
	}
	return 0, errors.Join(errs...)
}

// prune forgets the backoff and learned peers of removed contacts.
func (d *Service) prune(contacts []Contact) {
	accts := map[keyring.AccountID]bool{}
	devs := map[keyring.DeviceID]bool{}
	for _, c := range contacts {
		accts[c.Account] = true
		for _, dv := range c.Devices {
			devs[dv.ID] = true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for a := range d.backoff {
		if !accts[a] {
			delete(d.backoff, a)
		}
	}
	for dv := range d.learned {
		if !devs[dv] {
			delete(d.learned, dv)
		}
	}
}

// settle updates a contact's backoff after a reconnect attempt.
func (d *Service) settle(acct keyring.AccountID, ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ok {
		delete(d.backoff, acct)
		return
	}
	b := d.backoff[acct]
	if b == nil {
		b = &contactBackoff{}
		d.backoff[acct] = b
	}
	b.failures++
	wait := d.opts.ReconnectInterval << min(b.failures-1, 20)
	wait = jitter(min(wait, d.opts.MaxBackoff), 0.1)
	b.next = time.Now().Add(wait)
	d.log.Debug("contact not reached", "account", acct.String(), "failures", b.failures, "retry_in", wait.Round(time.Millisecond), "err", err)
}

func (d *Service) reconnectLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.reconnectNow:
		}
		d.Reconnect(ctx)
		// Wake again when the earliest backoff ends, or at the interval.
		next := jitter(d.opts.ReconnectInterval, 0.1)
		d.mu.Lock()
		for _, b := range d.backoff {
			next = min(next, max(time.Until(b.next), 10*time.Millisecond))
		}
		d.mu.Unlock()
		t.Reset(next)
	}
}
