package dag

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/keytransform"
	dsq "github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// kvStore is the store's view of its backend: the keys of keys.go, read and
// written either through go-datastore (dsKV) or, on the fast path,
// directly in a pebble database under a key prefix (pebbleKV). Both write
// the same bytes under the same keys, so a store written by one path is
// read by the other.
type kvStore interface {
	// get returns a copy of the value under k, or errKVNotFound.
	get(ctx context.Context, k []byte) ([]byte, error)
	has(ctx context.Context, k []byte) (bool, error)
	// scan visits the entries whose keys start with prefix+"/" in key
	// order (descending if desc). k and v are only valid during the call.
	scan(ctx context.Context, prefix []byte, keysOnly, desc bool, fn func(k, v []byte) (bool, error)) error
	// newBatch starts a write batch of about sizeHint bytes.
	newBatch(ctx context.Context, sizeHint int) (kvBatch, error)
}

// kvBatch is an atomic write batch. put copies k and v.
type kvBatch interface {
	put(k, v []byte) error
	// putRecord writes a block record (record.go) under k without an
	// intermediate buffer where the backend allows it.
	putRecord(k []byte, in *Inner, prevHeight uint64, env, inner []byte, version byte) error
	del(k []byte) error
	// commit applies the batch atomically; with sync it is durable when
	// commit returns. The batch is unusable afterwards.
	commit(sync bool) error
	// discard releases an uncommitted batch.
	discard()
}

var errKVNotFound = errors.New("dag: key not found")

// dsKV is the go-datastore backend.
type dsKV struct{ d ds.Batching }

func (k dsKV) get(ctx context.Context, key []byte) ([]byte, error) {
	v, err := k.d.Get(ctx, mkKey(key))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, errKVNotFound
	}
	return v, err
}

func (k dsKV) has(ctx context.Context, key []byte) (bool, error) {
	return k.d.Has(ctx, mkKey(key))
}

func (k dsKV) scan(ctx context.Context, prefix []byte, keysOnly, desc bool, fn func(k, v []byte) (bool, error)) error {
	var order dsq.Order = dsq.OrderByKey{}
	if desc {
		order = dsq.OrderByKeyDescending{}
	}
	res, err := k.d.Query(ctx, dsq.Query{Prefix: string(prefix), KeysOnly: keysOnly, Orders: []dsq.Order{order}})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		more, err := fn([]byte(r.Key), r.Value)
		if err != nil || !more {
			return err
		}
	}
	return ctx.Err()
}

func (k dsKV) newBatch(ctx context.Context, _ int) (kvBatch, error) {
	b, err := k.d.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &dsBatch{ctx: ctx, d: k.d, b: b}, nil
}

type dsBatch struct {
	ctx context.Context
	d   ds.Batching
	b   ds.Batch
}

// put copies v: go-datastore batches may keep the slice until commit.
func (b *dsBatch) put(k, v []byte) error {
	return b.b.Put(b.ctx, mkKey(k), append([]byte(nil), v...))
}

func (b *dsBatch) putRecord(k []byte, in *Inner, prevHeight uint64, env, inner []byte, version byte) error {
	rec := appendRecord(make([]byte, 0, recordLen(in, prevHeight, env, inner)), in, prevHeight, env, inner, version)
	return b.b.Put(b.ctx, mkKey(k), rec)
}

func (b *dsBatch) del(k []byte) error { return b.b.Delete(b.ctx, mkKey(k)) }

