package mailbox

// The relay's mailbox store (docs/mailbox.md §5): opaque envelopes under
// mailbox ids in a pebble database, quotas per mailbox and overall,
// expiry by sweep, and every write that a peer is told about synced first.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Store errors; the service maps them to result codes.
var (
	// ErrMailboxFull: the mailbox holds its quota.
	ErrMailboxFull = errors.New("mailbox: mailbox full")
	// ErrRelayFull: the store holds its global quota of bytes or mailboxes.
	ErrRelayFull = errors.New("mailbox: relay full")
	// ErrExpired: the mailbox's retention has passed.
	ErrExpired = errors.New("mailbox: expired")
	// ErrStoreClosed: the store was closed.
	ErrStoreClosed = errors.New("mailbox: store closed")
)

// Limits bound what the store holds. Zero values take the defaults noted.
type Limits struct {
	// MailboxBytes caps the bytes one mailbox holds (default 8 MiB).
	MailboxBytes int64
	// MailboxEnvelopes caps the envelopes one mailbox holds (default 4096).
	MailboxEnvelopes int64
	// MailboxDeposits caps the envelopes ever accepted into one mailbox,
	// acked ones included: their digests stay until expiry so that a
	// replayed deposit is recognised (default 16384).
	MailboxDeposits int64
	// TotalBytes caps the bytes of all mailboxes (default 1 GiB).
	TotalBytes int64
	// Mailboxes caps the number of mailboxes (default 100,000).
	Mailboxes int64
	// Retention is how long a mailbox is kept after its period ends
	// (default 30 days).
	Retention time.Duration
}

func (l *Limits) defaults() {
	if l.MailboxBytes <= 0 {
		l.MailboxBytes = 8 << 20
	}
	if l.MailboxEnvelopes <= 0 {
		l.MailboxEnvelopes = 4096
	}
	if l.MailboxDeposits <= 0 {
		l.MailboxDeposits = 4 * l.MailboxEnvelopes
	}
	if l.TotalBytes <= 0 {
		l.TotalBytes = 1 << 30
	}
	if l.Mailboxes <= 0 {
		l.Mailboxes = 100_000
	}
	if l.Retention <= 0 {
		l.Retention = 30 * 24 * time.Hour
	}
}

// ItemOverhead is what each stored envelope counts against the byte
// quotas beyond its own length: its keys, digest and sequence number, so
// that tiny envelopes cannot hold more than their share.
const ItemOverhead = 128

// Key layout (binary, one byte of kind, then the 32-byte mailbox id):
//
//	'm' id             -> meta (metaSize bytes, below)
//	'e' id seq(8, BE)  -> digest(32) ‖ envelope
//	'd' id digest(32)  -> seq(8, BE) ‖ state (0 stored, 1 acked) ‖ size(4, BE)
//
// Nothing else is stored: no peer ids, addresses or deposit times.
const (
	kindMeta     = 'm'
	kindEnvelope = 'e'
	kindDigest   = 'd'
	metaSize     = 8 + 32 + 8 + 8 + 8 + 8
	// digestValueSize: seq, state, envelope size.
	digestValueSize = 8 + 1 + 4
	stateStored     = 0
	stateAcked      = 1
)

// meta is a mailbox's record.
type meta struct {
	expires  int64 // unix seconds
	drainPub [32]byte
	nextSeq  uint64 // next sequence number to assign (from 1)
	bytes    int64  // held, with ItemOverhead per envelope
	count    int64  // held envelopes
	total    int64  // envelopes ever accepted
}

func (m meta) encode() []byte {
	b := make([]byte, 0, metaSize)
	b = binary.BigEndian.AppendUint64(b, uint64(m.expires))
	b = append(b, m.drainPub[:]...)
	b = binary.BigEndian.AppendUint64(b, m.nextSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.bytes))
	b = binary.BigEndian.AppendUint64(b, uint64(m.count))
	return binary.BigEndian.AppendUint64(b, uint64(m.total))
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) != metaSize {
		return m, fmt.Errorf("mailbox store: meta of %d bytes", len(b))
	}
	m.expires = int64(binary.BigEndian.Uint64(b))
	copy(m.drainPub[:], b[8:40])
	m.nextSeq = binary.BigEndian.Uint64(b[40:])
	m.bytes = int64(binary.BigEndian.Uint64(b[48:]))
	m.count = int64(binary.BigEndian.Uint64(b[56:]))
	m.total = int64(binary.BigEndian.Uint64(b[64:]))
	return m, nil
}

