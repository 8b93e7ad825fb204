package attachments

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/glitr-chat/glitr/protocol"
)

// ErrSizeMismatch: the reader gave more or fewer bytes than Meta.Size
// said.
var ErrSizeMismatch = errors.New("attachments: file size differs from the declared size")

// Meta describes a file to import: what goes into its manifest besides
// what the import computes, and who holds it.
type Meta struct {
	// Size is the exact size when known (a regular file), or -1. A known
	// size over protocol.MaxFileSize is refused before anything is read;
	// an unknown one is refused as soon as the reader passes the limit,
	// and what was stored is removed.
	Size int64
	// Name, Type, Width, Height, DurationMS, Waveform and Thumb go into
	// the manifest as they are (see Manifest).
	Name, Type                string
	Width, Height, DurationMS uint32
	Waveform                  []byte
	Thumb                     *Thumb
	// ChunkSize is the chunk size (0: protocol.DefaultChunkSize).
	ChunkSize uint32
	// Owner names what holds the file in the store (a message id, a
	// draft); Expires, if set, releases it then (Store.Expire).
	Owner   string
	Expires time.Time
	// Progress, if set, is called after each chunk with the plaintext
	// bytes read so far and Size (-1 when unknown).
	Progress func(done, total int64)
}

// Import reads a file, pads, splits and seals it chunk by chunk under a
// fresh key, stores the chunks and the sealed index, and returns the
// manifest to send. It holds one chunk of plaintext and one sealed chunk
// at a time, however large the file. On any failure (the reader, ctx, the
// quota, the size limit) the chunks it stored are removed.
func (s *Store) Import(ctx context.Context, r io.Reader, meta Meta) (Manifest, error) {
	cs := meta.ChunkSize
	if cs == 0 {
		cs = protocol.DefaultChunkSize
	}
	// Check everything the caller chose before reading a byte.
	m := Manifest{
		ChunkSize: cs, Name: meta.Name, Type: meta.Type, Width: meta.Width, Height: meta.Height,
		DurationMS: meta.DurationMS, Waveform: meta.Waveform, Thumb: meta.Thumb,
	}
	if meta.Size > protocol.MaxFileSize {
		return Manifest{}, fmt.Errorf("%w: %d bytes, the limit is %d (256 MiB)", ErrTooLarge, meta.Size, protocol.MaxFileSize)
	}
	if meta.Size >= 0 {
		m.Size = uint64(meta.Size)
	}
	m.Padded = PaddedSize(m.Size)
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	if err := checkOwner(meta.Owner); err != nil {
		return Manifest{}, err
	}
	if meta.Size >= 0 {
		if need, used := m.SealedSize(), s.Used(); used+need > s.quota {
			return Manifest{}, fmt.Errorf("%w: the file needs %d bytes, %d of %d are used", ErrQuota, need, used, s.quota)
		}
	}
	key, err := NewKey()
	if err != nil {
		return Manifest{}, err
	}
	m.Key = key
	sl := newSealer(key)

	var written []Ref
	ok := false
	defer func() {
		if !ok {
			// Nothing of a failed import lasts; the error that made it
			// fail is the one reported.
			_ = s.dropPending(context.WithoutCancel(ctx), written, true)
		}
	}()
	plain := make([]byte, cs)
	seal := func(p []byte, i int) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("attachments: import: %w", err)
		}
		// A fresh buffer each time: a datastore may keep the slice it
		// is given (the in-memory one does).
		sealed := sl.sealChunk(make([]byte, 0, len(p)+protocol.ChunkOverhead), p, i)
		ref := RefOf(sealed)
		if err := s.putChunk(ctx, Ref{}, ref, sealed, true); err != nil {
			return fmt.Errorf("attachments: import chunk %d: %w", i, err)
		}
		written = append(written, ref)
		return nil
	}

	lr := io.LimitReader(r, int64(s.maxFile)+1)
	var n uint64
	i, k := 0, 0
	for {
		k, err = io.ReadFull(lr, plain)
		n += uint64(k)
		if n > s.maxFile {
			return Manifest{}, fmt.Errorf("%w: more than %d bytes (%d MiB)", ErrTooLarge, s.maxFile, s.maxFile>>20)
		}
		if meta.Size >= 0 && n > uint64(meta.Size) {
			return Manifest{}, fmt.Errorf("%w: more than %d bytes", ErrSizeMismatch, meta.Size)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return Manifest{}, fmt.Errorf("attachments: import: read: %w", err)
		}
		if err := seal(plain, i); err != nil {
			return Manifest{}, err
		}
		i++
		if meta.Progress != nil {
			meta.Progress(int64(n), meta.Size)
		}
	}
	if meta.Size >= 0 && n != uint64(meta.Size) {
		return Manifest{}, fmt.Errorf("%w: %d bytes, declared %d", ErrSizeMismatch, n, meta.Size)
	}
	m.Size, m.Padded = n, PaddedSize(n)
	// The tail: the last bytes read, then zeros to the padded size.
	for count := m.Chunks(); i < count; i++ {
		l := chunkLen(m.Padded, cs, i)
		clear(plain[k:l])
		if err := seal(plain[:l], i); err != nil {
			return Manifest{}, err
		}
		k = 0
	}
	if meta.Progress != nil {
		meta.Progress(int64(n), meta.Size)
	}
	index := sl.sealIndex(written, cs, m.Padded)
	m.Root = RefOf(index)
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	if err := s.addFile(ctx, m.Root, written, meta.Owner, meta.Expires); err != nil {
		return Manifest{}, err
	}
	if err := s.putChunk(ctx, m.Root, m.Root, index, false); err != nil {
		_ = s.Delete(context.WithoutCancel(ctx), m.Root)
		return Manifest{}, err
	}
	if err := s.sync(ctx); err != nil {
		_ = s.Delete(context.WithoutCancel(ctx), m.Root)
		return Manifest{}, err
	}
	ok = true
	if err := s.dropPending(ctx, written, false); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// openIndex reads and opens a file's stored index.
