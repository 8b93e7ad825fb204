package keyring

// One file, over 800 lines, for one reason: Cipher is the key state of a
// conversation (epochs, per-sender ratchets, skipped keys, adopting a
// scratch copy's state) and its invariants (a key is spent only for a
// block the caller accepts; the state never goes back) hold across all of
// its methods, which are easier to check together than spread out.

import (
	"bytes"
	"cmp"
	"crypto/cipher"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"math/bits"
	"slices"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Envelope and chain limits.
const (
	// EnvelopeVersion is the dag envelope version this cipher seals.
	EnvelopeVersion = 1
	// MaxInnerSize is the largest inner block SealBlock accepts (the dag's
	// 64 KiB block cap).
	MaxInnerSize = 64 << 10
	// MinPaddedSize is the padding floor: every inner block up to 255 bytes
	// gives the same ciphertext length.
	MinPaddedSize = 256
	// MaxSkippedKeys caps the message keys kept for messages that have not
	// arrived yet, over the whole cipher (libsignal MAX_MESSAGE_KEYS).
	MaxSkippedKeys = 2000
	// MaxForwardJump caps how far one message may advance a chain
	// (libsignal MAX_FORWARD_JUMPS).
	MaxForwardJump = 25000
	// MaxEpochs caps the epochs a cipher holds; the oldest installed is
	// dropped first (never the sending epoch).
	MaxEpochs = 32
	// MaxDroppedEpochs caps the record of dropped epochs (evicted or
	// deleted) that Install refuses to bring back.
	MaxDroppedEpochs = 64

	headerPlainSize = 32 + 4
	headerSealSize  = headerPlainSize + TagSize
)

// maxPaddedSize is the padded length of the largest inner block.
var maxPaddedSize = padLen(MaxInnerSize + 1)

// Errors of the conversation cipher.
var (
	// ErrUnknownEpoch reports an envelope under an epoch this cipher does
	// not hold (never received, or evicted).
	ErrUnknownEpoch = errors.New("keyring: unknown epoch")
	// ErrNoSendingEpoch reports SealBlock before SetSendingEpoch.
	ErrNoSendingEpoch = errors.New("keyring: no sending epoch")
	// ErrNotMember reports a device that is not a member of the epoch.
	ErrNotMember = errors.New("keyring: device is not a member of the epoch")
	// ErrDecrypt reports an envelope whose header or body fails
	// authentication: tampered, or sealed under another key.
	ErrDecrypt = errors.New("keyring: decryption failed")
	// ErrBadPadding reports an authenticated plaintext whose padding is not
	// the canonical one (only a member can produce it).
	ErrBadPadding = errors.New("keyring: bad padding")
	// ErrReplay reports a message whose key was already used and deleted.
	// The node deduplicates by CID first; this is defence in depth.
	ErrReplay = errors.New("keyring: message key already used (replay)")
	// ErrKeyEvicted reports a skipped message key dropped by the
	// MaxSkippedKeys cap.
	ErrKeyEvicted = errors.New("keyring: skipped message key evicted")
	// ErrTooManySkipped reports a chain index more than MaxForwardJump
	// ahead of the chain.
	ErrTooManySkipped = errors.New("keyring: too many skipped messages")
	// ErrChainExhausted reports a sending chain at its last index; rotate.
	ErrChainExhausted = errors.New("keyring: sending chain exhausted")
	// ErrEpochDropped reports an Install of an epoch this cipher dropped:
	// installing it again would re-derive its chains from their first key,
	// and with them the message keys it had used and deleted.
	ErrEpochDropped = errors.New("keyring: epoch was dropped and is not reinstalled")
	// ErrTooLarge reports an inner block above MaxInnerSize.
	ErrTooLarge = errors.New("keyring: inner block too large")
)

// chain is one sender's hash chain in one epoch: ck is the key for index
// next; skipped holds message keys below next that have not been used.
type chain struct {
	next    uint32
	ck      [KeySize]byte
	floor   uint32 // skipped keys below floor were evicted
	skipped map[uint32]skippedKey
}

type skippedKey struct {
	mk  [KeySize]byte
	seq uint64 // insertion order, for cipher-wide eviction
}

type epochState struct {
	id       EpochID
	hk       [KeySize]byte
	exporter [KeySize]byte
	members  []DeviceID // sorted
	chains   map[DeviceID]*chain
	header   cipher.AEAD
}

// Cipher is one device's key state for one conversation: the epochs it
// holds, every member's chain position and the skipped message keys. It
// seals and opens dag envelopes. Its methods are safe for concurrent use.
//
// The raw epoch secret is never kept: installing an epoch derives the
// header key, the exporter key and each member's first chain key, then
// wipes the secret, so a stolen state cannot re-derive used message keys.
type Cipher struct {
	mu      sync.Mutex
	conv    []byte
	self    DeviceID
	rand    io.Reader
	epochs  map[EpochID]*epochState
	order   []EpochID // install order, oldest first
	dropped []EpochID // the last MaxDroppedEpochs dropped, oldest first
	sending *EpochID
	skipSeq uint64
	nskip   int
	// scratch holds the associated data and the sealed header while mu is
	// held, so sealing and opening allocate nothing beyond their output.
	scratch [256]byte
	hdr     [headerPlainSize]byte
}

// NewCipher returns an empty cipher for conversation conv and device self.
// rand supplies envelope nonces (crypto/rand.Reader in production).
func NewCipher(conv []byte, self DeviceID, rand io.Reader) (*Cipher, error) {
	if len(conv) == 0 || len(conv) > MaxConversationIDLen {
		return nil, fmt.Errorf("cipher: %w: conversation id length %d", ErrMalformed, len(conv))
	}
	return &Cipher{conv: slices.Clone(conv), self: self, rand: rand, epochs: map[EpochID]*epochState{}}, nil
}

func chainStart(secret, conv []byte, d DeviceID) [KeySize]byte {
	return kdf(labelSenderChain, secret, conv, d[:])
}

// chainStep returns the message key of ck's index and advances ck in place:
// mk = HMAC-SHA256(ck, 0x01), ck' = HMAC-SHA256(ck, 0x02), as Signal's
// symmetric ratchet. It is the hot path of opening a block, so the two
// HMACs (RFC 2104, a 32-byte key zero-padded to the 64-byte block) share
// the compressions of the padded keys: the hash state after each padded
// key is saved and restored (encoding.BinaryAppender), 6 SHA-256
// compressions instead of 8, and nothing is allocated. TestChainStepIsHMAC
// and the golden sender-chain vectors pin it to crypto/hmac.
func chainStep(ck *[KeySize]byte) [KeySize]byte {
	const blockSize = 64
	var pad [blockSize]byte
	for i := range pad {
		pad[i] = 0x36
	}
	for i, k := range ck {
		pad[i] ^= k
	}
	var state [128]byte
	var inner1, inner2, mk [sha256.Size]byte
	d := sha256.New()
	d.Write(pad[:])
	saved := appendHashState(d, state[:0])
	d.Write([]byte{1})
	d.Sum(inner1[:0])
	restoreHashState(d, saved)
	d.Write([]byte{2})
	d.Sum(inner2[:0])

	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	d.Reset()
	d.Write(pad[:])
	saved = appendHashState(d, state[:0])
	d.Write(inner1[:])
	d.Sum(mk[:0])
	restoreHashState(d, saved)
	d.Write(inner2[:])
	d.Sum(ck[:0])
	wipe(pad[:])
	wipe(state[:])
	wipe(inner1[:])
	wipe(inner2[:])
	return mk
}

// appendHashState and restoreHashState save and restore a SHA-256 state;
// crypto/sha256 implements both interfaces, so neither can fail.
func appendHashState(d hash.Hash, dst []byte) []byte {
	b, err := d.(encoding.BinaryAppender).AppendBinary(dst)
	if err != nil {
		panic(err)
	}
	return b
}

func restoreHashState(d hash.Hash, state []byte) {
	if err := d.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		panic(err)
	}
}

