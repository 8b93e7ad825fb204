package history

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

const (
	maxFrame  = 4 << 20 // bytes of one frame
	batch     = 512     // blocks per frame
	maxBlocks = 1 << 22 // blocks of one transfer
)

// frame is one frame of a history stream: the conversation id (first frame
// only) and pairs of envelope and inner block bytes, oldest first. A frame
// without blocks ends the transfer.
type frame struct {
	Conversation []byte      `cbor:"1,keyasint,omitempty"`
	Blocks       [][2][]byte `cbor:"2,keyasint,omitempty"`
}

var enc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

var dec = protocol.MustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	IndefLength:       cbor.IndefLengthForbidden,
	MaxNestedLevels:   4,
	MaxArrayElements:  batch,
	MaxMapPairs:       16,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})

func writeFrame(w io.Writer, f frame) error {
	b, err := enc.Marshal(f)
	if err != nil {
		return err
	}
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readFrame(r *bufio.Reader) (frame, error) {
	var f frame
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return f, err
	}
	if n > maxFrame {
		return f, fmt.Errorf("%w: history frame of %d bytes", protocol.ErrBadPeer, n)
	}
	// Read what arrives rather than allocate what the peer declared: a
	// three-byte prefix must not cost 4 MiB.
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return f, err
	}
	if uint64(len(b)) != n {
		return f, io.ErrUnexpectedEOF
	}
	if err := dec.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: history frame: %w", protocol.ErrBadPeer, err)
	}
	return f, nil
}

func readFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

// Send streams conv's stored blocks to p and waits for its
// acknowledgement.
func (s *Service) Send(ctx context.Context, conv []byte, p peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := s.host.NewStream(network.WithAllowLimitedConn(ctx, "glitr-history"), p, Protocol)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := s.stream(ctx, st, conv); err != nil {
		st.Reset()
		return err
	}
	if err := st.CloseWrite(); err != nil {
		return err
	}
	ack := make([]byte, 1)
	_ = st.SetReadDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.ReadFull(st, ack); err != nil || ack[0] != 1 {
		return fmt.Errorf("history not acknowledged: %w", err)
	}
	return nil
}

// stream writes conv's frames, the empty last one included.
func (s *Service) stream(ctx context.Context, st network.Stream, conv []byte) error {
	w := bufio.NewWriterSize(st, 256<<10)
	f := frame{Conversation: conv}
	size := 0
	flush := func() error {
		_ = st.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := writeFrame(w, f); err != nil {
			return err
		}
		f, size = frame{}, 0
		return nil
	}
	for b, err := range s.store.Blocks(ctx, conv) {
		if err != nil {
			return err
		}
		env, err := b.EnvelopeBytes()
		if err != nil {
			return err
		}
		inner, err := b.InnerBytes()
		if err != nil {
			return err
		}
		if size+len(env)+len(inner) > maxFrame-4096 || len(f.Blocks) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
		f.Blocks = append(f.Blocks, [2][]byte{env, inner})
		size += len(env) + len(inner) + 16
	}
	if len(f.Blocks) > 0 || f.Conversation != nil {
		if err := flush(); err != nil {
			return err
		}
	}
	if err := flush(); err != nil { // the empty frame: done
		return err
	}
	return w.Flush()
}

// handleHistory receives a history stream from a peer this device takes
// one from (accepts); from anyone else it is refused.
func (s *Service) handleHistory(st network.Stream) {
	from := st.Conn().RemotePeer()
	r := bufio.NewReaderSize(st, 256<<10)
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, err := readFrame(r)
	if err != nil {
		st.Reset()
		return
	}
	conv := first.Conversation
	if !s.store.Holds(conv) || !s.accepts(conv, from) {
		s.log.Info("history refused", "peer", from.String(), "err", ErrRefused)
		st.Reset()
		return
	}
	defer s.answered(conv, from)
	total := 0
	f := first
	for len(f.Blocks) > 0 {
		total += len(f.Blocks)
		if total > maxBlocks {
			s.penalize(from, 20, "endless history")
			st.Reset()
			return
		}
		err := s.ingest(conv, from, f.Blocks)
		if err != nil {
			s.log.Warn("history", "peer", from.String(), "err", err)
			if errors.Is(err, protocol.ErrBadPeer) {
				s.penalize(from, 20, err.Error())
			}
			st.Reset()
			return
		}
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		if f, err = readFrame(r); err != nil {
			st.Reset()
			return
		}
	}
	s.received(conv)
	_, _ = st.Write([]byte{1})
	_ = st.Close()
	s.log.Debug("history received", "blocks", total)
}

// ingest checks each block of a frame against its author's signature (and
// a device's first block against its certificate) instead of decrypting
// it, and hands the frame to the store.
func (s *Service) ingest(conv []byte, from peer.ID, pairs [][2][]byte) error {
	blocks, err := Verify(pairs)
	if err != nil {
		return err
	}
	return s.store.Ingest(s.ctx, conv, from, blocks)
}

type innerOpener []byte

func (in innerOpener) Open(dag.Sealed) ([]byte, error) { return in, nil }

// Verify opens history pairs (envelope, inner block) without keys: the
// inner block must be the envelope's and signed by its author, and a
// device's first block must carry a valid certificate for it. Any failure
// is protocol.ErrBadPeer.
func Verify(pairs [][2][]byte) ([]dag.Block, error) {
	blocks := make([]dag.Block, 0, len(pairs))
	for _, p := range pairs {
		blk, err := dag.OpenBlock(p[0], innerOpener(p[1]))
		if err != nil {
			return nil, fmt.Errorf("%w: history block: %w", protocol.ErrBadPeer, err)
		}
		if err := dag.VerifySignature(blk.Inner); err != nil {
			return nil, fmt.Errorf("%w: history block %s: %w", protocol.ErrBadPeer, blk.CID, err)
		}
		if blk.Inner.Seq == 1 {
			cert, err := keyring.VerifyCertificate(blk.Inner.Cert)
			if err != nil || cert.Device != keyring.DeviceID(blk.Inner.Author) {
				return nil, fmt.Errorf("%w: history block %s: first block of a device without a valid certificate", protocol.ErrBadPeer, blk.CID)
			}
		}
		blocks = append(blocks, blk)
	}
	return blocks, nil
}