func (s *Store) openIndex(ctx context.Context, m Manifest, sl *sealer) ([]Ref, error) {
	sealed, err := s.Chunk(ctx, m.Root)
	if err != nil {
		return nil, fmt.Errorf("attachments: index of %s: %w", m.Root, err)
	}
	if RefOf(sealed) != m.Root {
		_ = s.dropChunk(ctx, m.Root)
		return nil, fmt.Errorf("%w: the stored index of %s does not match its CID", ErrCorrupt, m.Root)
	}
	return sl.openIndex(sealed, m.ChunkSize, m.Padded)
}

// Open checks, decrypts and writes the file of m to w, chunk by chunk (one
// chunk in memory at a time), and calls progress, if set, with the bytes
// written so far and m.Size. A missing chunk ends it with ErrMissing (fetch
// the file first); a chunk that fails authentication with ErrCorrupt, after
// deleting it so that a fetch brings it again. Either way w may have
// received a prefix of the file.
func (s *Store) Open(ctx context.Context, m Manifest, w io.Writer, progress func(done, total int64)) error {
	if err := m.Validate(); err != nil {
		return err
	}
	sl := newSealer(m.Key)
	refs, err := s.openIndex(ctx, m, sl)
	if err != nil {
		return err
	}
	plain := make([]byte, 0, m.ChunkSize)
	left := m.Size
	for i, r := range refs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("attachments: open %s: %w", m.Root, err)
		}
		sealed, err := s.Chunk(ctx, r)
		if err != nil {
			return fmt.Errorf("attachments: open %s: chunk %d: %w", m.Root, i, err)
		}
		if len(sealed) != sealedLen(m.Padded, m.ChunkSize, i) {
			_ = s.dropChunk(ctx, r)
			return fmt.Errorf("%w: chunk %d of %s has %d bytes", ErrCorrupt, i, m.Root, len(sealed))
		}
		plain, err = sl.openChunk(plain[:0], sealed, i)
		if err != nil {
			_ = s.dropChunk(ctx, r)
			return fmt.Errorf("attachments: open %s: %w", m.Root, err)
		}
		data := plain[:min(uint64(len(plain)), left)]
		for _, b := range plain[len(data):] {
			if b != 0 {
				return fmt.Errorf("%w: chunk %d of %s: padding is not zero", ErrCorrupt, i, m.Root)
			}
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				return fmt.Errorf("attachments: open %s: write: %w", m.Root, err)
			}
		}
		left -= uint64(len(data))
		if progress != nil {
			progress(int64(m.Size-left), int64(m.Size))
		}
	}
	return nil
}

// Progress is how much of a file the store holds.
type Progress struct {
	// Chunks and ChunksHeld count data chunks; Bytes and BytesHeld are
	// sealed bytes, index included.
	Chunks, ChunksHeld int
	Bytes, BytesHeld   uint64
}

// Complete reports whether every chunk is held.
func (p Progress) Complete() bool { return p.Chunks > 0 && p.ChunksHeld == p.Chunks }

// Status says how much of the file of m the store holds (for a progress
// bar, or to decide whether a fetch is needed).
func (s *Store) Status(ctx context.Context, m Manifest) (Progress, error) {
	p := Progress{Chunks: m.Chunks(), Bytes: m.SealedSize()}
	refs, err := s.FileChunks(ctx, m.Root)
	if errors.Is(err, ErrNotHeld) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if len(refs) != p.Chunks {
		return p, fmt.Errorf("%w: the store lists %d chunks for %s, the manifest %d", ErrBadIndex, len(refs), m.Root, p.Chunks)
	}
	if ok, err := s.HasChunk(ctx, m.Root); err != nil {
		return p, err
	} else if ok {
		p.BytesHeld += uint64(indexSealedLen(m.Padded, m.ChunkSize))
	}
	for i, r := range refs {
		ok, err := s.HasChunk(ctx, r)
		if err != nil {
			return p, err
		}
		if ok {
			p.ChunksHeld++
			p.BytesHeld += uint64(sealedLen(m.Padded, m.ChunkSize, i))
		}
	}
	return p, nil
}
