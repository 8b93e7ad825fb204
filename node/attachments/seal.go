package attachments

// The pure part of the format: chunk references, padding buckets, sealing
// and opening chunks and the chunk index (docs/attachments.md §2). No I/O.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"

	"github.com/ipfs/go-cid"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/glitr-chat/glitr/protocol"
)

// KeySize is the size of a file key.
const KeySize = chacha20poly1305.KeySize

// MinPadded is the smallest padded size: every file of up to 4 KiB looks
// the same from outside.
const MinPadded = 4 << 10

// Domain-separation labels, bound into every chunk's and index's
// associated data.
var (
	chunkLabel = []byte(protocol.Label("attachment-chunk"))
	indexLabel = []byte(protocol.Label("attachment-index"))
)

// Errors of the format.
var (
	// ErrTooLarge: a file over protocol.MaxFileSize.
	ErrTooLarge = errors.New("attachments: file too large")
	// ErrBadManifest: a manifest that fails its checks.
	ErrBadManifest = errors.New("attachments: bad manifest")
	// ErrBadIndex: a chunk index that does not match its manifest.
	ErrBadIndex = errors.New("attachments: bad chunk index")
	// ErrCorrupt: a chunk (or the index) that fails authentication under
	// the file key, or padding that is not zero. Its CID matched, so it
	// is what the file's author sealed: no peer can supply a better one.
	ErrCorrupt = errors.New("attachments: chunk fails authentication")
)

// Ref names a sealed chunk (or a file, by its index chunk): the sha2-256
// digest of the sealed bytes. On the wire and in manifests it is a CIDv1
// with the raw codec, which any peer checks without the file key.
type Ref [32]byte

// RefOf returns the Ref of sealed bytes.
func RefOf(sealed []byte) Ref { return sha256.Sum256(sealed) }

// ParseRef reads a chunk CID (protocol.ValidChunkCID).
func ParseRef(b []byte) (Ref, error) {
	if !protocol.ValidChunkCID(b) {
		return Ref{}, fmt.Errorf("attachments: not a chunk CID (%d bytes)", len(b))
	}
	return Ref(b[4:]), nil
}

// Bytes returns the CID bytes.
func (r Ref) Bytes() []byte { return protocol.ChunkCID(r) }

// CID returns r as a go-cid CID.
func (r Ref) CID() cid.Cid {
	c, err := cid.Cast(r.Bytes())
	if err != nil {
		panic(err) // the prefix is constant and valid
	}
	return c
}

// String is the CID's usual text form (base32).
func (r Ref) String() string { return r.CID().String() }

func (r Ref) hex() string { return hex.EncodeToString(r[:]) }

// PaddedSize is the size a file of n bytes is padded to: 4 KiB for up to
// 4 KiB, then Padmé (Nikitin et al., PETS 2019), which rounds n up so that
// it keeps only its top ⌊log₂ e⌋+1 bits (e = ⌊log₂ n⌋): at most 12 %
// overhead, O(log log n) bits of the length visible. The buckets near
// 256 MiB are 4 MiB apart, near 5 MB 128 KiB, near 1 MiB 32 KiB; from
// 4 KiB to 256 MiB there are about 450 of them.
func PaddedSize(n uint64) uint64 {
	if n <= MinPadded {
		return MinPadded
	}
	e := bits.Len64(n) - 1
	s := bits.Len64(uint64(e))
	mask := uint64(1)<<(e-s) - 1
	return (n + mask) &^ mask
}

// chunkCount is the number of data chunks of a padded size.
func chunkCount(padded uint64, chunkSize uint32) int {
	return int((padded + uint64(chunkSize) - 1) / uint64(chunkSize))
}

// chunkLen is the plaintext length of data chunk i.
func chunkLen(padded uint64, chunkSize uint32, i int) int {
	off := uint64(i) * uint64(chunkSize)
	return int(min(uint64(chunkSize), padded-off))
}

// validChunkSize: a power of two within the protocol's bounds.
func validChunkSize(cs uint32) bool {
	return cs >= protocol.MinChunkSize && cs <= protocol.MaxChunkSize && cs&(cs-1) == 0
}

// NewKey returns a fresh random file key.
func NewKey() ([KeySize]byte, error) {
	var k [KeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("attachments: file key: %w", err)
	}
	return k, nil
}

