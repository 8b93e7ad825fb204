package discovery

// The record: the key schedule of the rendezvous slots and the sealed,
// signed, padded payload (docs/discovery.md §1–2). Pure: no network.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

// rendezvousKeys are the keys of one (pair, day, publishing device) slot.
type rendezvousKeys struct {
	record  ed25519.PrivateKey // signs the DHT record; its public key names the DHT key
	payload [chacha20poly1305.KeySize]byte
	dhtKey  string
}

// unixDay is the UTC day number of t (days since 1970-01-01).
func unixDay(t time.Time) int64 {
	s := t.Unix()
	d := s / daySeconds
	if s < 0 && s%daySeconds != 0 {
		d--
	}
	return d
}

// deriveRendezvousKeys computes the slot keys:
//
//	okm = HKDF-SHA256(ikm = pair secret, salt = none,
//	      info = "glitr/v1/rendezvous-keys" 0x00 ‖ day (8 bytes BE) ‖ publisher account ‖ publisher device, 64)
//	record key = Ed25519 from seed okm[0:32]; payload key = okm[32:64]
//
// The publishing account and device are in the info, so each direction and
// each device has its own key and no two devices ever write one DHT key.
func deriveRendezvousKeys(secret [PairSecretSize]byte, day int64, acct keyring.AccountID, dev keyring.DeviceID) (rendezvousKeys, error) {
	info := make([]byte, 0, len(labelRendezvousKeys)+1+8+2*32)
	info = append(info, labelRendezvousKeys...)
	info = append(info, 0)
	info = binary.BigEndian.AppendUint64(info, uint64(day))
	info = append(info, acct[:]...)
	info = append(info, dev[:]...)
	okm, err := hkdf.Key(sha256.New, secret[:], nil, string(info), ed25519.SeedSize+chacha20poly1305.KeySize)
	if err != nil {
		return rendezvousKeys{}, fmt.Errorf("derive rendezvous keys: %w", err)
	}
	k := rendezvousKeys{record: ed25519.NewKeyFromSeed(okm[:ed25519.SeedSize])}
	copy(k.payload[:], okm[ed25519.SeedSize:])
	k.dhtKey = protocol.RendezvousKey(k.record.Public().(ed25519.PublicKey))
	return k, nil
}

// publishDays are the days under whose keys a record is published at now:
// today, and the neighbouring day when midnight UTC is within skew, so a
// contact whose clock is off by up to skew looks under a key that is there.
func publishDays(now time.Time, skew time.Duration) []int64 {
	days := []int64{unixDay(now.Add(-skew)), unixDay(now), unixDay(now.Add(skew))}
	return slices.Compact(days)
}

// lookupDays are the days whose keys Find reads: today and yesterday (the
// publisher's record from before midnight is still valid after it).
func lookupDays(now time.Time) []int64 {
	d := unixDay(now)
	return []int64{d, d - 1}
}

// nextRollover is when publishDays next gains a day: ClockSkew before the
// next midnight UTC.
func nextRollover(now time.Time, skew time.Duration) time.Time {
	for day := unixDay(now) + 1; ; day++ {
		t := time.Unix((day)*daySeconds, 0).Add(-skew)
		if t.After(now) {
			return t
		}
	}
}

// ---- payload (pure) ----

// discoveryPayload is the plaintext of a record: who the device is on the
// network now, signed by the device.
type discoveryPayload struct {
	Peer  []byte   `cbor:"1,keyasint"` // peer.ID bytes
	Addrs [][]byte `cbor:"2,keyasint"` // multiaddr bytes
	Time  int64    `cbor:"3,keyasint"` // unix milliseconds
	Sig   []byte   `cbor:"4,keyasint"` // ed25519 by the device, over payloadSigningBytes
}

// payloadDec decodes untrusted payloads. Its options are constant, so an
// error is a programming mistake and fails at start-up.
var payloadDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxDiscoveryAddrs,
		MaxMapPairs:       16, // the library's minimum; the payload has 4
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("discovery payload decoder: %v", err))
	}
	return dm
}()

// payloadSigningBytes is what the device signs: the label, the publishing
// account and device, the DHT key (which binds the pair and the day) and
// the payload without its signature.
func payloadSigningBytes(p discoveryPayload, acct keyring.AccountID, dev keyring.DeviceID, dhtKey string) ([]byte, error) {
	p.Sig = nil
	body, err := canonicalEnc.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode discovery payload: %w", err)
	}
	var b bytes.Buffer
	b.WriteString(labelRendezvousAddrs)
	b.WriteByte(0)
	b.Write(acct[:])
	b.Write(dev[:])
	b.WriteString(dhtKey)
	b.WriteByte(0)
	b.Write(body)
	return b.Bytes(), nil
}

// sealPayload builds, signs, pads and encrypts a payload. Addresses that do
// not fit the record are dropped from the end.
func sealPayload(k rendezvousKeys, signer ed25519.PrivateKey, acct keyring.AccountID, id peer.ID, addrs []ma.Multiaddr, now time.Time) ([]byte, error) {
	dev := keyring.DeviceID(signer.Public().(ed25519.PublicKey))
	p := discoveryPayload{Peer: []byte(id), Time: now.UnixMilli()}
	for _, a := range addrs[:min(len(addrs), MaxDiscoveryAddrs)] {
		p.Addrs = append(p.Addrs, a.Bytes())
	}
	for {
		msg, err := payloadSigningBytes(p, acct, dev, k.dhtKey)
		if err != nil {
			return nil, err
		}
		p.Sig = ed25519.Sign(signer, msg)
		plain, err := canonicalEnc.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode discovery payload: %w", err)
		}
		if len(plain) < maxDiscoveryPlain { // room for the pad marker
			return sealPadded(k, pad(plain))
		}
		if len(p.Addrs) == 0 {
			return nil, fmt.Errorf("%w: %d bytes without addresses", ErrPayloadMalformed, len(plain))
		}
		p.Addrs = p.Addrs[:len(p.Addrs)-1]
	}
}

