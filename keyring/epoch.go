package keyring

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// EpochID names a conversation epoch. It is derived from the epoch secret,
// the conversation id and the recipient list (see deriveEpochID), so an id
// commits to one secret and one member set: two recipients that accept the
// same id hold the same secret and agree on the members, and a rotator
// cannot hand different secrets under one id.
type EpochID [EpochIDSize]byte

// String returns the hex form.
func (e EpochID) String() string { return hex.EncodeToString(e[:]) }

// Rotation limits.
const (
	// MaxEpochRecipients caps the member devices of one epoch.
	MaxEpochRecipients = 512
	// MaxPrevEpochs caps the previous epochs a rotation names.
	MaxPrevEpochs = 16
	// boxesPerPart keeps each rotation part under the dag's 64 KiB block cap
	// even with the full recipient list (512 × 34 B) in every part.
	boxesPerPart = 36
	// epochBoxSize is X-Wing enc (1120) + secret (32) + tag (16).
	epochBoxSize    = 1120 + KeySize + TagSize
	maxRotationPart = 64 << 10
)

// Errors of epoch distribution and selection.
var (
	// ErrNotRecipient reports a rotation that holds no box for this device.
	ErrNotRecipient = errors.New("keyring: device is not a recipient of the epoch")
	// ErrNoPrekey reports a box sealed to a prekey this device no longer holds.
	ErrNoPrekey = errors.New("keyring: prekey not held (expired or unknown)")
	// ErrEpochBox reports an HPKE box that does not open: tampered, or
	// forwarded from another device, conversation or epoch.
	ErrEpochBox = errors.New("keyring: epoch box does not open")
	// ErrEpochMismatch reports a secret whose derived id differs from the
	// rotation's epoch id (an equivocating rotator).
	ErrEpochMismatch = errors.New("keyring: epoch id does not match secret")
	// ErrNoUsableEpoch reports that every known epoch is tainted.
	ErrNoUsableEpoch = errors.New("keyring: no untainted epoch")
	// ErrEpochSuperseded reports a block sealed under an epoch that a
	// rotation in the block's causal past replaced.
	ErrEpochSuperseded = errors.New("keyring: epoch superseded in the block's causal past")
	// ErrEpochTainted reports a block sealed under a tainted epoch.
	ErrEpochTainted = errors.New("keyring: epoch is tainted")
	// ErrEpochNotInPast reports a block sealed under an epoch whose rotation
	// is not in the block's causal past.
	ErrEpochNotInPast = errors.New("keyring: epoch rotation not in the block's causal past")
)

// Epoch is an opened epoch: its secret and the public facts of its
// rotation. Install it into a Cipher, which derives the header key and the
// sender chains and wipes the secret.
type Epoch struct {
	Conversation []byte
	ID           EpochID
	Prev         []EpochID
	Rotator      DeviceID
	// Members is the sorted recipient list: the devices that may send
	// under this epoch.
	Members []DeviceID
	secret  [KeySize]byte
}

// deriveEpochID = HKDF(secret, info = "glitr/v1/epoch-id" 0x00 ‖ conv ‖
// SHA-256(members))[:16].
func deriveEpochID(secret []byte, conv []byte, members []DeviceID) EpochID {
	h := membersHash(members)
	k := kdf(labelEpochID, secret, nil, conv, h[:])
	return EpochID(k[:EpochIDSize])
}

