package keyring

import (
	"errors"
	"fmt"
)

// Boxes are one-shot HPKE messages sealed to a device's signed prekey, for
// what is sent to a device before any conversation exists (contact
// requests). Each box names the prekey it is sealed to and binds a purpose
// label and a caller-chosen context (for example an invite token's id) into
// the HPKE info, so a box made for one purpose never opens as another.

// ErrBox reports a box that does not open: wrong recipient, unknown or
// pruned prekey, wrong purpose or context, or tampered bytes.
var ErrBox = errors.New("keyring: box does not open")

const labelBox = labelPrefix + "box"

// MaxBoxPlaintext caps what a box carries.
const MaxBoxPlaintext = 32 << 10

func prekeyBoxInfo(purpose string, context []byte, recipient DeviceID, prekey PrekeyID) []byte {
	info := append([]byte(labelBox), 0)
	info = appendLenPrefixed(info, []byte(purpose))
	info = appendLenPrefixed(info, context)
	info = appendLenPrefixed(info, recipient[:])
	return appendLenPrefixed(info, prekey[:])
}

// SealBox seals plaintext to spk for purpose and context. The result is
// the prekey id followed by the HPKE encapsulation and ciphertext.
func SealBox(spk SignedPrekey, purpose string, context, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxBoxPlaintext {
		return nil, fmt.Errorf("keyring: box plaintext of %d bytes exceeds %d", len(plaintext), MaxBoxPlaintext)
	}
	if len(purpose) > 255 || len(context) > 1024 {
		return nil, errors.New("keyring: box purpose or context too long")
	}
	box, err := hpkeSeal(spk.Public, prekeyBoxInfo(purpose, context, spk.Device, spk.ID), nil, plaintext)
	if err != nil {
		return nil, err
	}
	return append(spk.ID[:], box...), nil
}

// OpenBox opens a box sealed to one of this device's prekeys.
func (r *PrekeyRing) OpenBox(self DeviceID, purpose string, context, box []byte) ([]byte, error) {
	var id PrekeyID
	if len(box) < len(id) || len(box) > MaxBoxPlaintext+4096 || len(purpose) > 255 || len(context) > 1024 {
		return nil, ErrBox
	}
	copy(id[:], box)
	pk, ok := r.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: unknown prekey", ErrBox)
	}
	pt, err := hpkeOpen(pk.priv, hpkeKDF(), hpkeAEAD(), prekeyBoxInfo(purpose, context, self, id), nil, box[len(id):])
	if err != nil {
		return nil, ErrBox
	}
	return pt, nil
}
