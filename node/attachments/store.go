package attachments

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/glitr-chat/glitr/protocol"
)

// Store errors.
var (
	// ErrQuota: storing this would take the store over its quota.
	ErrQuota = errors.New("attachments: store quota exceeded")
	// ErrNotHeld: the store holds no such file (never stored, or
	// deleted), or the chunk is not one of the file's.
	ErrNotHeld = errors.New("attachments: file not held")
	// ErrMissing: a chunk the operation needs is not in the store.
	ErrMissing = errors.New("attachments: chunk not stored")
)

// DefaultQuota is the store's default quota: 4 GiB of sealed chunks.
const DefaultQuota = 4 << 30

// MaxOwnerLen caps an owner name.
const MaxOwnerLen = 128

// StoreOptions tune a Store. Zero values take the defaults noted.
type StoreOptions struct {
	// Prefix is the key prefix of everything the store writes (default
	// "/attach"), so that it can share a datastore with the node.
	Prefix string
	// Quota caps the bytes of sealed chunks stored (default
	// DefaultQuota).
	Quota uint64
	// Dir, if set, keeps the chunk bytes in files in this directory
	// (dir/<2 hex>/<64 hex>) instead of the datastore; the bookkeeping
	// stays in the datastore. docs/attachments.md §6 says why the node
	// should: a 256 KiB value costs pebble its write-ahead log, a
	// memtable flush and compactions, a file one write.
	Dir string
	// Logger receives debug logs (nil: discard).
	Logger *slog.Logger
}

// Store keeps sealed chunks and the bookkeeping of which file uses which
// chunk and who holds each file, on a go-datastore (the node's pebble):
//
//	<prefix>/chunk/<hex digest>              the sealed chunk (or a file in StoreOptions.Dir)
//	<prefix>/file/<hex root>                 the file's data chunk digests, in order
//	<prefix>/use/<hex chunk>/<hex root>      chunk is used by file root (the index chunk too)
//	<prefix>/own/<hex root>/<hex owner>      owner holds the file; value: expiry, Unix seconds BE (0: none)
//
// A file lives while it has an owner (the node names owners: a message,
// a draft); when the last one goes (released, expired, deleted for
// everyone) its chunks go with it, except those another file still uses.
// A chunk is written only once a file that uses it is recorded, or while
// the import that makes it runs, so nothing is left behind but by a crash
// mid-import, which Sweep clears.
type Store struct {
	d      ds.Batching
	chunks chunkStore
	prefix string
	quota  uint64
	log    *slog.Logger

	// maxFile is protocol.MaxFileSize but in tests of the limit.
	maxFile uint64

	mu      sync.Mutex
	used    uint64
	pending map[Ref]int // chunks of imports in progress
}