func (b *dsBatch) commit(sync bool) error {
	if err := b.b.Commit(b.ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if sync {
		if err := b.d.Sync(b.ctx, ds.NewKey("/")); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	return nil
}

func (b *dsBatch) discard() {}

// pebbleKV is the fast path: the same keys, prefixed, straight in pebble.
type pebbleKV struct {
	db     *pebble.DB
	prefix []byte
	// sync makes earlier writes durable. Over a go-ds-pebble datastore it
	// is the datastore's Sync, which knows whether the WAL is disabled (a
	// synced write then fails in pebble); otherwise it syncs the WAL.
	sync func() error
	// commitHook, when set (tests), runs batch commits, to inject faults.
	commitHook func(commit func() error) error
}

func (k *pebbleKV) key(dst, key []byte) []byte {
	return append(append(dst, k.prefix...), key...)
}

func (k *pebbleKV) get(_ context.Context, key []byte) ([]byte, error) {
	v, closer, err := k.db.Get(k.key(make([]byte, 0, len(k.prefix)+len(key)), key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errKVNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

func (k *pebbleKV) has(ctx context.Context, key []byte) (bool, error) {
	_, err := k.get(ctx, key)
	if errors.Is(err, errKVNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (k *pebbleKV) scan(ctx context.Context, prefix []byte, _, desc bool, fn func(k, v []byte) (bool, error)) error {
	lower := append(k.key(nil, prefix), '/')
	upper := append(k.key(nil, prefix), '/'+1)
	it, err := k.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	valid := it.First
	next := it.Next
	if desc {
		valid, next = it.Last, it.Prev
	}
	for ok := valid(); ok; ok = next() {
		if err := ctx.Err(); err != nil {
			_ = it.Close()
			return err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		more, err := fn(it.Key()[len(k.prefix):], v)
		if err != nil || !more {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

func (k *pebbleKV) newBatch(_ context.Context, sizeHint int) (kvBatch, error) {
	return &pebbleBatch{kv: k, b: k.db.NewBatchWithSize(sizeHint)}, nil
}

type pebbleBatch struct {
	kv  *pebbleKV
	b   *pebble.Batch
	buf []byte
}

func (b *pebbleBatch) put(k, v []byte) error {
	b.buf = b.kv.key(b.buf[:0], k)
	return b.b.Set(b.buf, v, nil)
}

func (b *pebbleBatch) putRecord(k []byte, in *Inner, prevHeight uint64, env, inner []byte, version byte) error {
	n := recordLen(in, prevHeight, env, inner)
	op := b.b.SetDeferred(len(b.kv.prefix)+len(k), n)
	copy(op.Key[copy(op.Key, b.kv.prefix):], k)
	if rec := appendRecord(op.Value[:0:n], in, prevHeight, env, inner, version); len(rec) != n || &rec[0] != &op.Value[0] {
		panic("dag: record length mismatch") // recordLen and appendRecord disagree
	}
	return op.Finish()
}

func (b *pebbleBatch) del(k []byte) error {
	b.buf = b.kv.key(b.buf[:0], k)
	return b.b.Delete(b.buf, nil)
}

func (b *pebbleBatch) commit(sync bool) error {
	do := func() error {
		if err := b.b.Commit(pebble.NoSync); err != nil {
			return err
		}
		if sync {
			return b.kv.syncWAL()
		}
		return nil
	}
	var err error
	if h := b.kv.commitHook; h != nil {
		err = h(do)
	} else {
		err = do()
	}
	_ = b.b.Close()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (b *pebbleBatch) discard() { _ = b.b.Close() }

func (k *pebbleKV) syncWAL() error {
	if k.sync != nil {
		return k.sync()
	}
	if err := k.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// PebbleOptions returns the pebble options a database holding a block
// store is tuned for: 64 MiB memtables. A catch-up batch of 5,000 blocks
// (about 5 MB with its index keys) then lands in the memtable instead of
// exceeding pebble's large-batch threshold (half the memtable, 2 MiB by
// default), which would make every batch its own L0 flush; and a
// 100,000-block catch-up needs one flush instead of three, with no write
// stall while a flush runs (docs/benchmarks.md has the figures). Pebble
// starts with a 256 KiB memtable and doubles it only under write load, so
// an idle node does not pay for the size; a burst may hold two full
// memtables. Callers may set further fields on the result.
func PebbleOptions() *pebble.Options { return &pebble.Options{MemTableSize: 64 << 20} }

// pebbleFastPath detects a go-ds-pebble datastore, bare or under one
// namespace (keytransform prefix), and returns the fast-path backend over
// its pebble database with the equivalent key prefix.
func pebbleFastPath(d ds.Batching) (*pebbleKV, bool) {
	var prefix string
	if kt, ok := d.(*keytransform.Datastore); ok {
		pt, ok := kt.KeyTransform.(keytransform.PrefixTransform)
		ch := kt.Children()
		if !ok || len(ch) != 1 {
			return nil, false
		}
		prefix = pt.Prefix.String()
		if prefix == "/" {
			prefix = ""
		}
		inner, ok := ch[0].(ds.Batching)
		if !ok {
			return nil, false
		}
		d = inner
	}
	p, ok := d.(*pebbleds.Datastore)
	if !ok || p.DB == nil {
		return nil, false
	}
	sync := func() error { return p.Sync(context.Background(), ds.NewKey("/")) }
	return &pebbleKV{db: p.DB, prefix: []byte(prefix), sync: sync}, true
}