func key(kind byte, id ID, rest ...byte) []byte {
	return append(append(append(make([]byte, 0, 1+len(id)+len(rest)), kind), id[:]...), rest...)
}

// upper returns the smallest key above every key with prefix p.
func upper(p []byte) []byte {
	u := bytes.Clone(p)
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] < 0xff {
			u[i]++
			return u[:i+1]
		}
	}
	return nil
}

// Usage is what the store holds now.
type Usage struct {
	Bytes     int64 // with ItemOverhead per envelope
	Envelopes int64
	Mailboxes int64
}

// Store is the relay's mailbox database.
type Store struct {
	db  *pebble.DB
	lim Limits
	log *slog.Logger

	// mu orders writes: the quota checks and the counters below must see
	// every earlier write. Reads (drains) go to pebble without it.
	mu     sync.Mutex
	usage  Usage
	closed bool
}

// OpenStore opens (or creates) the store in dir and counts what it holds.
func OpenStore(dir string, lim Limits, log *slog.Logger) (*Store, error) {
	return openStore(dir, nil, lim, log)
}

// openStore opens the store on fs (nil: the OS's); tests pass a file
// system that can crash.
func openStore(dir string, fs vfs.FS, lim Limits, log *slog.Logger) (*Store, error) {
	lim.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Deposits look up every digest (mostly absent) and acks every
	// acked one (present): bloom filters spare the absent lookups a read
	// per level, and a block cache keeps the digest index in memory.
	cache := pebble.NewCache(32 << 20)
	defer cache.Unref()
	o := &pebble.Options{Logger: quietPebble{log}, FS: fs, Cache: cache}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, o)
	if err != nil {
		return nil, fmt.Errorf("open mailbox store: %w", err)
	}
	s := &Store{db: db, lim: lim, log: log}
	if err := s.count(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// count rebuilds the usage counters from the mailboxes' records.
func (s *Store) count() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindMeta}, UpperBound: []byte{kindMeta + 1}})
	if err != nil {
		return fmt.Errorf("open mailbox store: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		m, err := decodeMeta(it.Value())
		if err != nil {
			return fmt.Errorf("open mailbox store: %w", err)
		}
		s.usage.Mailboxes++
		s.usage.Bytes += m.bytes
		s.usage.Envelopes += m.count
	}
	return it.Error()
}

// Close closes the database; writes acknowledged before are on disk.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}

// Usage returns what the store holds.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage
}

// Limits returns the store's limits, defaults filled in.
func (s *Store) Limits() Limits { return s.lim }