// pad appends 0x80 and zeros up to the next discoveryPadBlock (ISO/IEC
// 7816-4), capped at maxDiscoveryPlain.
func pad(b []byte) []byte {
	n := min((len(b)/discoveryPadBlock+1)*discoveryPadBlock, maxDiscoveryPlain)
	out := make([]byte, n)
	copy(out, b)
	out[len(b)] = 0x80
	return out
}

func unpad(b []byte) ([]byte, error) {
	i := len(b) - 1
	for i >= 0 && b[i] == 0 {
		i--
	}
	if i < 0 || b[i] != 0x80 {
		return nil, fmt.Errorf("%w: bad padding", ErrPayloadMalformed)
	}
	return b[:i], nil
}

func payloadAD(dhtKey string) []byte {
	return append(append([]byte(labelRendezvousPayload), 0), dhtKey...)
}

func sealPadded(k rendezvousKeys, plain []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(k.payload[:])
	if err != nil {
		return nil, fmt.Errorf("discovery payload cipher: %w", err)
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("discovery payload nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, plain, payloadAD(k.dhtKey)), nil
}

// openedPayload is a verified payload.
type openedPayload struct {
	Info peer.AddrInfo
	Time time.Time
}

// openPayload decrypts and verifies a sealed payload filed under k for the
// given publisher. sealed is untrusted.
func openPayload(k rendezvousKeys, acct keyring.AccountID, dev keyring.DeviceID, sealed []byte) (openedPayload, error) {
	if len(sealed) < discoverySealOverhead || len(sealed) > protocol.MaxRendezvousPayload {
		return openedPayload{}, fmt.Errorf("%w: %d bytes", ErrPayloadOpen, len(sealed))
	}
	aead, err := chacha20poly1305.NewX(k.payload[:])
	if err != nil {
		return openedPayload{}, fmt.Errorf("discovery payload cipher: %w", err)
	}
	nonce, ct := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, ct, payloadAD(k.dhtKey))
	if err != nil {
		return openedPayload{}, ErrPayloadOpen
	}
	return parsePayload(plain, acct, dev, k.dhtKey)
}

// parsePayload checks a decrypted, padded payload: canonical encoding,
// well-formed peer ID and addresses, and the device's signature.
func parsePayload(padded []byte, acct keyring.AccountID, dev keyring.DeviceID, dhtKey string) (openedPayload, error) {
	plain, err := unpad(padded)
	if err != nil {
		return openedPayload{}, err
	}
	var p discoveryPayload
	if err := payloadDec.Unmarshal(plain, &p); err != nil {
		return openedPayload{}, fmt.Errorf("%w: %w", ErrPayloadMalformed, err)
	}
	if again, err := canonicalEnc.Marshal(p); err != nil || !bytes.Equal(again, plain) {
		return openedPayload{}, fmt.Errorf("%w: not canonical CBOR", ErrPayloadMalformed)
	}
	if len(p.Sig) != ed25519.SignatureSize {
		return openedPayload{}, fmt.Errorf("%w: signature is %d bytes", ErrPayloadMalformed, len(p.Sig))
	}
	msg, err := payloadSigningBytes(p, acct, dev, dhtKey)
	if err != nil {
		return openedPayload{}, err
	}
	if !ed25519.Verify(ed25519.PublicKey(dev[:]), msg, p.Sig) {
		return openedPayload{}, ErrPayloadSignature
	}
	id, err := peer.IDFromBytes(p.Peer)
	if err != nil {
		return openedPayload{}, fmt.Errorf("%w: peer id: %w", ErrPayloadMalformed, err)
	}
	out := openedPayload{Info: peer.AddrInfo{ID: id}, Time: time.UnixMilli(p.Time)}
	for _, b := range p.Addrs {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return openedPayload{}, fmt.Errorf("%w: address: %w", ErrPayloadMalformed, err)
		}
		out.Info.Addrs = append(out.Info.Addrs, a)
	}
	return out, nil
}

// publishableAddrs filters the host's addresses: unspecified ones never,
// loopback ones only when nothing else is there (or keepLoopback), relay
// circuit addresses always; duplicates dropped, at most MaxDiscoveryAddrs.
func publishableAddrs(addrs []ma.Multiaddr, keepLoopback bool) []ma.Multiaddr {
	onlyLoopback := true
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			onlyLoopback = false
		}
	}
	var out []ma.Multiaddr
	for _, a := range addrs {
		switch {
		case len(a) == 0 || manet.IsIPUnspecified(a):
		case manet.IsIPLoopback(a) && !keepLoopback && !onlyLoopback:
		case slices.ContainsFunc(out, a.Equal):
		default:
			out = append(out, a)
		}
		if len(out) == MaxDiscoveryAddrs {
			break
		}
	}
	return out
}