// sealer seals and opens the chunks of one file. The key is random per
// file and used for nothing else, so nonces need only be unique within
// the file: the first byte says data chunk (0) or index (1), the last
// eight hold the chunk number. The associated data repeats the number
// under a label, so a chunk moved to another place, or sealed for another
// purpose, fails to open; a chunk of another file fails under the key.
type sealer struct {
	aead interface {
		Seal(dst, nonce, plaintext, ad []byte) []byte
		Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
	}
	nonce [chacha20poly1305.NonceSizeX]byte
	ad    []byte
}

func newSealer(key [KeySize]byte) *sealer {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err) // the key has the right size
	}
	return &sealer{aead: a, ad: make([]byte, 0, 64)}
}

func (s *sealer) chunkParams(i int) ([]byte, []byte) {
	s.nonce = [chacha20poly1305.NonceSizeX]byte{}
	binary.BigEndian.PutUint64(s.nonce[16:], uint64(i))
	s.ad = append(append(s.ad[:0], chunkLabel...), 0)
	s.ad = binary.BigEndian.AppendUint64(s.ad, uint64(i))
	return s.nonce[:], s.ad
}

// The index's associated data binds the file's shape, so an index cannot
// be replayed under a manifest that claims another chunk size or padding.
func (s *sealer) indexParams(chunkSize uint32, padded uint64) ([]byte, []byte) {
	s.nonce = [chacha20poly1305.NonceSizeX]byte{1}
	s.ad = append(append(s.ad[:0], indexLabel...), 0)
	s.ad = binary.BigEndian.AppendUint32(s.ad, chunkSize)
	s.ad = binary.BigEndian.AppendUint64(s.ad, padded)
	return s.nonce[:], s.ad
}

// sealChunk appends the sealed data chunk i of plain to dst.
func (s *sealer) sealChunk(dst, plain []byte, i int) []byte {
	n, ad := s.chunkParams(i)
	return s.aead.Seal(dst, n, plain, ad)
}

// openChunk appends the plaintext of sealed data chunk i to dst.
func (s *sealer) openChunk(dst, sealed []byte, i int) ([]byte, error) {
	n, ad := s.chunkParams(i)
	out, err := s.aead.Open(dst, n, sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %d", ErrCorrupt, i)
	}
	return out, nil
}

// sealIndex seals the chunk index: the digests of the sealed data chunks,
// in order, 32 bytes each.
func (s *sealer) sealIndex(refs []Ref, chunkSize uint32, padded uint64) []byte {
	plain := make([]byte, 0, len(refs)*32)
	for _, r := range refs {
		plain = append(plain, r[:]...)
	}
	n, ad := s.indexParams(chunkSize, padded)
	return s.aead.Seal(plain[:0:0], n, plain, ad)
}

// openIndex opens and checks a sealed index for a file of this shape.
func (s *sealer) openIndex(sealed []byte, chunkSize uint32, padded uint64) ([]Ref, error) {
	n, ad := s.indexParams(chunkSize, padded)
	plain, err := s.aead.Open(nil, n, sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: the chunk index", ErrCorrupt)
	}
	return DecodeIndex(plain, chunkCount(padded, chunkSize))
}

// DecodeIndex parses an opened chunk index that must list want chunks.
func DecodeIndex(plain []byte, want int) ([]Ref, error) {
	if len(plain)%32 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a list of digests", ErrBadIndex, len(plain))
	}
	if len(plain)/32 != want {
		return nil, fmt.Errorf("%w: %d chunks, the manifest implies %d", ErrBadIndex, len(plain)/32, want)
	}
	refs := make([]Ref, want)
	for i := range refs {
		refs[i] = Ref(plain[i*32:])
	}
	return refs, nil
}

// sealedLen is the sealed length of data chunk i.
func sealedLen(padded uint64, chunkSize uint32, i int) int {
	return chunkLen(padded, chunkSize, i) + protocol.ChunkOverhead
}

// indexSealedLen is the sealed length of the index of a file.
func indexSealedLen(padded uint64, chunkSize uint32) int {
	return chunkCount(padded, chunkSize)*32 + protocol.ChunkOverhead
}
