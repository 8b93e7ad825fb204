package attachments

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// chunkStore holds sealed chunk bytes by ref: in the datastore beside the
// bookkeeping, or in files in a directory beside it (docs/attachments.md
// §6 has the measurement that chose the default).
type chunkStore interface {
	// put stores data under r; durable makes it survive a crash before
	// put returns (own imports), otherwise a crash may lose or tear it
	// (fetched chunks, which are checked and fetched again). The caller
	// may reuse data after put returns.
	put(ctx context.Context, r Ref, data []byte, durable bool) error
	// get returns the chunk, in buf when it fits or in a new slice;
	// errNoChunk when absent. The result must not be modified.
	get(ctx context.Context, r Ref, buf []byte) ([]byte, error)
	// size is the stored size, or errNoChunk.
	size(ctx context.Context, r Ref) (int, error)
	del(ctx context.Context, r Ref) error
	// list calls fn with every stored chunk and its size.
	list(ctx context.Context, fn func(r Ref, size int) error) error
	// sync makes every durable put visible after a crash (the
	// directory entries, for files).
	sync(ctx context.Context) error
}

var errNoChunk = errors.New("attachments: no such chunk")

// dsChunks keeps chunks in the datastore under <prefix>/chunk/<hex>.
type dsChunks struct {
	d      ds.Batching
	prefix string
}

func (c dsChunks) key(r Ref) ds.Key { return ds.RawKey(c.prefix + "/chunk/" + r.hex()) }

func (c dsChunks) put(ctx context.Context, r Ref, data []byte, _ bool) error {
	// A datastore may keep the slice (the in-memory one does); the
	// caller may not expect that.
	return c.d.Put(ctx, c.key(r), append([]byte(nil), data...))
}

func (c dsChunks) get(ctx context.Context, r Ref, _ []byte) ([]byte, error) {
	b, err := c.d.Get(ctx, c.key(r))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, errNoChunk
	}
	return b, err
}

func (c dsChunks) size(ctx context.Context, r Ref) (int, error) {
	n, err := c.d.GetSize(ctx, c.key(r))
	if errors.Is(err, ds.ErrNotFound) {
		return 0, errNoChunk
	}
	return n, err
}

func (c dsChunks) del(ctx context.Context, r Ref) error { return c.d.Delete(ctx, c.key(r)) }

func (c dsChunks) list(ctx context.Context, fn func(Ref, int) error) error {
	res, err := c.d.Query(ctx, query.Query{Prefix: c.prefix + "/chunk", KeysOnly: true, ReturnsSizes: true})
	if err != nil {
		return err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		r, ok := parseHexRef(e.Key[strings.LastIndexByte(e.Key, '/')+1:])
		if !ok {
			continue
		}
		size := e.Size
		if size < 0 {
			if size, err = c.d.GetSize(ctx, ds.RawKey(e.Key)); err != nil {
				return err
			}
		}
		if err := fn(r, size); err != nil {
			return err
		}
	}
	return nil
}

func (c dsChunks) sync(ctx context.Context) error {
	return c.d.Sync(ctx, ds.NewKey(c.prefix+"/chunk"))
}

// dirChunks keeps each chunk in its own file, dir/<2 hex>/<64 hex>,
// written to a temporary file and renamed into place, so a reader never
// sees half a chunk.
type dirChunks struct {
	dir string

	mu    sync.Mutex
	dirty map[string]bool // fan-out directories with durable puts not yet synced
}

func openDirChunks(dir string) (*dirChunks, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	// Temporary files are what a crash mid-put leaves.
	tmps, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return nil, err
	}
	for _, e := range tmps {
		_ = os.Remove(filepath.Join(dir, "tmp", e.Name()))
	}
	// The 256 fan-out directories up front: a mkdir costs ext4 more
	// than writing a chunk, and a fresh store would pay it in the middle
	// of its first transfer.
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return nil, err
		}
	}
	return &dirChunks{dir: dir, dirty: map[string]bool{}}, nil
}

func (c *dirChunks) path(r Ref) (string, string) {
	h := r.hex()
	sub := filepath.Join(c.dir, h[:2])
	return sub, filepath.Join(sub, h)
}

func (c *dirChunks) put(_ context.Context, r Ref, data []byte, durable bool) error {
	sub, final := c.path(r)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(c.dir, "tmp", hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(sub, 0o700); err == nil {
				err = os.Rename(tmp, final)
			}
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if durable {
		c.mu.Lock()
		c.dirty[sub] = true
		c.dirty[c.dir] = true // in case sub is new
		c.mu.Unlock()
	}
	return nil
}

func (c *dirChunks) get(_ context.Context, r Ref, buf []byte) ([]byte, error) {
	_, p := c.path(r)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoChunk
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := int(st.Size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *dirChunks) size(_ context.Context, r Ref) (int, error) {
	_, p := c.path(r)
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errNoChunk
	}
	if err != nil {
		return 0, err
	}
	return int(st.Size()), nil
}

func (c *dirChunks) del(_ context.Context, r Ref) error {
	_, p := c.path(r)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (c *dirChunks) list(ctx context.Context, fn func(Ref, int) error) error {
	subs, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if !sub.IsDir() || len(sub.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(c.dir, sub.Name()))
		if err != nil {
			return err
		}
		for _, e := range files {
			r, ok := parseHexRef(e.Name())
			if !ok {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := fn(r, int(info.Size())); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// sync makes the renames of durable puts durable: the fan-out
// directories they went into.
func (c *dirChunks) sync(context.Context) error {
	c.mu.Lock()
	dirs := c.dirty
	c.dirty = map[string]bool{}
	c.mu.Unlock()
	for d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return fmt.Errorf("sync %s: %w", filepath.Base(d), err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", filepath.Base(d), err)
		}
	}
	return nil
}
