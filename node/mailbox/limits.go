package mailbox

// Per-peer and per-address limits of the relay (docs/mailbox.md §5).
// Pure: tables in memory with a fixed capacity, time passed in.

import (
	"errors"
	"fmt"
	"net"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ErrDepositorLimit: this peer or its address has deposited its quota for
// the current window.
var ErrDepositorLimit = errors.New("mailbox: depositor limit")

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

// buckets rate-limits requests by key, holding at most max keys: when
// full it forgets the keys whose buckets have refilled (they would start
// full anyway), and then an arbitrary one. Forgetting lets a peer that
// churns identities start over, which costs it a new connection each
// time; the per-address deposit limits do not forget.
type buckets[K comparable] struct {
	rate, burst float64
	max         int
	m           map[K]*bucket
}

func newBuckets[K comparable](rate, burst float64, max int) *buckets[K] {
	return &buckets[K]{rate: rate, burst: burst, max: max, m: make(map[K]*bucket)}
}

// allow takes a token for k, or says how long until one is there.
func (t *buckets[K]) allow(k K, now time.Time) (bool, time.Duration) {
	b, ok := t.m[k]
	if !ok {
		if len(t.m) >= t.max {
			t.evict(now)
		}
		b = &bucket{tokens: t.burst, at: now}
		t.m[k] = b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(t.burst, b.tokens+el*t.rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / t.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// available returns the tokens k holds now (a new key starts full).
func (t *buckets[K]) available(k K, now time.Time) float64 {
	b, ok := t.m[k]
	if !ok {
		return t.burst
	}
	return min(t.burst, b.tokens+max(0, now.Sub(b.at).Seconds())*t.rate)
}

// spend takes n tokens from k (refilled first), which may leave it in
// debt; a key not held is added.
func (t *buckets[K]) spend(k K, n float64, now time.Time) {
	if n <= 0 {
		return
	}
	b, ok := t.m[k]
	if !ok {
		if len(t.m) >= t.max {
			t.evict(now)
		}
		b = &bucket{tokens: t.burst, at: now}
		t.m[k] = b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(t.burst, b.tokens+el*t.rate)
	}
	b.at = now
	b.tokens -= n
}

func (t *buckets[K]) evict(now time.Time) {
	for k, b := range t.m {
		if b.tokens+now.Sub(b.at).Seconds()*t.rate >= t.burst {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < t.max {
			return
		}
		delete(t.m, k)
	}
}

// window is what one depositor stored in the current window.
type window struct {
	start     time.Time
	bytes     int64
	mailboxes int64
}

// quota caps what each key deposits per window: bytes (ItemOverhead per
// envelope included) and mailboxes created. It holds at most max keys;
// when full it drops the keys whose window has ended, and then either
// drops an arbitrary key (evict: for peer ids, which are free to make,
// so forgetting one only loses precision while the address quota still
// binds) or refuses new keys (for addresses, which are not free).
type quota[K comparable] struct {
	span             time.Duration
	bytes, mailboxes int64
	max              int
	evictWhenFull    bool
	m                map[K]*window
	scope            string // "peer" or "address", for errors
}

func newQuota[K comparable](scope string, span time.Duration, bytes, mailboxes int64, max int, evict bool) *quota[K] {
	return &quota[K]{scope: scope, span: span, bytes: bytes, mailboxes: mailboxes, max: max, evictWhenFull: evict, m: make(map[K]*window)}
}

func (q *quota[K]) current(k K, now time.Time) *window {
	w, ok := q.m[k]
	if ok && now.Sub(w.start) < q.span {
		return w
	}
	return nil
}

// check says whether k may deposit bytes now (creating a mailbox or not).
func (q *quota[K]) check(k K, now time.Time, created bool, bytes int64) error {
	w := q.current(k, now)
	if w == nil {
		if _, ok := q.m[k]; !ok && len(q.m) >= q.max {
			q.prune(now)
			if len(q.m) >= q.max && !q.evictWhenFull {
				return fmt.Errorf("%w: too many %ss this window", ErrDepositorLimit, q.scope)
			}
		}
		w = &window{}
	}
	if w.bytes+bytes > q.bytes {
		return fmt.Errorf("%w: %s stored %d bytes this window (quota %d)", ErrDepositorLimit, q.scope, w.bytes, q.bytes)
	}
	if created && w.mailboxes+1 > q.mailboxes {
		return fmt.Errorf("%w: %s created %d mailboxes this window (quota %d)", ErrDepositorLimit, q.scope, w.mailboxes, q.mailboxes)
	}
	return nil
}

// charge records a deposit that check allowed.
func (q *quota[K]) charge(k K, now time.Time, created bool, bytes int64) {
	w := q.current(k, now)
	if w == nil {
		if _, ok := q.m[k]; !ok && len(q.m) >= q.max {
			q.prune(now)
			for k2 := range q.m {
				if len(q.m) < q.max {
					break
				}
				delete(q.m, k2)
			}
		}
		w = &window{start: now}
		q.m[k] = w
	}
	w.bytes += bytes
	if created {
		w.mailboxes++
	}
}

func (q *quota[K]) prune(now time.Time) {
	for k, w := range q.m {
		if now.Sub(w.start) >= q.span {
			delete(q.m, k)
		}
	}
}

// addrKey is the address a depositor is counted under: its IPv4 address,
// or the /64 of its IPv6 address (one host usually holds a whole /64).
// Connections without an IP (a circuit through another relay) share one
// key per transport, so they are limited together.
func addrKey(a ma.Multiaddr) string {
	if a == nil {
		return "none"
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		// A circuit address: count it under the relay it came through
		// when that is an IP, else all together.
		if head, _ := ma.SplitFirst(a); head != nil {
			if hip, err := manet.ToIP(ma.Multiaddr{*head}); err == nil {
				return "via " + hip.String()
			}
		}
		return "no ip"
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