// OpenStore opens the store on d and counts what it holds (one scan of
// the chunk keys).
func OpenStore(ctx context.Context, d ds.Batching, opts StoreOptions) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = "/attach"
	}
	if opts.Quota == 0 {
		opts.Quota = DefaultQuota
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{d: d, prefix: strings.TrimSuffix(ds.NewKey(opts.Prefix).String(), "/"), quota: opts.Quota, log: opts.Logger, pending: map[Ref]int{}, maxFile: protocol.MaxFileSize}
	s.chunks = dsChunks{d: d, prefix: s.prefix}
	if opts.Dir != "" {
		dc, err := openDirChunks(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("attachments: open store: %w", err)
		}
		s.chunks = dc
	}
	err := s.chunks.list(ctx, func(_ Ref, size int) error {
		s.used += uint64(size)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attachments: open store: %w", err)
	}
	return s, nil
}

// Used is how many bytes of sealed chunks the store holds.
func (s *Store) Used() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Quota is the store's quota in bytes.
func (s *Store) Quota() uint64 { return s.quota }

func (s *Store) fileKey(r Ref) ds.Key { return ds.RawKey(s.prefix + "/file/" + r.hex()) }
func (s *Store) usePrefix(c Ref) string {
	return s.prefix + "/use/" + c.hex()
}
func (s *Store) useKey(c, root Ref) ds.Key { return ds.RawKey(s.usePrefix(c) + "/" + root.hex()) }
func (s *Store) ownPrefix(root Ref) string { return s.prefix + "/own/" + root.hex() }
func (s *Store) ownKey(root Ref, owner string) ds.Key {
	return ds.RawKey(s.ownPrefix(root) + "/" + hex.EncodeToString([]byte(owner)))
}

func checkOwner(owner string) error {
	if owner == "" || len(owner) > MaxOwnerLen {
		return fmt.Errorf("attachments: owner of %d bytes, want 1..%d", len(owner), MaxOwnerLen)
	}
	return nil
}

func expiryValue(t time.Time) []byte {
	var v uint64
	if !t.IsZero() {
		v = uint64(max(t.Unix(), 1))
	}
	return binary.BigEndian.AppendUint64(nil, v)
}

// HasChunk reports whether the chunk is stored.
func (s *Store) HasChunk(ctx context.Context, r Ref) (bool, error) {
	_, err := s.chunkSize(ctx, r)
	if errors.Is(err, errNoChunk) {
		return false, nil
	}
	return err == nil, err
}

// chunkSize is the stored size of a chunk, or errNoChunk.
func (s *Store) chunkSize(ctx context.Context, r Ref) (int, error) {
	n, err := s.chunks.size(ctx, r)
	if err != nil && !errors.Is(err, errNoChunk) {
		return 0, fmt.Errorf("attachments: chunk %s: %w", r, err)
	}
	return n, err
}

// Chunk returns a stored sealed chunk; ErrMissing if it is not stored.
// The caller must not modify it (an in-memory datastore returns its own
// slice).
func (s *Store) Chunk(ctx context.Context, r Ref) ([]byte, error) {
	return s.chunkInto(ctx, r, nil)
}

// chunkInto is Chunk, in buf when the backend can.
func (s *Store) chunkInto(ctx context.Context, r Ref, buf []byte) ([]byte, error) {
	b, err := s.chunks.get(ctx, r, buf)
	if errors.Is(err, errNoChunk) {
		return nil, fmt.Errorf("%w: %s", ErrMissing, r)
	}
	if err != nil {
		return nil, fmt.Errorf("attachments: chunk %s: %w", r, err)
	}
	return b, nil
}

// Uses reports whether chunk c is one of file root's (its index or a
// data chunk): a server answers only for those.
func (s *Store) Uses(ctx context.Context, root, c Ref) (bool, error) {
	ok, err := s.d.Has(ctx, s.useKey(c, root))
	if err != nil {
		return false, fmt.Errorf("attachments: uses %s: %w", root, err)
	}
	return ok, nil
}

// HasFile reports whether the store records file root (its index was
// stored or fetched; its data chunks may still be missing).
func (s *Store) HasFile(ctx context.Context, root Ref) (bool, error) {
	ok, err := s.d.Has(ctx, s.fileKey(root))
	if err != nil {
		return false, fmt.Errorf("attachments: file %s: %w", root, err)
	}
	return ok, nil
}

// FileChunks returns the data chunks of a recorded file, in order.
func (s *Store) FileChunks(ctx context.Context, root Ref) ([]Ref, error) {
	b, err := s.d.Get(ctx, s.fileKey(root))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotHeld, root)
	}
	if err != nil {
		return nil, fmt.Errorf("attachments: file %s: %w", root, err)
	}
	if len(b)%32 != 0 {
		return nil, fmt.Errorf("attachments: file %s: record of %d bytes", root, len(b))
	}
	refs := make([]Ref, len(b)/32)
	for i := range refs {
		refs[i] = Ref(b[i*32:])
	}
	return refs, nil
}

// Missing returns the positions of the file's data chunks that are not
// stored: what a fetch still has to bring (resume).
func (s *Store) Missing(ctx context.Context, root Ref) ([]int, error) {
	refs, err := s.FileChunks(ctx, root)
	if err != nil {
		return nil, err
	}
	var miss []int
	for i, r := range refs {
		ok, err := s.HasChunk(ctx, r)
		if err != nil {
			return nil, err
		}
		if !ok {
			miss = append(miss, i)
		}
	}
	return miss, nil
}