func newEpochState(id EpochID, hk, exporter [KeySize]byte, members []DeviceID) (*epochState, error) {
	hdr, err := chacha20poly1305.NewX(hk[:])
	if err != nil {
		return nil, fmt.Errorf("keyring: header aead: %w", err)
	}
	return &epochState{id: id, hk: hk, exporter: exporter, members: members, chains: make(map[DeviceID]*chain, len(members)), header: hdr}, nil
}

// Install adds an opened epoch and wipes its secret. Installing an epoch
// twice is a no-op. When the cipher holds MaxEpochs, the oldest installed
// epoch other than the sending one is dropped. An epoch among the last
// MaxDroppedEpochs dropped is refused with ErrEpochDropped: its chains
// would restart at their first key, so message keys already used and
// deleted (forward secrecy) would be derivable again.
func (c *Cipher) Install(e *Epoch) error {
	if !bytes.Equal(e.Conversation, c.conv) {
		return fmt.Errorf("install epoch %s: %w: other conversation", e.ID, ErrMalformed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.epochs[e.ID]; ok {
		wipe(e.secret[:])
		return nil
	}
	if slices.Contains(c.dropped, e.ID) {
		wipe(e.secret[:])
		return fmt.Errorf("install epoch %s: %w", e.ID, ErrEpochDropped)
	}
	hk := kdf(labelHeaderKey, e.secret[:], c.conv)
	exp := kdf(labelExporter, e.secret[:], c.conv)
	st, err := newEpochState(e.ID, hk, exp, slices.Clone(e.Members))
	if err != nil {
		return err
	}
	for _, m := range e.Members {
		st.chains[m] = &chain{ck: chainStart(e.secret[:], c.conv, m)}
	}
	wipe(e.secret[:])
	c.epochs[e.ID] = st
	c.order = append(c.order, e.ID)
	for len(c.order) > MaxEpochs {
		victim := 0
		if c.sending != nil && c.order[0] == *c.sending {
			victim = 1
		}
		c.dropEpochLocked(c.order[victim])
	}
	return nil
}

func (c *Cipher) dropEpochLocked(id EpochID) {
	st := c.epochs[id]
	for _, ch := range st.chains {
		c.nskip -= len(ch.skipped)
	}
	delete(c.epochs, id)
	c.order = slices.DeleteFunc(c.order, func(x EpochID) bool { return x == id })
	c.dropped = append(c.dropped, id)
	if n := len(c.dropped) - MaxDroppedEpochs; n > 0 {
		c.dropped = slices.Delete(c.dropped, 0, n)
	}
}

// Adopt replaces c's key state with from's (a copy made with
// MarshalBinary/UnmarshalCipher and advanced since, for example by opening
// a batch of blocks), keeping c itself, so holders of c see the new state.
// from must be for the same conversation and device and not be used
// afterwards.
func (c *Cipher) Adopt(from *Cipher) error {
	if c == from {
		return nil
	}
	from.mu.Lock()
	defer from.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !bytes.Equal(c.conv, from.conv) || c.self != from.self {
		return fmt.Errorf("adopt key state: %w: another conversation or device", ErrMalformed)
	}
	c.epochs, c.order, c.dropped, c.sending, c.skipSeq, c.nskip = from.epochs, from.order, from.dropped, from.sending, from.skipSeq, from.nskip
	from.epochs, from.order, from.dropped, from.sending = nil, nil, nil, nil
	return nil
}

// DropEpoch deletes an epoch's keys (for example once every block under it
// is stored in plaintext and the policy says history need not reopen).
func (c *Cipher) DropEpoch(id EpochID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.epochs[id]; ok {
		c.dropEpochLocked(id)
		if c.sending != nil && *c.sending == id {
			c.sending = nil
		}
	}
}

// WasDropped reports whether epoch id is among the last MaxDroppedEpochs
// the cipher dropped, which Install refuses.
func (c *Cipher) WasDropped(id EpochID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.dropped, id)
}

// HasEpoch reports whether the cipher holds epoch id.
func (c *Cipher) HasEpoch(id EpochID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.epochs[id]
	return ok
}

// Sent reports the sending epoch and how many blocks this device has
// sealed under it (its chain index there); ok is false without a sending
// epoch. The node replaces an epoch that has carried many blocks.
func (c *Cipher) Sent() (id EpochID, n uint32, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sending == nil {
		return EpochID{}, 0, false
	}
	st := c.epochs[*c.sending]
	if st == nil || st.chains[c.self] == nil {
		return EpochID{}, 0, false
	}
	return *c.sending, st.chains[c.self].next, true
}

// SetSendingEpoch selects the epoch SealBlock uses (the node picks it with
// SelectSendingEpoch). This device must be a member of it.
func (c *Cipher) SetSendingEpoch(id EpochID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.epochs[id]
	if !ok {
		return fmt.Errorf("set sending epoch %s: %w", id, ErrUnknownEpoch)
	}
	if _, ok := st.chains[c.self]; !ok {
		return fmt.Errorf("set sending epoch %s: %w", id, ErrNotMember)
	}
	c.sending = &id
	return nil
}

// Export derives n bytes (≤ 255·32) for label from an epoch's exporter key,
// for secrets the node derives per epoch (gossip topic names, rendezvous
// keys). The exporter cannot derive message keys.
func (c *Cipher) Export(id EpochID, label string, n int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.epochs[id]
	if !ok {
		return nil, fmt.Errorf("export %s: %w", id, ErrUnknownEpoch)
	}
	info := string(appendLenPrefixed(append([]byte(labelExport), 0), []byte(label)))
	return hkdfSHA256(st.exporter[:], nil, info, n)
}

// envelopeAD is the associated data of both AEADs:
// "glitr/v1/envelope" 0x00 ‖ version ‖ epoch ‖ nonce ‖ len ‖ conversation id.
func (c *Cipher) envelopeAD(dst []byte, epoch, nonce []byte) []byte {
	dst = append(dst, labelEnvelopeAD...)
	dst = append(dst, 0, EnvelopeVersion)
	dst = append(dst, epoch...)
	dst = append(dst, nonce...)
	return appendLenPrefixed(dst, c.conv)
}

// padLen is the padded size for n plaintext bytes (content plus the 0x80
// marker): Padmé (Nikitin et al., PURBs, PETS 2019) above a 256-byte floor.
// Padmé leaks O(log log n) bits of the length with at most 12 % overhead;
// the floor makes every short chat message the same size.
func padLen(n int) int {
	if n <= MinPaddedSize {
		return MinPaddedSize
	}
	e := bits.Len(uint(n)) - 1
	s := bits.Len(uint(e))
	mask := (1 << (e - s)) - 1
	return (n + mask) &^ mask
}

func unpad(p []byte) ([]byte, error) {
	i := bytes.LastIndexByte(p, 0x80)
	if i < 0 {
		return nil, ErrBadPadding
	}
	for _, b := range p[i+1:] {
		if b != 0 {
			return nil, ErrBadPadding
		}
	}
	if padLen(i+1) != len(p) {
		return nil, ErrBadPadding
	}
	return p[:i], nil
}

// SealBlock encrypts an inner block under the sending epoch and returns the
// dag envelope fields. The ciphertext is the sealed header (sender device
// and chain index under the epoch's header key) followed by the padded
// block under the next message key of this device's chain; both use the
// envelope nonce and authenticate the envelope fields and conversation id.
func (c *Cipher) SealBlock(inner []byte) (epoch, nonce, ciphertext []byte, err error) {
	return c.SealBlockTo(nil, inner)
}

// SealBlockTo is SealBlock writing the ciphertext into buf's storage when
// its capacity suffices (the returned ciphertext then aliases buf; nothing
// of buf's old contents survives), and into a new buffer otherwise. A
// caller that copies the ciphertext away (dag.Build does, into the envelope
// bytes) can reuse one buffer for every block.
func (c *Cipher) SealBlockTo(buf, inner []byte) (epoch, nonce, ciphertext []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sending == nil {
		return nil, nil, nil, ErrNoSendingEpoch
	}
	return c.sealAsLocked(*c.sending, c.self, inner, buf)
}

func (c *Cipher) sealAsLocked(id EpochID, sender DeviceID, inner, buf []byte) (epoch, nonce, ciphertext []byte, err error) {
	if len(inner) > MaxInnerSize {
		return nil, nil, nil, fmt.Errorf("seal: %w: %d bytes", ErrTooLarge, len(inner))
	}
	st := c.epochs[id]
	if st == nil {
		return nil, nil, nil, fmt.Errorf("seal: %w", ErrUnknownEpoch)
	}
	ch := st.chains[sender]
	if ch == nil {
		return nil, nil, nil, fmt.Errorf("seal: %w", ErrNotMember)
	}
	if ch.next == math.MaxUint32 {
		return nil, nil, nil, fmt.Errorf("seal: %w", ErrChainExhausted)
	}
	nonce, err = readRand(c.rand, NonceSize)
	if err != nil {
		return nil, nil, nil, err
	}
	index := ch.next
	mk := chainStep(&ch.ck)
	ch.next++
	defer wipe(mk[:])
	epoch = slices.Clone(id[:])
	ad := c.envelopeAD(c.scratch[:0], epoch, nonce)

	// One allocation: the sealed header, then the padded block sealed in
	// place (ISO/IEC 7816-4 padding: 0x80 then zeros, see padLen).
	hdr := c.hdr[:]
	copy(hdr, sender[:])
	binary.BigEndian.PutUint32(hdr[32:], index)
	plen := padLen(len(inner) + 1)
	size := headerSealSize + plen + TagSize
	var ct []byte
	if cap(buf) >= size {
		ct = buf[:size]
	} else {
		ct = make([]byte, size)
	}
	st.header.Seal(ct[:0], nonce, hdr, ad)
	padded := ct[headerSealSize : headerSealSize+plen]
	copy(padded, inner)
	padded[len(inner)] = 0x80
	clear(padded[len(inner)+1:])
	body, err := chacha20poly1305.NewX(mk[:])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("seal: %w", err)
	}
	// The body authenticates the sealed header too, so a header cannot be
	// moved onto another body.
	body.Seal(padded[:0], nonce, padded, append(ad, ct[:headerSealSize]...))
	return epoch, nonce, ct, nil
}