func (s *Store) meta(id ID) (meta, bool, error) {
	v, closer, err := s.db.Get(key(kindMeta, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, fmt.Errorf("mailbox store: %w", err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	return m, err == nil, err
}

// DrainKey returns the drain public key of mailbox id, if the store holds
// it and it has not expired at now.
func (s *Store) DrainKey(id ID, now time.Time) ([32]byte, bool, error) {
	m, ok, err := s.meta(id)
	if err != nil || !ok || m.expires <= now.Unix() {
		return [32]byte{}, false, err
	}
	return m.drainPub, true, nil
}

// Admit is asked, under the store's lock and before anything is written,
// whether a deposit may go ahead: created tells whether it creates the
// mailbox, bytes what it adds (with ItemOverhead per envelope). A non-nil
// error refuses the deposit and is returned by Deposit.
type Admit func(created bool, bytes int64) error

// DepositResult counts a deposit's envelopes.
type DepositResult struct {
	Stored, Duplicate int
	Created           bool // the deposit created the mailbox
}

// Deposit stores envs (with their digests) in mailbox id, creating it with
// drainPub and expires if it does not exist. Envelopes the mailbox holds
// or held (acked) count as duplicates and are not stored again. It is all
// or nothing: either every new envelope is stored, durably (synced) before
// Deposit returns, or none is.
func (s *Store) Deposit(id ID, drainPub [32]byte, expires time.Time, digests []Digest, envs [][]byte, now time.Time, admit Admit) (DepositResult, error) {
	var res DepositResult
	if len(digests) != len(envs) {
		return res, fmt.Errorf("mailbox store: %d digests for %d envelopes", len(digests), len(envs))
	}
	if !expires.After(now) {
		return res, ErrExpired
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return res, ErrStoreClosed
	}
	m, ok, err := s.meta(id)
	if err != nil {
		return res, err
	}
	switch {
	case !ok:
		res.Created = true
		m = meta{expires: expires.Unix(), drainPub: drainPub, nextSeq: 1}
	case m.expires <= now.Unix():
		return res, ErrExpired
	case m.drainPub != drainPub:
		// The id commits to the drain key, so this is a hash collision
		// or a corrupted record; never mix the two.
		return res, fmt.Errorf("%w: drain key differs from the mailbox's", ErrBadCapability)
	}
	// Which envelopes are new: not held or acked, not repeated in envs.
	fresh := make([]int, 0, len(envs))
	var add int64
	inBatch := make(map[Digest]struct{}, len(envs))
	for i, d := range digests {
		if _, dup := inBatch[d]; dup {
			res.Duplicate++
			continue
		}
		inBatch[d] = struct{}{}
		_, closer, err := s.db.Get(key(kindDigest, id, d[:]...))
		if err == nil {
			closer.Close()
			res.Duplicate++
			continue
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return res, fmt.Errorf("mailbox store: %w", err)
		}
		fresh = append(fresh, i)
		add += int64(len(envs[i])) + ItemOverhead
	}
	if len(fresh) == 0 {
		return res, nil // all duplicates, so the mailbox existed
	}
	n := int64(len(fresh))
	switch {
	case m.bytes+add > s.lim.MailboxBytes, m.count+n > s.lim.MailboxEnvelopes, m.total+n > s.lim.MailboxDeposits:
		return res, ErrMailboxFull
	case s.usage.Bytes+add > s.lim.TotalBytes:
		return res, fmt.Errorf("%w: bytes", ErrRelayFull)
	case res.Created && s.usage.Mailboxes >= s.lim.Mailboxes:
		return res, fmt.Errorf("%w: mailboxes", ErrRelayFull)
	}
	if admit != nil {
		if err := admit(res.Created, add); err != nil {
			return res, err
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	var seqBuf [digestValueSize]byte
	for _, i := range fresh {
		seq := m.nextSeq
		m.nextSeq++
		binary.BigEndian.PutUint64(seqBuf[:8], seq)
		seqBuf[8] = stateStored
		binary.BigEndian.PutUint32(seqBuf[9:], uint32(len(envs[i])))
		_ = b.Set(key(kindDigest, id, digests[i][:]...), seqBuf[:], nil)
		v := append(append(make([]byte, 0, len(digests[i])+len(envs[i])), digests[i][:]...), envs[i]...)
		_ = b.Set(key(kindEnvelope, id, seqBuf[:8]...), v, nil)
	}
	m.bytes += add
	m.count += n
	m.total += n
	_ = b.Set(key(kindMeta, id), m.encode(), nil)
	// Synced before the depositor is told: an acknowledged deposit
	// survives a crash of the relay.
	if err := b.Commit(pebble.Sync); err != nil {
		return DepositResult{}, fmt.Errorf("mailbox store: commit: %w", err)
	}
	res.Stored = len(fresh)
	s.usage.Bytes += add
	s.usage.Envelopes += n
	if res.Created {
		s.usage.Mailboxes++
	}
	return res, nil
}

// Drain calls fn with the envelopes of mailbox id after sequence number
// after, in order, at most limit of them; more is true when it stopped at
// limit with envelopes left. env is valid only during the call. An expired
// or unknown mailbox drains as empty.
func (s *Store) Drain(ctx context.Context, id ID, after uint64, limit int, now time.Time, fn func(seq uint64, env []byte) error) (n int, more bool, err error) {
	m, ok, err := s.meta(id)
	if err != nil || !ok || m.expires <= now.Unix() {
		return 0, false, err
	}
	if after == ^uint64(0) {
		return 0, false, nil
	}
	lower := key(kindEnvelope, id, binary.BigEndian.AppendUint64(nil, after+1)...)
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper(key(kindEnvelope, id))})
	if err != nil {
		return 0, false, fmt.Errorf("mailbox store: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if n == limit {
			return n, true, nil
		}
		k, v := it.Key(), it.Value()
		if len(k) != 1+len(id)+8 || len(v) < len(Digest{}) {
			return n, false, fmt.Errorf("mailbox store: corrupt envelope record")
		}
		if err := fn(binary.BigEndian.Uint64(k[1+len(id):]), v[len(Digest{}):]); err != nil {
			return n, false, err
		}
		n++
	}
	if err := it.Error(); err != nil {
		return n, false, fmt.Errorf("mailbox store: %w", err)
	}
	return n, false, ctx.Err()
}

// Ack deletes the envelopes of mailbox id with these digests, durably,
// and returns how many it deleted. Their digests stay (acked) until the
// mailbox expires, so a replayed deposit of them is a duplicate.
func (s *Store) Ack(id ID, digests []Digest, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrStoreClosed
	}
	m, ok, err := s.meta(id)
	if err != nil || !ok {
		return 0, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	var freed, n int64
	seen := make(map[Digest]struct{}, len(digests))
	for _, d := range digests {
		if _, dup := seen[d]; dup {
			continue
		}
		seen[d] = struct{}{}
		dk := key(kindDigest, id, d[:]...)
		v, closer, err := s.db.Get(dk)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("mailbox store: %w", err)
		}
		if len(v) != digestValueSize || v[8] != stateStored {
			closer.Close()
			continue
		}
		val := bytes.Clone(v)
		closer.Close()
		freed += int64(binary.BigEndian.Uint32(val[9:])) + ItemOverhead
		val[8] = stateAcked
		_ = b.Delete(key(kindEnvelope, id, val[:8]...), nil)
		_ = b.Set(dk, val, nil)
		n++
	}
	if n == 0 {
		return 0, nil
	}
	m.bytes -= freed
	m.count -= n
	_ = b.Set(key(kindMeta, id), m.encode(), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("mailbox store: commit: %w", err)
	}
	s.usage.Bytes -= freed
	s.usage.Envelopes -= n
	return int(n), nil
}

// sweepBatch caps the mailboxes one sweep step deletes, so the lock is
// never held for long.
const sweepBatch = 256

// Sweep deletes every mailbox whose retention has passed at now, with its
// envelopes and digests, and returns how many it deleted.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, more, err := s.sweepStep(now)
		total += n
		if err != nil || !more {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

func (s *Store) sweepStep(now time.Time) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false, ErrStoreClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindMeta}, UpperBound: []byte{kindMeta + 1}})
	if err != nil {
		return 0, false, fmt.Errorf("mailbox store: %w", err)
	}
	type expired struct {
		id ID
		m  meta
	}
	var gone []expired
	more := false
	for it.First(); it.Valid(); it.Next() {
		m, err := decodeMeta(it.Value())
		if err != nil || len(it.Key()) != 1+len(ID{}) {
			it.Close()
			return 0, false, fmt.Errorf("mailbox store: corrupt meta: %v", err)
		}
		if m.expires > now.Unix() {
			continue
		}
		if len(gone) == sweepBatch {
			more = true
			break
		}
		var id ID
		copy(id[:], it.Key()[1:])
		gone = append(gone, expired{id, m})
	}
	err = it.Error()
	it.Close()
	if err != nil {
		return 0, false, fmt.Errorf("mailbox store: %w", err)
	}
	if len(gone) == 0 {
		return 0, false, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, g := range gone {
		for _, kind := range []byte{kindEnvelope, kindDigest} {
			p := key(kind, g.id)
			_ = b.DeleteRange(p, upper(p), nil)
		}
		_ = b.Delete(key(kindMeta, g.id), nil)
	}
	// Not synced: a sweep lost in a crash runs again.
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, false, fmt.Errorf("mailbox store: commit: %w", err)
	}
	for _, g := range gone {
		s.usage.Mailboxes--
		s.usage.Bytes -= g.m.bytes
		s.usage.Envelopes -= g.m.count
	}
	s.log.Debug("mailbox store: swept expired mailboxes", "count", len(gone))
	return len(gone), more, nil
}

// quietPebble sends pebble's informational logs to debug.
type quietPebble struct{ log *slog.Logger }

func (q quietPebble) Infof(format string, args ...any) {
	q.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (q quietPebble) Errorf(format string, args ...any) {
	q.log.Warn("pebble: " + fmt.Sprintf(format, args...))
}
func (q quietPebble) Fatalf(format string, args ...any) {
	q.log.Error("pebble: " + fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}