// reserve charges n bytes against the quota.
func (s *Store) reserveLocked(n uint64) error {
	if s.used+n > s.quota {
		return fmt.Errorf("%w: %d + %d bytes > %d", ErrQuota, s.used, n, s.quota)
	}
	s.used += n
	return nil
}

// putChunk stores a sealed chunk of a recorded file (or of an import in
// progress, pending). r must be RefOf(data): Import computes it from the
// bytes and a fetch checks it on arrival, so hashing again here would
// only double the cost of the hash per byte.
func (s *Store) putChunk(ctx context.Context, root, r Ref, data []byte, pending bool) error {
	return s.putChunkTo(ctx, root, r, data, pending, pending)
}

// putChunkTo is putChunk with the durability chosen: imports write
// durably, fetches need not (a lost chunk is fetched again).
func (s *Store) putChunkTo(ctx context.Context, root, r Ref, data []byte, pending, durable bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !pending {
		ok, err := s.Uses(ctx, root, r)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s is not a chunk of %s", ErrNotHeld, r, root)
		}
	}
	if ok, err := s.HasChunk(ctx, r); err != nil {
		return err
	} else if ok {
		if pending {
			s.pending[r]++
		}
		return nil
	}
	if err := s.reserveLocked(uint64(len(data))); err != nil {
		return err
	}
	if err := s.chunks.put(ctx, r, data, durable); err != nil {
		s.used -= uint64(len(data))
		return fmt.Errorf("attachments: put chunk %s: %w", r, err)
	}
	if pending {
		s.pending[r]++
	}
	return nil
}

// addFile records file root with its data chunks and owner; the index
// chunk (root) and the data chunks may be stored before or after. A file
// already recorded just gains the owner.
func (s *Store) addFile(ctx context.Context, root Ref, refs []Ref, owner string, expires time.Time) error {
	if err := checkOwner(owner); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("attachments: record %s: %w", root, err)
	}
	rec := make([]byte, 0, len(refs)*32)
	for _, r := range refs {
		rec = append(rec, r[:]...)
	}
	puts := []struct {
		k ds.Key
		v []byte
	}{{s.fileKey(root), rec}, {s.useKey(root, root), nil}, {s.ownKey(root, owner), expiryValue(expires)}}
	for _, p := range puts {
		if err := b.Put(ctx, p.k, p.v); err != nil {
			return fmt.Errorf("attachments: record %s: %w", root, err)
		}
	}
	for _, r := range refs {
		if err := b.Put(ctx, s.useKey(r, root), nil); err != nil {
			return fmt.Errorf("attachments: record %s: %w", root, err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("attachments: record %s: %w", root, err)
	}
	return nil
}

// Hold adds an owner to a recorded file (another message that carries
// the same manifest, say). A zero expires means no expiry.
func (s *Store) Hold(ctx context.Context, root Ref, owner string, expires time.Time) error {
	if err := checkOwner(owner); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, err := s.HasFile(ctx, root)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotHeld, root)
	}
	if err := s.d.Put(ctx, s.ownKey(root, owner), expiryValue(expires)); err != nil {
		return fmt.Errorf("attachments: hold %s: %w", root, err)
	}
	return nil
}

// Release drops one owner of a file and deletes the file when it was the
// last; deleted says whether it did. A file the store does not record is
// ErrNotHeld.
func (s *Store) Release(ctx context.Context, root Ref, owner string) (deleted bool, err error) {
	if err := checkOwner(owner); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.HasFile(ctx, root); err != nil {
		return false, err
	} else if !ok {
		return false, fmt.Errorf("%w: %s", ErrNotHeld, root)
	}
	if err := s.d.Delete(ctx, s.ownKey(root, owner)); err != nil {
		return false, fmt.Errorf("attachments: release %s: %w", root, err)
	}
	owners, err := s.keys(ctx, s.ownPrefix(root))
	if err != nil || len(owners) > 0 {
		return false, err
	}
	return true, s.deleteLocked(ctx, root)
}