// PeekGap opens only the sealed header of an envelope and reports its
// sender and how many message keys of that sender's chain opening it would
// skip (0 for the next message in order, for a message whose skipped key is
// held, and for a replay). It changes no state. The node uses it to leave a
// block that is far ahead of the chain to catch-up, which delivers the
// blocks in order, instead of skipping (and soon evicting) the keys of the
// blocks in between.
func (c *Cipher) PeekGap(epoch, nonce, ciphertext []byte) (sender DeviceID, gap uint32, err error) {
	if len(epoch) != EpochIDSize || len(nonce) != NonceSize || len(ciphertext) < headerSealSize {
		return DeviceID{}, 0, fmt.Errorf("peek: %w: envelope field lengths", ErrMalformed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.epochs[EpochID(epoch)]
	if st == nil {
		return DeviceID{}, 0, fmt.Errorf("peek: epoch %x: %w", epoch, ErrUnknownEpoch)
	}
	ad := c.envelopeAD(c.scratch[:0], epoch, nonce)
	hdr, err := st.header.Open(c.hdr[:0], nonce, ciphertext[:headerSealSize], ad)
	if err != nil {
		return DeviceID{}, 0, fmt.Errorf("peek: header: %w", ErrDecrypt)
	}
	sender = DeviceID(hdr[:32])
	index := binary.BigEndian.Uint32(hdr[32:])
	ch := st.chains[sender]
	if ch == nil {
		return sender, 0, fmt.Errorf("peek: sender %s: %w", sender, ErrNotMember)
	}
	if index <= ch.next {
		return sender, 0, nil
	}
	return sender, index - ch.next, nil
}

// OpenBlock decrypts a dag envelope and returns the inner block and the
// sender device named in the sealed header. The message key is deleted as
// soon as the body authenticates. The caller must check that sender equals
// the inner block's author and verify the author's signature: any member
// can seal a header naming another member, so OpenBlock authenticates
// membership, never authorship. Prefer OpenBlockFunc, which deletes the key
// only after those checks pass, so a malicious member cannot burn another
// member's message keys with forged envelopes.
func (c *Cipher) OpenBlock(epoch, nonce, ciphertext []byte) (inner []byte, sender DeviceID, err error) {
	return c.OpenBlockFunc(epoch, nonce, ciphertext, nil)
}

// OpenBlockFunc is OpenBlock with an acceptance check: accept (if not nil)
// runs on the decrypted inner block and sender before the message key is
// deleted; if it returns an error, the key and chain stay as they were and
// the error is returned wrapped.
func (c *Cipher) OpenBlockFunc(epoch, nonce, ciphertext []byte, accept func(inner []byte, sender DeviceID) error) (inner []byte, sender DeviceID, err error) {
	if len(epoch) != EpochIDSize || len(nonce) != NonceSize {
		return nil, DeviceID{}, fmt.Errorf("open: %w: epoch or nonce length", ErrMalformed)
	}
	if len(ciphertext) < headerSealSize+MinPaddedSize+TagSize || len(ciphertext) > headerSealSize+maxPaddedSize+TagSize {
		return nil, DeviceID{}, fmt.Errorf("open: %w: ciphertext length %d", ErrMalformed, len(ciphertext))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.epochs[EpochID(epoch)]
	if st == nil {
		return nil, DeviceID{}, fmt.Errorf("open: epoch %x: %w", epoch, ErrUnknownEpoch)
	}
	ad := c.envelopeAD(c.scratch[:0], epoch, nonce)
	hdr, err := st.header.Open(c.hdr[:0], nonce, ciphertext[:headerSealSize], ad)
	if err != nil {
		return nil, DeviceID{}, fmt.Errorf("open: header: %w", ErrDecrypt)
	}
	sender = DeviceID(hdr[:32])
	index := binary.BigEndian.Uint32(hdr[32:])
	ch := st.chains[sender]
	if ch == nil {
		return nil, DeviceID{}, fmt.Errorf("open: sender %s: %w", sender, ErrNotMember)
	}

	// Find the message key without changing any state: a message that
	// fails to authenticate or is refused must leave the chain untouched.
	var mk [KeySize]byte
	var ahead []skippedKey // keys for next..index-1, newest MaxSkippedKeys only
	var newCK [KeySize]byte
	switch {
	case index < ch.next:
		sk, ok := ch.skipped[index]
		if !ok {
			if index < ch.floor {
				return nil, DeviceID{}, fmt.Errorf("open: sender %s index %d: %w", sender, index, ErrKeyEvicted)
			}
			return nil, DeviceID{}, fmt.Errorf("open: sender %s index %d: %w", sender, index, ErrReplay)
		}
		mk = sk.mk
	default:
		if index-ch.next > MaxForwardJump {
			return nil, DeviceID{}, fmt.Errorf("open: sender %s index %d, chain at %d: %w", sender, index, ch.next, ErrTooManySkipped)
		}
		newCK = ch.ck
		for i := ch.next; i < index; i++ {
			k := chainStep(&newCK)
			if index-i <= MaxSkippedKeys {
				ahead = append(ahead, skippedKey{mk: k})
			}
		}
		mk = chainStep(&newCK)
	}
	defer wipe(mk[:])

	body, err := chacha20poly1305.NewX(mk[:])
	if err != nil {
		return nil, DeviceID{}, fmt.Errorf("open: %w", err)
	}
	padded, err := body.Open(nil, nonce, ciphertext[headerSealSize:], append(ad, ciphertext[:headerSealSize]...))
	if err != nil {
		return nil, DeviceID{}, fmt.Errorf("open: body: %w", ErrDecrypt)
	}
	inner, err = unpad(padded)
	if err != nil {
		return nil, DeviceID{}, fmt.Errorf("open: %w", err)
	}
	if accept != nil {
		if err := accept(inner, sender); err != nil {
			return nil, DeviceID{}, fmt.Errorf("open: refused: %w", err)
		}
	}

	// Commit: delete the used key, advance the chain, keep skipped keys.
	if index < ch.next {
		delete(ch.skipped, index)
		c.nskip--
		return inner, sender, nil
	}
	first := index - uint32(len(ahead))
	if first > ch.next {
		ch.floor = max(ch.floor, first) // keys next..first-1 never stored
	}
	for i, k := range ahead {
		if ch.skipped == nil {
			ch.skipped = map[uint32]skippedKey{}
		}
		c.skipSeq++
		k.seq = c.skipSeq
		ch.skipped[first+uint32(i)] = k
		c.nskip++
	}
	ch.ck = newCK
	ch.next = index + 1
	c.evictLocked()
	return inner, sender, nil
}

// evictLocked drops the oldest skipped keys beyond MaxSkippedKeys. Within
// one chain keys are inserted in index order, so the evicted ones are that
// chain's lowest indices and floor records them.
func (c *Cipher) evictLocked() {
	for c.nskip > MaxSkippedKeys {
		var vch *chain
		var vidx uint32
		var vseq uint64 = math.MaxUint64
		for _, st := range c.epochs {
			for _, ch := range st.chains {
				for idx, k := range ch.skipped {
					if k.seq < vseq {
						vch, vidx, vseq = ch, idx, k.seq
					}
				}
			}
		}
		if vch == nil {
			return
		}
		delete(vch.skipped, vidx)
		vch.floor = max(vch.floor, vidx+1)
		c.nskip--
	}
}

// Key state serialization.

type skippedWire struct {
	_     struct{} `cbor:",toarray"`
	Index uint32
	Key   []byte
	Seq   uint64
}

type chainWire struct {
	_       struct{} `cbor:",toarray"`
	Device  []byte
	Next    uint32
	Key     []byte
	Floor   uint32
	Skipped []skippedWire
}

type epochWire struct {
	_         struct{} `cbor:",toarray"`
	ID        []byte
	HeaderKey []byte
	Exporter  []byte
	Chains    []chainWire // one per member, sorted by device
}

// cipherWire is the key state, version 2: version 1 lacked Dropped.
type cipherWire struct {
	_       struct{} `cbor:",toarray"`
	V       uint8
	Conv    []byte
	Self    []byte
	Sending []byte // empty or an epoch id
	SkipSeq uint64
	Epochs  []epochWire // install order
	Dropped [][]byte    // epoch ids, oldest first
}

// cipherWireV1 is the key state as version 1 wrote it; it reads as a state
// that has dropped nothing.
type cipherWireV1 struct {
	_       struct{} `cbor:",toarray"`
	V       uint8
	Conv    []byte
	Self    []byte
	Sending []byte
	SkipSeq uint64
	Epochs  []epochWire
}

const cipherStateVersion = 2

// maxCipherState bounds the serialized state: 32 epochs × 512 members ×
// ≈ 80 bytes, plus 2,000 skipped keys.
const maxCipherState = 4 << 20

// MarshalBinary serializes the key state for persistence. Used message
// keys and past chain keys are absent from it: deletion is real in what
// the node writes to disk.
func (c *Cipher) MarshalBinary() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Empty lists are written as empty arrays, never null: one encoding
	// per state (UnmarshalCipher refuses null).
	w := cipherWire{V: cipherStateVersion, Conv: c.conv, Self: c.self[:], SkipSeq: c.skipSeq, Sending: []byte{}, Epochs: []epochWire{}, Dropped: [][]byte{}}
	for _, id := range c.dropped {
		w.Dropped = append(w.Dropped, slices.Clone(id[:]))
	}
	if c.sending != nil {
		w.Sending = c.sending[:]
	}
	for _, id := range c.order {
		st := c.epochs[id]
		ew := epochWire{ID: slices.Clone(id[:]), HeaderKey: st.hk[:], Exporter: st.exporter[:]}
		for _, m := range st.members {
			ch := st.chains[m]
			cw := chainWire{Device: slices.Clone(m[:]), Next: ch.next, Key: slices.Clone(ch.ck[:]), Floor: ch.floor, Skipped: []skippedWire{}}
			for idx, k := range ch.skipped {
				cw.Skipped = append(cw.Skipped, skippedWire{Index: idx, Key: slices.Clone(k.mk[:]), Seq: k.seq})
			}
			slices.SortFunc(cw.Skipped, func(a, b skippedWire) int { return cmp.Compare(a.Index, b.Index) })
			ew.Chains = append(ew.Chains, cw)
		}
		w.Epochs = append(w.Epochs, ew)
	}
	return marshal(w)
}

// UnmarshalCipher strictly decodes a key state written by MarshalBinary.
// rand supplies nonces for later seals.
func UnmarshalCipher(b []byte, rand io.Reader) (*Cipher, error) {
	if len(b) > maxCipherState {
		return nil, fmt.Errorf("cipher state: %w: %d bytes", ErrMalformed, len(b))
	}
	var w cipherWire
	if err := unmarshalStrict(b, &w); err != nil {
		// A version 1 state (one field fewer) is read as it was written.
		var v1 cipherWireV1
		if unmarshalStrict(b, &v1) != nil || v1.V != 1 {
			return nil, fmt.Errorf("cipher state: %w", err)
		}
		w = cipherWire{V: cipherStateVersion, Conv: v1.Conv, Self: v1.Self, Sending: v1.Sending, SkipSeq: v1.SkipSeq, Epochs: v1.Epochs, Dropped: [][]byte{}}
	}
	c, err := w.build(rand)
	if err != nil {
		return nil, fmt.Errorf("cipher state: %w", err)
	}
	return c, nil
}

func (w *cipherWire) build(rand io.Reader) (*Cipher, error) {
	if w.V != cipherStateVersion {
		return nil, fmt.Errorf("%w: %d", ErrUnsupportedVersion, w.V)
	}
	if err := checkLen("self", w.Self, 32); err != nil {
		return nil, err
	}
	c, err := NewCipher(w.Conv, DeviceID(w.Self), rand)
	if err != nil {
		return nil, err
	}
	c.skipSeq = w.SkipSeq
	if w.Epochs == nil || w.Sending == nil || w.Dropped == nil {
		return nil, fmt.Errorf("%w: null where a list is expected", ErrMalformed)
	}
	if len(w.Epochs) > MaxEpochs {
		return nil, fmt.Errorf("%w: %d epochs", ErrMalformed, len(w.Epochs))
	}
	for _, ew := range w.Epochs {
		if err := checkLen("epoch id", ew.ID, EpochIDSize); err != nil {
			return nil, err
		}
		if err := checkLen("header key", ew.HeaderKey, KeySize); err != nil {
			return nil, err
		}
		if err := checkLen("exporter", ew.Exporter, KeySize); err != nil {
			return nil, err
		}
		id := EpochID(ew.ID)
		if _, dup := c.epochs[id]; dup {
			return nil, fmt.Errorf("%w: epoch %s twice", ErrMalformed, id)
		}
		if len(ew.Chains) == 0 || len(ew.Chains) > MaxEpochRecipients {
			return nil, fmt.Errorf("%w: %d chains", ErrMalformed, len(ew.Chains))
		}
		members := make([]DeviceID, len(ew.Chains))
		for i, cw := range ew.Chains {
			if err := checkLen("chain device", cw.Device, 32); err != nil {
				return nil, err
			}
			if i > 0 && bytes.Compare(ew.Chains[i-1].Device, cw.Device) >= 0 {
				return nil, fmt.Errorf("%w: chains not sorted", ErrMalformed)
			}
			members[i] = DeviceID(cw.Device)
		}
		st, err := newEpochState(id, [KeySize]byte(ew.HeaderKey), [KeySize]byte(ew.Exporter), members)
		if err != nil {
			return nil, err
		}
		for _, cw := range ew.Chains {
			if err := checkLen("chain key", cw.Key, KeySize); err != nil {
				return nil, err
			}
			if cw.Floor > cw.Next {
				return nil, fmt.Errorf("%w: chain floor above next", ErrMalformed)
			}
			if cw.Skipped == nil {
				return nil, fmt.Errorf("%w: null where a list is expected", ErrMalformed)
			}
			ch := &chain{next: cw.Next, ck: [KeySize]byte(cw.Key), floor: cw.Floor}
			for i, sk := range cw.Skipped {
				if err := checkLen("skipped key", sk.Key, KeySize); err != nil {
					return nil, err
				}
				if sk.Index >= cw.Next || sk.Index < cw.Floor || (i > 0 && cw.Skipped[i-1].Index >= sk.Index) {
					return nil, fmt.Errorf("%w: skipped key index %d", ErrMalformed, sk.Index)
				}
				if sk.Seq == 0 || sk.Seq > w.SkipSeq {
					return nil, fmt.Errorf("%w: skipped key sequence", ErrMalformed)
				}
				c.nskip++
				if c.nskip > MaxSkippedKeys {
					return nil, fmt.Errorf("%w: more than %d skipped keys", ErrMalformed, MaxSkippedKeys)
				}
				if ch.skipped == nil {
					ch.skipped = map[uint32]skippedKey{}
				}
				ch.skipped[sk.Index] = skippedKey{mk: [KeySize]byte(sk.Key), seq: sk.Seq}
			}
			st.chains[DeviceID(cw.Device)] = ch
		}
		c.epochs[id] = st
		c.order = append(c.order, id)
	}
	if len(w.Dropped) > MaxDroppedEpochs {
		return nil, fmt.Errorf("%w: %d dropped epochs", ErrMalformed, len(w.Dropped))
	}
	for _, d := range w.Dropped {
		if err := checkLen("dropped epoch id", d, EpochIDSize); err != nil {
			return nil, err
		}
		id := EpochID(d)
		if _, held := c.epochs[id]; held || slices.Contains(c.dropped, id) {
			return nil, fmt.Errorf("%w: dropped epoch %s held or listed twice", ErrMalformed, id)
		}
		c.dropped = append(c.dropped, id)
	}
	switch len(w.Sending) {
	case 0:
	case EpochIDSize:
		id := EpochID(w.Sending)
		st, ok := c.epochs[id]
		if !ok {
			return nil, fmt.Errorf("%w: sending epoch not held", ErrMalformed)
		}
		if _, ok := st.chains[c.self]; !ok {
			return nil, fmt.Errorf("%w: self not a member of the sending epoch", ErrMalformed)
		}
		c.sending = &id
	default:
		return nil, fmt.Errorf("%w: sending epoch length", ErrMalformed)
	}
	return c, nil
}