func membersHash(members []DeviceID) [32]byte {
	h := sha256.New()
	for _, m := range members {
		h.Write(m[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// boxInfo binds an HPKE box to the conversation, the epoch, the recipient
// device and prekey and the rotator, so a box copied into another
// rotation, conversation or recipient slot does not open.
func boxInfo(conv []byte, epoch EpochID, recipient DeviceID, prekey PrekeyID, rotator DeviceID) []byte {
	info := append([]byte(labelEpochBox), 0)
	info = appendLenPrefixed(info, conv)
	info = appendLenPrefixed(info, epoch[:])
	info = appendLenPrefixed(info, recipient[:])
	info = appendLenPrefixed(info, prekey[:])
	return appendLenPrefixed(info, rotator[:])
}

// hpkeSeal and hpkeOpen are the only HPKE entry points; the RFC 9180 and
// X-Wing vectors run through hpkeOpen. The protocol uses an empty aad: every
// binding is in info.
func hpkeSeal(pub hpke.PublicKey, info, aad, plaintext []byte) ([]byte, error) {
	enc, s, err := hpke.NewSender(pub, hpkeKDF(), hpkeAEAD(), info)
	if err != nil {
		return nil, fmt.Errorf("keyring: hpke seal: %w", err)
	}
	ct, err := s.Seal(aad, plaintext)
	if err != nil {
		return nil, fmt.Errorf("keyring: hpke seal: %w", err)
	}
	return append(enc, ct...), nil
}

func hpkeOpen(priv hpke.PrivateKey, kdf hpke.KDF, aead hpke.AEAD, info, aad, box []byte) ([]byte, error) {
	var encLen int
	switch priv.KEM().ID() {
	case 0x647a: // X-Wing
		encLen = 1120
	case 0x0020: // DHKEM(X25519, HKDF-SHA256), for the RFC 9180 vectors
		encLen = 32
	default:
		return nil, fmt.Errorf("%w: kem %#x", ErrEpochBox, priv.KEM().ID())
	}
	if len(box) < encLen {
		return nil, ErrEpochBox
	}
	r, err := hpke.NewRecipient(box[:encLen], priv, kdf, aead, info)
	if err != nil {
		return nil, ErrEpochBox
	}
	pt, err := r.Open(aad, box[encLen:])
	if err != nil {
		return nil, ErrEpochBox
	}
	return pt, nil
}

// RotationParams describes a new epoch.
type RotationParams struct {
	// Conversation is the conversation id (at most 64 bytes).
	Conversation []byte
	// Prev names the epochs this rotation replaces (the rotator's current
	// untainted epochs); at most MaxPrevEpochs.
	Prev []EpochID
	// Recipients are the verified prekeys of every member device,
	// including the rotator's own device. One prekey per device.
	Recipients []SignedPrekey
	// Created is the rotation time; every prekey must be valid then.
	Created time.Time
}

type boxWire struct {
	_      struct{} `cbor:",toarray"`
	Device []byte
	Prekey []byte
	Box    []byte
}

type rotationBody struct {
	_            struct{} `cbor:",toarray"`
	V            uint8
	Conversation []byte
	Epoch        []byte
	Prev         [][]byte
	Rotator      []byte
	Created      int64
	Recipients   [][]byte
	Part         uint16
	Parts        uint16
	Boxes        []boxWire
}

// NewRotation creates a fresh epoch secret from rand and seals it to every
// recipient. It returns the signed rotation in one or more parts (each under
// 64 KiB so it fits one DAG block; each part carries the full recipient list
// and a slice of the boxes, and is verified on its own) and the opened epoch
// for the rotator to install.
func NewRotation(rand io.Reader, rotator *DeviceKey, p RotationParams) ([][]byte, *Epoch, error) {
	if len(p.Conversation) == 0 || len(p.Conversation) > MaxConversationIDLen {
		return nil, nil, fmt.Errorf("rotation: %w: conversation id length %d", ErrMalformed, len(p.Conversation))
	}
	if len(p.Prev) > MaxPrevEpochs {
		return nil, nil, fmt.Errorf("rotation: %w: %d previous epochs", ErrMalformed, len(p.Prev))
	}
	if len(p.Recipients) == 0 || len(p.Recipients) > MaxEpochRecipients {
		return nil, nil, fmt.Errorf("rotation: %w: %d recipients", ErrMalformed, len(p.Recipients))
	}
	recips := slices.Clone(p.Recipients)
	slices.SortFunc(recips, func(a, b SignedPrekey) int { return bytes.Compare(a.Device[:], b.Device[:]) })
	members := make([]DeviceID, len(recips))
	self := false
	for i, r := range recips {
		if i > 0 && r.Device == recips[i-1].Device {
			return nil, nil, fmt.Errorf("rotation: %w: device %s listed twice", ErrMalformed, r.Device)
		}
		if err := r.ValidAt(p.Created); err != nil {
			return nil, nil, fmt.Errorf("rotation: recipient %s: %w", r.Device, err)
		}
		members[i] = r.Device
		self = self || r.Device == rotator.id
	}
	if !self {
		return nil, nil, fmt.Errorf("rotation: %w: rotator is not a recipient", ErrNotRecipient)
	}
	secret, err := readRand(rand, KeySize)
	if err != nil {
		return nil, nil, err
	}
	ep := &Epoch{
		Conversation: slices.Clone(p.Conversation),
		ID:           deriveEpochID(secret, p.Conversation, members),
		Prev:         slices.Clone(p.Prev),
		Rotator:      rotator.id,
		Members:      members,
	}
	copy(ep.secret[:], secret)
	wipe(secret)

	boxes := make([]boxWire, len(recips))
	for i, r := range recips {
		info := boxInfo(p.Conversation, ep.ID, r.Device, r.ID, rotator.id)
		box, err := hpkeSeal(r.Public, info, nil, ep.secret[:])
		if err != nil {
			return nil, nil, fmt.Errorf("rotation: seal to %s: %w", r.Device, err)
		}
		boxes[i] = boxWire{Device: slices.Clone(r.Device[:]), Prekey: slices.Clone(r.ID[:]), Box: box}
	}
	prev := make([][]byte, len(p.Prev))
	for i := range p.Prev {
		prev[i] = p.Prev[i][:]
	}
	slices.SortFunc(prev, bytes.Compare)
	recipList := make([][]byte, len(members))
	for i := range members {
		recipList[i] = members[i][:]
	}
	nparts := (len(boxes) + boxesPerPart - 1) / boxesPerPart
	parts := make([][]byte, 0, nparts)
	for i := range nparts {
		body := rotationBody{
			V: 1, Conversation: p.Conversation, Epoch: ep.ID[:], Prev: prev,
			Rotator: rotator.id[:], Created: p.Created.Unix(), Recipients: recipList,
			Part: uint16(i), Parts: uint16(nparts),
			Boxes: boxes[i*boxesPerPart : min(len(boxes), (i+1)*boxesPerPart)],
		}
		b, err := sealSigned(rotator.priv, labelRotation, body)
		if err != nil {
			return nil, nil, fmt.Errorf("rotation: %w", err)
		}
		parts = append(parts, b)
	}
	return parts, ep, nil
}

// Rotation is a verified rotation part. Its Recipients are the complete
// member list; Boxes holds this part's share of the sealed secrets.
type Rotation struct {
	Conversation []byte
	Epoch        EpochID
	Prev         []EpochID
	Rotator      DeviceID
	Created      time.Time
	Recipients   []DeviceID
	Part, Parts  int
	boxes        []boxWire
}

// VerifyRotation strictly decodes one rotation part and checks the
// rotator's device signature. The caller checks that the rotator holds a
// valid certificate and is a member of the conversation in the rotation
// block's causal past.
func VerifyRotation(b []byte) (Rotation, error) {
	var body rotationBody
	raw, sig, err := openSigned(b, maxRotationPart, &body)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotation: %w", err)
	}
	r, err := body.check()
	if err != nil {
		return Rotation{}, fmt.Errorf("rotation: %w", err)
	}
	if err := verify(body.Rotator, labelRotation, raw, sig); err != nil {
		return Rotation{}, fmt.Errorf("rotation: %w", err)
	}
	return r, nil
}

func (b *rotationBody) check() (Rotation, error) {
	if b.V != 1 {
		return Rotation{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, b.V)
	}
	if len(b.Conversation) == 0 || len(b.Conversation) > MaxConversationIDLen {
		return Rotation{}, fmt.Errorf("%w: conversation id length %d", ErrMalformed, len(b.Conversation))
	}
	if err := checkLen("epoch", b.Epoch, EpochIDSize); err != nil {
		return Rotation{}, err
	}
	if err := checkLen("rotator", b.Rotator, ed25519.PublicKeySize); err != nil {
		return Rotation{}, err
	}
	if len(b.Prev) > MaxPrevEpochs {
		return Rotation{}, fmt.Errorf("%w: %d previous epochs", ErrMalformed, len(b.Prev))
	}
	if err := checkSortedIDs("previous epoch", b.Prev, EpochIDSize); err != nil {
		return Rotation{}, err
	}
	if len(b.Recipients) == 0 || len(b.Recipients) > MaxEpochRecipients {
		return Rotation{}, fmt.Errorf("%w: %d recipients", ErrMalformed, len(b.Recipients))
	}
	if err := checkSortedIDs("recipient", b.Recipients, ed25519.PublicKeySize); err != nil {
		return Rotation{}, err
	}
	wantParts := (len(b.Recipients) + boxesPerPart - 1) / boxesPerPart
	if int(b.Parts) != wantParts || b.Part >= b.Parts {
		return Rotation{}, fmt.Errorf("%w: part %d of %d", ErrMalformed, b.Part, b.Parts)
	}
	lo := int(b.Part) * boxesPerPart
	hi := min(len(b.Recipients), lo+boxesPerPart)
	if len(b.Boxes) != hi-lo {
		return Rotation{}, fmt.Errorf("%w: part %d holds %d boxes, want %d", ErrMalformed, b.Part, len(b.Boxes), hi-lo)
	}
	self := false
	for i, bx := range b.Boxes {
		// Boxes follow the sorted recipient list, part by part.
		if !bytes.Equal(bx.Device, b.Recipients[lo+i]) {
			return Rotation{}, fmt.Errorf("%w: box %d is not for recipient %d", ErrMalformed, i, lo+i)
		}
		if err := checkLen("box prekey", bx.Prekey, len(PrekeyID{})); err != nil {
			return Rotation{}, err
		}
		if err := checkLen("box", bx.Box, epochBoxSize); err != nil {
			return Rotation{}, err
		}
	}
	r := Rotation{
		Conversation: b.Conversation,
		Epoch:        EpochID(b.Epoch),
		Rotator:      DeviceID(b.Rotator),
		Created:      time.Unix(b.Created, 0).UTC(),
		Part:         int(b.Part),
		Parts:        int(b.Parts),
		boxes:        b.Boxes,
	}
	for _, p := range b.Prev {
		r.Prev = append(r.Prev, EpochID(p))
	}
	r.Recipients = make([]DeviceID, len(b.Recipients))
	for i, d := range b.Recipients {
		r.Recipients[i] = DeviceID(d)
		self = self || r.Recipients[i] == r.Rotator
	}
	if !self {
		return Rotation{}, fmt.Errorf("%w: rotator is not a recipient", ErrMalformed)
	}
	return r, nil
}

// checkSortedIDs requires fixed-size ids in strictly ascending order, which
// also rules out duplicates.
func checkSortedIDs(name string, ids [][]byte, size int) error {
	for i, id := range ids {
		if err := checkLen(name, id, size); err != nil {
			return err
		}
		if i > 0 && bytes.Compare(ids[i-1], id) >= 0 {
			return fmt.Errorf("%w: %s list not strictly sorted", ErrMalformed, name)
		}
	}
	return nil
}

// HasBoxFor reports whether this part carries the box for device.
func (r Rotation) HasBoxFor(device DeviceID) bool {
	for _, b := range r.boxes {
		if bytes.Equal(b.Device, device[:]) {
			return true
		}
	}
	return false
}

// OpenEpoch opens the box for device self with its prekeys and checks that
// the secret derives the rotation's epoch id. It returns ErrNotRecipient
// when self is not in the recipient list (or its box is in another part),
// ErrNoPrekey, ErrEpochBox or ErrEpochMismatch.
func OpenEpoch(r Rotation, self DeviceID, prekeys *PrekeyRing) (*Epoch, error) {
	var box *boxWire
	for i := range r.boxes {
		if bytes.Equal(r.boxes[i].Device, self[:]) {
			box = &r.boxes[i]
			break
		}
	}
	if box == nil {
		return nil, fmt.Errorf("open epoch %s: %w", r.Epoch, ErrNotRecipient)
	}
	pk, ok := prekeys.Lookup(PrekeyID(box.Prekey))
	if !ok {
		return nil, fmt.Errorf("open epoch %s: %w", r.Epoch, ErrNoPrekey)
	}
	info := boxInfo(r.Conversation, r.Epoch, self, pk.id, r.Rotator)
	secret, err := hpkeOpen(pk.priv, hpkeKDF(), hpkeAEAD(), info, nil, box.Box)
	if err != nil {
		return nil, fmt.Errorf("open epoch %s: %w", r.Epoch, err)
	}
	defer wipe(secret)
	if len(secret) != KeySize {
		return nil, fmt.Errorf("open epoch %s: %w: secret length", r.Epoch, ErrEpochBox)
	}
	if deriveEpochID(secret, r.Conversation, r.Recipients) != r.Epoch {
		return nil, fmt.Errorf("open epoch %s: %w", r.Epoch, ErrEpochMismatch)
	}
	ep := &Epoch{
		Conversation: slices.Clone(r.Conversation),
		ID:           r.Epoch,
		Prev:         slices.Clone(r.Prev),
		Rotator:      r.Rotator,
		Members:      slices.Clone(r.Recipients),
	}
	copy(ep.secret[:], secret)
	return ep, nil
}

// EpochCandidate is an epoch as the crdt layer sees it: the Lamport clock
// of the block carrying its rotation and whether it is tainted (sealed to a
// device removed outside the rotation's causal past).
type EpochCandidate struct {
	ID      EpochID
	Lamport uint64
	Tainted bool
}

// SelectSendingEpoch picks the epoch to seal new blocks with among
// concurrent rotations: among untainted candidates, the highest
// (Lamport, epoch id), ids compared as bytes. Every replica with the same
// set picks the same epoch, so concurrent rotations converge on one.
func SelectSendingEpoch(cands []EpochCandidate) (EpochID, error) {
	var best *EpochCandidate
	for i := range cands {
		c := &cands[i]
		if c.Tainted {
			continue
		}
		if best == nil || c.Lamport > best.Lamport ||
			(c.Lamport == best.Lamport && bytes.Compare(c.ID[:], best.ID[:]) > 0) {
			best = c
		}
	}
	if best == nil {
		return EpochID{}, ErrNoUsableEpoch
	}
	return best.ID, nil
}

// RotationRef is a rotation in a block's causal past, as the crdt layer
// reports it: its epoch, the epochs it replaced and whether, in the block's
// causal past, it is tainted.
type RotationRef struct {
	Epoch   EpochID
	Prev    []EpochID
	Tainted bool
}

// CheckBlockEpoch is the policy for a new block sealed under epoch, given
// the rotations in the block's causal past. The epoch's own rotation must
// be in that past (ErrEpochNotInPast), must not be tainted there
// (ErrEpochTainted), and no rotation in that past may name it in Prev
// (ErrEpochSuperseded). causalPast must be downward closed, as a causal
// past is, so a chain of replacements is covered by its first link. A removed member
// who keeps writing under the old epoch after seeing its removal is
// rejected here; one who pretends not to have seen it is left to the crdt
// layer's strong-remove rule.
func CheckBlockEpoch(epoch EpochID, causalPast []RotationRef) error {
	var own *RotationRef
	for i := range causalPast {
		if causalPast[i].Epoch == epoch {
			own = &causalPast[i]
		}
		if slices.Contains(causalPast[i].Prev, epoch) {
			return fmt.Errorf("epoch %s: %w", epoch, ErrEpochSuperseded)
		}
	}
	if own == nil {
		return fmt.Errorf("epoch %s: %w", epoch, ErrEpochNotInPast)
	}
	if own.Tainted {
		return fmt.Errorf("epoch %s: %w", epoch, ErrEpochTainted)
	}
	return nil
}