// Delete deletes a file whatever holds it (delete for everyone): its
// record, owners and every chunk no other file uses.
func (s *Store) Delete(ctx context.Context, root Ref) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(ctx, root)
}

// Expire releases every owner whose expiry is before now and deletes the
// files left without one; it returns how many files it deleted.
func (s *Store) Expire(ctx context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := s.d.Query(ctx, query.Query{Prefix: s.prefix + "/own"})
	if err != nil {
		return 0, fmt.Errorf("attachments: expire: %w", err)
	}
	var expired []string
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return 0, fmt.Errorf("attachments: expire: %w", r.Error)
		}
		if len(r.Value) == 8 {
			if at := binary.BigEndian.Uint64(r.Value); at != 0 && at < uint64(now.Unix()) {
				expired = append(expired, r.Key)
			}
		}
	}
	res.Close()
	roots := map[Ref]bool{}
	for _, k := range expired {
		root, ok := s.rootOfOwnKey(k)
		if !ok {
			continue
		}
		if err := s.d.Delete(ctx, ds.RawKey(k)); err != nil {
			return 0, fmt.Errorf("attachments: expire: %w", err)
		}
		roots[root] = true
	}
	n := 0
	for root := range roots {
		owners, err := s.keys(ctx, s.ownPrefix(root))
		if err != nil {
			return n, err
		}
		if len(owners) == 0 {
			if err := s.deleteLocked(ctx, root); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Owners lists who holds file root (none when it is not recorded), so
// that an Access can ask whether a peer may see any of them.
func (s *Store) Owners(ctx context.Context, root Ref) ([]string, error) {
	prefix := s.ownPrefix(root) + "/"
	ks, err := s.keys(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		if b, err := hex.DecodeString(strings.TrimPrefix(k, prefix)); err == nil {
			out = append(out, string(b))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Held lists every (file, owner) the store records, for a node that
// checks its holds against its messages at start.
func (s *Store) Held(ctx context.Context, fn func(root Ref, owner string) error) error {
	prefix := s.prefix + "/own/"
	ks, err := s.keys(ctx, prefix)
	if err != nil {
		return err
	}
	for _, k := range ks {
		h, o, _ := strings.Cut(strings.TrimPrefix(k, prefix), "/")
		root, ok := parseHexRef(h)
		b, err := hex.DecodeString(o)
		if !ok || err != nil {
			continue
		}
		if err := fn(root, string(b)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) rootOfOwnKey(k string) (Ref, bool) {
	rest, ok := strings.CutPrefix(k, s.prefix+"/own/")
	if !ok {
		return Ref{}, false
	}
	h, _, _ := strings.Cut(rest, "/")
	return parseHexRef(h)
}

func parseHexRef(h string) (Ref, bool) {
	var r Ref
	if len(h) != 64 {
		return r, false
	}
	if _, err := hex.Decode(r[:], []byte(h)); err != nil {
		return r, false
	}
	return r, true
}

// keys lists the keys under prefix.
func (s *Store) keys(ctx context.Context, prefix string) ([]string, error) {
	res, err := s.d.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("attachments: list %s: %w", prefix, err)
	}
	defer res.Close()
	var ks []string
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("attachments: list %s: %w", prefix, r.Error)
		}
		ks = append(ks, r.Key)
	}
	return ks, nil
}

// deleteLocked removes file root: its record, owners and use entries in
// one batch, then every chunk (the index too) that no other file uses. A
// crash between the two leaves chunks no file uses, which Sweep removes.
func (s *Store) deleteLocked(ctx context.Context, root Ref) error {
	refs, err := s.FileChunks(ctx, root)
	if errors.Is(err, ErrNotHeld) {
		refs, err = nil, nil
	}
	if err != nil {
		return err
	}
	b, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("attachments: delete %s: %w", root, err)
	}
	owners, err := s.keys(ctx, s.ownPrefix(root))
	if err != nil {
		return err
	}
	for _, k := range owners {
		if err := b.Delete(ctx, ds.RawKey(k)); err != nil {
			return fmt.Errorf("attachments: delete %s: %w", root, err)
		}
	}
	if err := b.Delete(ctx, s.fileKey(root)); err != nil {
		return fmt.Errorf("attachments: delete %s: %w", root, err)
	}
	var unused []Ref
	seen := map[Ref]bool{}
	for _, c := range append([]Ref{root}, refs...) {
		if seen[c] {
			continue
		}
		seen[c] = true
		if err := b.Delete(ctx, s.useKey(c, root)); err != nil {
			return fmt.Errorf("attachments: delete %s: %w", root, err)
		}
		users, err := s.keys(ctx, s.usePrefix(c))
		if err != nil {
			return err
		}
		shared := false
		for _, u := range users {
			if u != s.useKey(c, root).String() {
				shared = true
			}
		}
		if !shared && s.pending[c] == 0 {
			unused = append(unused, c)
		}
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("attachments: delete %s: %w", root, err)
	}
	var freed uint64
	for _, c := range unused {
		n, err := s.removeChunkLocked(ctx, c)
		if err != nil {
			return fmt.Errorf("attachments: delete %s: %w", root, err)
		}
		freed += n
	}
	s.log.Debug("attachments: file deleted", "root", root.String(), "chunks", len(refs)+1, "freed", freed)
	return nil
}

// removeChunkLocked deletes a stored chunk and returns the bytes freed (0
// when it was not stored).
func (s *Store) removeChunkLocked(ctx context.Context, c Ref) (uint64, error) {
	size, err := s.chunks.size(ctx, c)
	if errors.Is(err, errNoChunk) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := s.chunks.del(ctx, c); err != nil {
		return 0, err
	}
	s.used -= min(uint64(size), s.used)
	return uint64(size), nil
}

// Sweep deletes stored chunks that no recorded file uses and no running
// import wrote: what a crash in the middle of an import or a delete
// leaves. It returns how many it deleted.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []Ref
	if err := s.chunks.list(ctx, func(r Ref, _ int) error { all = append(all, r); return nil }); err != nil {
		return 0, fmt.Errorf("attachments: sweep: %w", err)
	}
	n := 0
	for _, c := range all {
		if s.pending[c] > 0 {
			continue
		}
		users, err := s.keys(ctx, s.usePrefix(c))
		if err != nil {
			return n, err
		}
		if len(users) > 0 {
			continue
		}
		if _, err := s.removeChunkLocked(ctx, c); err != nil {
			return n, fmt.Errorf("attachments: sweep: %w", err)
		}
		n++
	}
	return n, nil
}

// dropPending forgets chunks an import wrote; with remove (the import
// failed) it deletes those no file uses.
func (s *Store) dropPending(ctx context.Context, refs []Ref, remove bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var firstErr error
	for _, c := range refs {
		if s.pending[c]--; s.pending[c] <= 0 {
			delete(s.pending, c)
		}
		if !remove || s.pending[c] > 0 {
			continue
		}
		users, err := s.keys(ctx, s.usePrefix(c))
		if err == nil && len(users) == 0 {
			_, err = s.removeChunkLocked(ctx, c)
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("attachments: clean up import: %w", err)
		}
	}
	return firstErr
}

// dropChunk deletes one stored chunk that failed authentication, so that
// a fetch brings it again.
func (s *Store) dropChunk(ctx context.Context, c Ref) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.removeChunkLocked(ctx, c); err != nil {
		return fmt.Errorf("attachments: drop chunk %s: %w", c, err)
	}
	return nil
}

// sync makes what was written durable (a message must never name chunks
// a crash could lose).
func (s *Store) sync(ctx context.Context) error {
	if err := s.chunks.sync(ctx); err != nil {
		return fmt.Errorf("attachments: sync chunks: %w", err)
	}
	if err := s.d.Sync(ctx, ds.NewKey(s.prefix)); err != nil {
		return fmt.Errorf("attachments: sync: %w", err)
	}
	return nil
}
