package attachments

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	pebbleds "github.com/ipfs/go-ds-pebble"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/protocol"
)

func memStore(t testing.TB, quota uint64) *Store {
	t.Helper()
	s, err := OpenStore(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), StoreOptions{Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fileStore(t testing.TB, quota uint64) *Store {
	t.Helper()
	s, err := OpenStore(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), StoreOptions{Quota: quota, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// eachBackend runs a test with chunks in the datastore and in files.
func eachBackend(t *testing.T, fn func(t *testing.T, newStore func(testing.TB, uint64) *Store)) {
	t.Run("datastore", func(t *testing.T) { fn(t, memStore) })
	t.Run("files", func(t *testing.T) { fn(t, fileStore) })
}

func openPebble(t testing.TB, dir string) *pebbleds.Datastore {
	t.Helper()
	// The node's pebble options (64 MiB memtables).
	d, err := pebbleds.NewDatastore(dir, pebbleds.WithPebbleOpts(dag.PebbleOptions()))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func importBytes(t testing.TB, s *Store, data []byte, meta Meta) Manifest {
	t.Helper()
	if meta.Owner == "" {
		meta.Owner = "msg-1"
	}
	m, err := s.Import(context.Background(), bytes.NewReader(data), meta)
	if err != nil {
		t.Fatalf("import %d bytes: %v", len(data), err)
	}
	return m
}

func openBytes(t testing.TB, s *Store, m Manifest) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := s.Open(context.Background(), m, &out, nil); err != nil {
		t.Fatalf("open: %v", err)
	}
	return out.Bytes()
}

func TestImportOpenRoundTrip(t *testing.T) { eachBackend(t, testImportOpenRoundTrip) }

func testImportOpenRoundTrip(t *testing.T, memStore func(testing.TB, uint64) *Store) {
	const cs = protocol.MinChunkSize
	sizes := []int{0, 1, cs - 1, cs, cs + 1, 3*cs + 17, 1<<20 + 1}
	for _, size := range sizes {
		for _, declared := range []bool{true, false} {
			s := memStore(t, 0)
			data := randomBytes(t, size)
			meta := Meta{Size: -1, ChunkSize: cs, Name: "notes.txt", Type: "text/plain"}
			if declared {
				meta.Size = int64(size)
			}
			var calls int
			var last int64
			meta.Progress = func(done, total int64) { calls++; last = done }
			m := importBytes(t, s, data, meta)
			if m.Size != uint64(size) || m.Padded != PaddedSize(uint64(size)) || m.ChunkSize != cs {
				t.Fatalf("%d bytes: manifest sizes %d/%d/%d", size, m.Size, m.Padded, m.ChunkSize)
			}
			if calls == 0 || last != int64(size) {
				t.Fatalf("%d bytes: progress %d calls, last %d", size, calls, last)
			}
			if got := openBytes(t, s, m); !bytes.Equal(got, data) {
				t.Fatalf("%d bytes (declared %v): round trip gave %d bytes", size, declared, len(got))
			}
			if s.Used() != m.SealedSize() {
				t.Fatalf("%d bytes: store uses %d, the file seals to %d", size, s.Used(), m.SealedSize())
			}
			st, err := s.Status(context.Background(), m)
			if err != nil || !st.Complete() || st.BytesHeld != st.Bytes {
				t.Fatalf("%d bytes: status %+v, %v", size, st, err)
			}
		}
	}
}

// The default chunk size, a file of several chunks whose padding spills
// into a chunk of zeros only.
func TestImportDefaultChunkSize(t *testing.T) {
	s := memStore(t, 0)
	size := 3*protocol.DefaultChunkSize + 1 // pads to 3 chunks + 64 KiB
	data := randomBytes(t, size)
	m := importBytes(t, s, data, Meta{Size: int64(size)})
	if m.ChunkSize != protocol.DefaultChunkSize || m.Chunks() != 4 {
		t.Fatalf("chunk size %d, %d chunks", m.ChunkSize, m.Chunks())
	}
	if !bytes.Equal(openBytes(t, s, m), data) {
		t.Fatal("round trip differs")
	}
}

func TestPaddedSizeBuckets(t *testing.T) {
	cases := map[uint64]uint64{0: 4096, 1: 4096, 4096: 4096, 4097: 4352, 1 << 20: 1 << 20, 1<<20 + 1: 1<<20 + 32<<10, 5_000_000: 5_111_808, protocol.MaxFileSize - 1: protocol.MaxFileSize, protocol.MaxFileSize: protocol.MaxFileSize}
	for n, want := range cases {
		if got := PaddedSize(n); got != want {
			t.Errorf("PaddedSize(%d) = %d, want %d", n, got, want)
		}
	}
	for range 10000 {
		n := mrand.Uint64N(protocol.MaxFileSize) + 1
		p := PaddedSize(n)
		if p < n || (n > MinPadded && float64(p) > float64(n)*1.12) || p > protocol.MaxFileSize {
			t.Fatalf("PaddedSize(%d) = %d", n, p)
		}
		if PaddedSize(p) != p {
			t.Fatalf("PaddedSize is not idempotent at %d", n)
		}
	}
}

func TestSealerBindsPositionAndFile(t *testing.T) {
	k1, _ := NewKey()
	k2, _ := NewKey()
	a, b := newSealer(k1), newSealer(k2)
	plain := []byte("a chunk of a file")
	c := a.sealChunk(nil, plain, 3)
	if _, err := a.openChunk(nil, c, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := a.openChunk(nil, c, 4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("moved chunk opened: %v", err)
	}
	if _, err := b.openChunk(nil, c, 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("another file's chunk opened: %v", err)
	}
	// An index and a data chunk never stand in for each other.
	refs := []Ref{RefOf(c)}
	idx := a.sealIndex(refs, protocol.MinChunkSize, MinPadded)
	if _, err := a.openChunk(nil, idx, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("index opened as a chunk: %v", err)
	}
	if _, err := a.openIndex(idx, protocol.MinChunkSize, 8192); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("index opened for another shape: %v", err)
	}
	if got, err := a.openIndex(idx, protocol.MinChunkSize, MinPadded); err != nil || got[0] != refs[0] {
		t.Fatalf("index: %v", err)
	}
}

// Stored chunks that were tampered with, swapped with another chunk of
// the file or replaced by a chunk of another file are refused, and
// dropped so that a fetch brings them again.
func TestOpenRefusesTamperedChunks(t *testing.T) { eachBackend(t, testOpenRefusesTamperedChunks) }

func testOpenRefusesTamperedChunks(t *testing.T, memStore func(testing.TB, uint64) *Store) {
	const cs = protocol.MinChunkSize
	ctx := context.Background()
	data := randomBytes(t, 3*cs)
	cases := map[string]func(s *Store, refs []Ref, other []Ref){
		"flipped bit": func(s *Store, refs, _ []Ref) {
			b, _ := s.Chunk(ctx, refs[1])
			b[100] ^= 1
			s.chunks.put(ctx, refs[1], b, false)
		},
		"swapped": func(s *Store, refs, _ []Ref) {
			b0, _ := s.Chunk(ctx, refs[0])
			b1, _ := s.Chunk(ctx, refs[1])
			s.chunks.put(ctx, refs[0], b1, false)
			s.chunks.put(ctx, refs[1], b0, false)
		},
		"another file's": func(s *Store, refs, other []Ref) {
			b, _ := s.Chunk(ctx, other[1])
			s.chunks.put(ctx, refs[1], b, false)
		},
		"truncated": func(s *Store, refs, _ []Ref) {
			b, _ := s.Chunk(ctx, refs[2])
			s.chunks.put(ctx, refs[2], b[:len(b)-1], false)
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			s := memStore(t, 0)
			m := importBytes(t, s, data, Meta{Size: int64(len(data)), ChunkSize: cs})
			o := importBytes(t, s, randomBytes(t, len(data)), Meta{Size: int64(len(data)), ChunkSize: cs, Owner: "other"})
			refs, _ := s.FileChunks(ctx, m.Root)
			other, _ := s.FileChunks(ctx, o.Root)
			tamper(s, refs, other)
			err := s.Open(ctx, m, io.Discard, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			miss, _ := s.Missing(ctx, m.Root)
			if len(miss) != 1 {
				t.Fatalf("%d chunks dropped, want the bad one", len(miss))
			}
			if err := s.Open(ctx, m, io.Discard, nil); !errors.Is(err, ErrMissing) {
				t.Fatalf("open after the drop: %v, want ErrMissing", err)
			}
			// The other file is untouched.
			if err := s.Open(ctx, o, io.Discard, nil); err != nil {
				t.Fatalf("other file: %v", err)
			}
		})
	}
	// A manifest whose key or shape is wrong cannot open the index.
	s := memStore(t, 0)
	m := importBytes(t, s, data, Meta{Size: int64(len(data)), ChunkSize: cs})
	bad := m
	bad.Key[0] ^= 1
	if err := s.Open(ctx, bad, io.Discard, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong key: %v", err)
	}
}

type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("read a file that should have been refused")
	return 0, io.EOF
}

func TestImportRefusesOverLimit(t *testing.T) {
	ctx := context.Background()
	s := memStore(t, 0)
	// Declared too large: refused before a byte is read.
	_, err := s.Import(ctx, failReader{t}, Meta{Size: protocol.MaxFileSize + 1, Owner: "m"})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared over the limit: %v", err)
	}
	// Undeclared: refused once the reader passes the limit (lowered here
	// to 1 MiB), and nothing stays.
	s.maxFile = 1 << 20
	_, err = s.Import(ctx, bytes.NewReader(make([]byte, 1<<20+1)), Meta{Size: -1, Owner: "m"})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("undeclared over the limit: %v", err)
	}
	if s.Used() != 0 {
		t.Fatalf("%d bytes left after a refused import", s.Used())
	}
	if n := countKeys(t, s); n != 0 {
		t.Fatalf("%d keys left after a refused import", n)
	}
	// Exactly at the limit is fine.
	if _, err := s.Import(ctx, bytes.NewReader(make([]byte, 1<<20)), Meta{Size: -1, Owner: "m"}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

func countKeys(t testing.TB, s *Store) int {
	t.Helper()
	ks, err := s.keys(context.Background(), s.prefix)
	if err != nil {
		t.Fatal(err)
	}
	n := len(ks)
	if _, ok := s.chunks.(*dirChunks); ok {
		err = s.chunks.list(context.Background(), func(Ref, int) error { n++; return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func TestImportFailuresLeaveNothing(t *testing.T) { eachBackend(t, testImportFailuresLeaveNothing) }

func testImportFailuresLeaveNothing(t *testing.T, memStore func(testing.TB, uint64) *Store) {
	ctx := context.Background()
	const cs = protocol.MinChunkSize
	t.Run("size mismatch", func(t *testing.T) {
		s := memStore(t, 0)
		for _, n := range []int{3*cs - 1, 3*cs + 1} {
			_, err := s.Import(ctx, bytes.NewReader(make([]byte, n)), Meta{Size: 3 * cs, ChunkSize: cs, Owner: "m"})
			if !errors.Is(err, ErrSizeMismatch) {
				t.Fatalf("%d bytes for %d: %v", n, 3*cs, err)
			}
		}
		if s.Used() != 0 || countKeys(t, s) != 0 {
			t.Fatalf("left %d bytes, %d keys", s.Used(), countKeys(t, s))
		}
	})
	t.Run("quota", func(t *testing.T) {
		s := memStore(t, 2*cs)
		if _, err := s.Import(ctx, failReader{t}, Meta{Size: 2 * cs, ChunkSize: cs, Owner: "m"}); !errors.Is(err, ErrQuota) {
			t.Fatalf("declared over quota: %v", err)
		}
		if _, err := s.Import(ctx, bytes.NewReader(make([]byte, 2*cs)), Meta{Size: -1, ChunkSize: cs, Owner: "m"}); !errors.Is(err, ErrQuota) {
			t.Fatalf("undeclared over quota: %v", err)
		}
		if s.Used() != 0 || countKeys(t, s) != 0 {
			t.Fatalf("left %d bytes, %d keys", s.Used(), countKeys(t, s))
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		s := memStore(t, 0)
		cctx, cancel := context.WithCancel(ctx)
		meta := Meta{Size: -1, ChunkSize: cs, Owner: "m", Progress: func(done, _ int64) {
			if done >= 2*cs {
				cancel()
			}
		}}
		if _, err := s.Import(cctx, bytes.NewReader(make([]byte, 8*cs)), meta); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled import: %v", err)
		}
		if s.Used() != 0 || countKeys(t, s) != 0 {
			t.Fatalf("left %d bytes, %d keys", s.Used(), countKeys(t, s))
		}
	})
	t.Run("reader error", func(t *testing.T) {
		s := memStore(t, 0)
		r := io.MultiReader(bytes.NewReader(make([]byte, 2*cs+5)), iotestErr{})
		if _, err := s.Import(ctx, r, Meta{Size: -1, ChunkSize: cs, Owner: "m"}); !errors.Is(err, errRead) {
			t.Fatalf("reader error: %v", err)
		}
		if s.Used() != 0 || countKeys(t, s) != 0 {
			t.Fatalf("left %d bytes, %d keys", s.Used(), countKeys(t, s))
		}
	})
	t.Run("bad meta", func(t *testing.T) {
		s := memStore(t, 0)
		for _, meta := range []Meta{{Owner: "m", Name: "a/b"}, {Owner: "m", Type: "Image/JPEG"}, {Owner: ""}, {Owner: "m", ChunkSize: 1000}, {Owner: "m", Waveform: make([]byte, MaxWaveform+1)}} {
			if _, err := s.Import(ctx, failReader{t}, meta); err == nil {
				t.Fatalf("meta %+v accepted", meta)
			}
		}
	})
}

var errRead = errors.New("disk on fire")

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errRead }

func TestStoreOwnersAndGC(t *testing.T) { eachBackend(t, testStoreOwnersAndGC) }

func testStoreOwnersAndGC(t *testing.T, memStore func(testing.TB, uint64) *Store) {
	ctx := context.Background()
	const cs = protocol.MinChunkSize
	s := memStore(t, 0)
	a := importBytes(t, s, randomBytes(t, 3*cs), Meta{Size: 3 * cs, ChunkSize: cs, Owner: "msg-a"})
	b := importBytes(t, s, randomBytes(t, 2*cs), Meta{Size: 2 * cs, ChunkSize: cs, Owner: "msg-b"})
	if err := s.Hold(ctx, a.Root, "forward-a", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if owners, err := s.Owners(ctx, a.Root); err != nil || !slices.Equal(owners, []string{"forward-a", "msg-a"}) {
		t.Fatalf("owners %q %v", owners, err)
	}
	held := map[string]Ref{}
	if err := s.Held(ctx, func(r Ref, o string) error { held[o] = r; return nil }); err != nil || len(held) != 3 ||
		held["msg-a"] != a.Root || held["forward-a"] != a.Root || held["msg-b"] != b.Root {
		t.Fatalf("held %v %v", held, err)
	}
	// One owner gone, the other keeps the file.
	if deleted, err := s.Release(ctx, a.Root, "msg-a"); err != nil || deleted {
		t.Fatalf("release of one owner: deleted %v, %v", deleted, err)
	}
	if err := s.Open(ctx, a, io.Discard, nil); err != nil {
		t.Fatalf("held file: %v", err)
	}
	// A chunk shared with another file survives the delete of one.
	refsA, _ := s.FileChunks(ctx, a.Root)
	shared := RefOf([]byte("fake index of a file that shares a chunk"))
	if err := s.addFile(ctx, shared, []Ref{refsA[1]}, "sharer", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if deleted, err := s.Release(ctx, a.Root, "forward-a"); err != nil || !deleted {
		t.Fatalf("release of the last owner: deleted %v, %v", deleted, err)
	}
	if ok, _ := s.HasFile(ctx, a.Root); ok {
		t.Fatal("released file still recorded")
	}
	for i, r := range refsA {
		ok, _ := s.HasChunk(ctx, r)
		if ok != (i == 1) {
			t.Fatalf("chunk %d present %v after the delete", i, ok)
		}
	}
	if ok, _ := s.HasChunk(ctx, a.Root); ok {
		t.Fatal("index of a deleted file still stored")
	}
	if err := s.Open(ctx, b, io.Discard, nil); err != nil {
		t.Fatalf("the other file: %v", err)
	}
	// Delete for everyone ignores owners.
	if err := s.Hold(ctx, b.Root, "msg-b2", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, b.Root); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, b, io.Discard, nil); !errors.Is(err, ErrMissing) {
		t.Fatalf("open of a deleted file: %v", err)
	}
	if err := s.Hold(ctx, b.Root, "late", time.Time{}); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("hold of a deleted file: %v", err)
	}
	if _, err := s.Release(ctx, shared, "sharer"); err != nil {
		t.Fatal(err)
	}
	if s.Used() != 0 || countKeys(t, s) != 0 {
		t.Fatalf("left %d bytes, %d keys", s.Used(), countKeys(t, s))
	}
}

func TestStoreExpireAndSweep(t *testing.T) {
	t.Run("pebble", func(t *testing.T) { testStoreExpireAndSweep(t, "") })
	t.Run("pebble and files", func(t *testing.T) { testStoreExpireAndSweep(t, t.TempDir()) })
}

func testStoreExpireAndSweep(t *testing.T, chunkDir string) {
	ctx := context.Background()
	dir := t.TempDir()
	d := openPebble(t, dir)
	s, err := OpenStore(ctx, d, StoreOptions{Dir: chunkDir})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := importBytes(t, s, randomBytes(t, 5000), Meta{Size: 5000, Owner: "disappearing", Expires: now.Add(-time.Minute)})
	keep := importBytes(t, s, randomBytes(t, 5000), Meta{Size: 5000, Owner: "kept", Expires: now.Add(time.Hour)})
	// Held by an expiring and a lasting owner: stays.
	both := importBytes(t, s, randomBytes(t, 5000), Meta{Size: 5000, Owner: "expiring", Expires: now.Add(-time.Minute)})
	if err := s.Hold(ctx, both.Root, "lasting", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Expire(ctx, now); err != nil || n != 1 {
		t.Fatalf("expire: %d files, %v", n, err)
	}
	if err := s.Open(ctx, old, io.Discard, nil); !errors.Is(err, ErrMissing) {
		t.Fatalf("expired file: %v", err)
	}
	for _, m := range []Manifest{keep, both} {
		if err := s.Open(ctx, m, io.Discard, nil); err != nil {
			t.Fatalf("kept file: %v", err)
		}
	}
	// A crash mid-import leaves chunks no file uses: Sweep removes them,
	// and a reopened store counts what is left.
	orphan := []byte("sealed bytes of an import that never finished")
	if err := s.chunks.put(ctx, RefOf(orphan), orphan, false); err != nil {
		t.Fatal(err)
	}
	used := s.Used()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openPebble(t, dir)
	defer d.Close()
	if s, err = OpenStore(ctx, d, StoreOptions{Dir: chunkDir}); err != nil {
		t.Fatal(err)
	}
	if s.Used() != used+uint64(len(orphan)) {
		t.Fatalf("reopened store counts %d bytes, want %d", s.Used(), used+uint64(len(orphan)))
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if s.Used() != used {
		t.Fatalf("after the sweep %d bytes, want %d", s.Used(), used)
	}
	for _, m := range []Manifest{keep, both} {
		if err := s.Open(ctx, m, io.Discard, nil); err != nil {
			t.Fatalf("file after the sweep: %v", err)
		}
	}
}
