package mailbox

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/glitr-chat/glitr/protocol"
)

// Items. What a depositor puts in a mailbox is sealed for the mailbox's
// owner under a key derived from the deposit secret, so the relay (which
// never holds it) sees random bytes whose length is padded to a multiple
// of ItemPadding: not the envelope's header, not which conversation it
// belongs to, not its exact size. Every holder of the deposit key can
// seal; the owner opens. An item is
//
//	nonce (24) ‖ XChaCha20-Poly1305(key, nonce, uvarint(len) ‖ payload ‖ zeros, ad = label)
//
// with key = HKDF(D, "mailbox-item-key", 32).

// ItemPadding is the size granularity of a sealed item's plaintext.
const ItemPadding = 512

// SealOverhead is what sealing adds besides the padding: the nonce, the
// tag and the longest length prefix.
const SealOverhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead + binary.MaxVarintLen32

// MaxItemPayload is the largest payload that seals into an envelope the
// relay accepts.
const MaxItemPayload = (protocol.MaxMailboxEnvelope-chacha20poly1305.NonceSizeX-chacha20poly1305.Overhead)/ItemPadding*ItemPadding - binary.MaxVarintLen32

var labelItemKey = protocol.Label("mailbox-item-key")

// ErrBadItem marks an item that does not open under the owner's key.
var ErrBadItem = errors.New("mailbox: item does not open")

func itemKey(depositSecret []byte) []byte { return hkdfKey(depositSecret, labelItemKey, 32) }

// SealItem seals payload for the owner of k.
func (k DepositKey) SealItem(payload []byte) ([]byte, error) {
	if len(payload) > MaxItemPayload {
		return nil, fmt.Errorf("%w: item payload of %d bytes > %d", ErrTooLarge, len(payload), MaxItemPayload)
	}
	aead, err := chacha20poly1305.NewX(itemKey(k.Secret[:]))
	if err != nil {
		return nil, err
	}
	plain := binary.AppendUvarint(nil, uint64(len(payload)))
	plain = append(plain, payload...)
	if r := len(plain) % ItemPadding; r != 0 {
		plain = append(plain, make([]byte, ItemPadding-r)...)
	}
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(plain)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return aead.Seal(out, out, plain, []byte(labelItemKey)), nil
}

// OpenItem opens an item sealed with the deposit key of k.
func (k *OwnerKey) OpenItem(item []byte) ([]byte, error) {
	if len(item) < chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadItem, len(item))
	}
	aead, err := chacha20poly1305.NewX(itemKey(k.deposit.Secret[:]))
	if err != nil {
		return nil, err
	}
	nonce, sealed := item[:chacha20poly1305.NonceSizeX], item[chacha20poly1305.NonceSizeX:]
	plain, err := aead.Open(nil, nonce, sealed, []byte(labelItemKey))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadItem, err)
	}
	n, w := binary.Uvarint(plain)
	if w <= 0 || n > uint64(len(plain)-w) {
		return nil, fmt.Errorf("%w: bad length", ErrBadItem)
	}
	payload := plain[w : w+int(n)]
	for _, b := range plain[w+int(n):] {
		if b != 0 {
			return nil, fmt.Errorf("%w: bad padding", ErrBadItem)
		}
	}
	return payload, nil
}
