package mailbox

// The mailbox address an owner hands its contacts (docs/mailbox.md §1):
// its deposit key and the relays that hold its mailboxes. Pure.

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/glitr-chat/glitr/protocol"
)

// Limits of an encoded address.
const (
	// MaxAddressRelays caps the relays of one address.
	MaxAddressRelays = 8
	// MaxRelayAddrs caps the multiaddrs of one relay.
	MaxRelayAddrs = 8
	// MaxAddressSize caps an encoded address.
	MaxAddressSize = 4 << 10
	addressVersion = 1
)

// ErrBadAddress marks an encoded address that does not decode or breaks a
// limit.
var ErrBadAddress = errors.New("mailbox: bad address")

// Address is where and how contacts deposit for an owner: the owner puts
// it, encoded, in the account or conversation data its contacts read.
type Address struct {
	Key    DepositKey
	Relays []peer.AddrInfo
}

type wireRelay struct {
	ID    []byte   `cbor:"1,keyasint"`
	Addrs [][]byte `cbor:"2,keyasint,omitempty"`
}

type wireAddress struct {
	Version int         `cbor:"1,keyasint"`
	Key     []byte      `cbor:"2,keyasint"`
	Relays  []wireRelay `cbor:"3,keyasint"`
}

var addressEnc = func() cbor.EncMode {
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// MarshalBinary encodes a canonically.
func (a Address) MarshalBinary() ([]byte, error) {
	if len(a.Relays) == 0 || len(a.Relays) > MaxAddressRelays {
		return nil, fmt.Errorf("%w: %d relays (1 to %d)", ErrBadAddress, len(a.Relays), MaxAddressRelays)
	}
	key, _ := a.Key.MarshalBinary()
	w := wireAddress{Version: addressVersion, Key: key}
	for _, r := range a.Relays {
		if len(r.Addrs) > MaxRelayAddrs {
			return nil, fmt.Errorf("%w: relay %s with %d addresses (max %d)", ErrBadAddress, r.ID, len(r.Addrs), MaxRelayAddrs)
		}
		wr := wireRelay{ID: []byte(r.ID)}
		for _, m := range r.Addrs {
			wr.Addrs = append(wr.Addrs, m.Bytes())
		}
		w.Relays = append(w.Relays, wr)
	}
	b, err := addressEnc.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode mailbox address: %w", err)
	}
	if len(b) > MaxAddressSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrBadAddress, len(b), MaxAddressSize)
	}
	return b, nil
}

// ParseAddress decodes an address a contact published, checking every
// limit, the deposit key, the relays' peer ids and multiaddrs, and that the
// encoding is the canonical one.
func ParseAddress(b []byte) (Address, error) {
	var a Address
	if len(b) > MaxAddressSize {
		return a, fmt.Errorf("%w: %d bytes (max %d)", ErrBadAddress, len(b), MaxAddressSize)
	}
	var w wireAddress
	if err := protocol.SmallDec.Unmarshal(b, &w); err != nil {
		return a, fmt.Errorf("%w: %w", ErrBadAddress, err)
	}
	if w.Version != addressVersion {
		return a, fmt.Errorf("%w: version %d", ErrBadAddress, w.Version)
	}
	if len(w.Relays) == 0 || len(w.Relays) > MaxAddressRelays {
		return a, fmt.Errorf("%w: %d relays (1 to %d)", ErrBadAddress, len(w.Relays), MaxAddressRelays)
	}
	key, err := ParseDepositKey(w.Key)
	if err != nil {
		return a, fmt.Errorf("%w: %w", ErrBadAddress, err)
	}
	a.Key = key
	for i, wr := range w.Relays {
		id, err := peer.IDFromBytes(wr.ID)
		if err != nil {
			return Address{}, fmt.Errorf("%w: relay %d: %w", ErrBadAddress, i, err)
		}
		if len(wr.Addrs) > MaxRelayAddrs {
			return Address{}, fmt.Errorf("%w: relay %d with %d addresses", ErrBadAddress, i, len(wr.Addrs))
		}
		info := peer.AddrInfo{ID: id}
		for _, raw := range wr.Addrs {
			m, err := ma.NewMultiaddrBytes(raw)
			if err != nil {
				return Address{}, fmt.Errorf("%w: relay %d: %w", ErrBadAddress, i, err)
			}
			info.Addrs = append(info.Addrs, m)
		}
		a.Relays = append(a.Relays, info)
	}
	// One address, one encoding.
	if again, err := a.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
		return Address{}, fmt.Errorf("%w: not canonical", ErrBadAddress)
	}
	return a, nil
}
