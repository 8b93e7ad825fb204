package node

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/protocol"
)

// Files of the personal identity.
const (
	KeyringFile    = "keyring"     // account root, device key, prekeys; encrypted
	KeyringKeyFile = "keyring.key" // the key that encrypts it when no passphrase is set (0600)
	storeKeyName   = "store-key"   // secret in the keyring that encrypts key state in the store
)

// Identity is this device's keys, loaded from the encrypted keyring file.
type Identity struct {
	Keyring *keyring.Keyring
	Cert    []byte // the device certificate, signed by the account root
	path    string
	prot    keyring.Protection
}

// AccountID is the account root's public key.
func (id *Identity) AccountID() keyring.AccountID { return id.Keyring.Account.ID() }

// DeviceID is this device's signing key.
func (id *Identity) DeviceID() keyring.DeviceID { return id.Keyring.Device.ID() }

// errNeedsPassphrase: the keyring is passphrase-protected and no
// passphrase was given.
var errNeedsPassphrase = errors.New("keyring is protected by a passphrase")

// loadIdentity opens the keyring, creating a new account and device on first
// use. Without a passphrase the keyring is protected by a 0600 key file next
// to it.
func loadIdentity(dir DataDir, now time.Time, passphrase []byte) (*Identity, error) {
	path := dir.file(KeyringFile)
	var prot keyring.Protection = keyring.KeyFile(dir.file(KeyringKeyFile))
	if passphrase != nil {
		prot = keyring.Passphrase(passphrase)
	}
	kr, err := keyring.ReadFile(path, prot)
	switch {
	case errors.Is(err, keyring.ErrProtectionMismatch) && passphrase == nil:
		return nil, errNeedsPassphrase
	case errors.Is(err, keyring.ErrProtectionMismatch):
		return nil, fmt.Errorf("keyring %s is not passphrase-protected: %w", path, err)
	case errors.Is(err, fs.ErrNotExist) && passphrase != nil:
		return nil, fmt.Errorf("keyring %s does not exist yet: start once without a passphrase", path)
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		if kr, err = newKeyring(now); err != nil {
			return nil, err
		}
		if err := keyring.WriteFile(path, kr, prot); err != nil {
			return nil, fmt.Errorf("write keyring: %w", err)
		}
	default:
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	id := &Identity{Keyring: kr, path: path, prot: prot, Cert: kr.Secrets["device-cert"]}
	if len(id.Cert) == 0 {
		return nil, fmt.Errorf("keyring %s: no device certificate", path)
	}
	if kr.Prekeys.NeedsRotation(now) {
		if _, err := kr.Prekeys.Rotate(rand.Reader, now); err != nil {
			return nil, fmt.Errorf("rotate prekey: %w", err)
		}
		kr.Prekeys.Prune(now)
		if err := id.save(); err != nil {
			return nil, err
		}
	}
	return id, nil
}

func newKeyring(now time.Time) (*keyring.Keyring, error) {
	acct, err := keyring.NewAccountKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	dev, err := keyring.NewDeviceKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	cert, err := acct.Certify(dev.ID(), host, now, time.Time{})
	if err != nil {
		return nil, err
	}
	pk, err := keyring.NewPrekey(rand.Reader, now)
	if err != nil {
		return nil, err
	}
	storeKey := make([]byte, 32)
	if _, err := rand.Read(storeKey); err != nil {
		return nil, err
	}
	return &keyring.Keyring{
		Account: acct,
		Device:  dev,
		Prekeys: keyring.NewPrekeyRing(pk),
		Secrets: map[string][]byte{"device-cert": cert, storeKeyName: storeKey},
	}, nil
}

func (id *Identity) save() error {
	if err := keyring.WriteFile(id.path, id.Keyring, id.prot); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// Card is what a contact needs to start a conversation with this device:
// who it is (account and certified device), how to seal an epoch to it (a
// signed prekey) and where to reach it. Cards are exchanged out of band;
// invite links (a later milestone) will carry the same facts plus a token.
type Card struct {
	Cert   []byte   `cbor:"1,keyasint"`
	Prekey []byte   `cbor:"2,keyasint"`
	Peer   []byte   `cbor:"3,keyasint"`
	Addrs  []string `cbor:"4,keyasint"`
}

// CardPrefix starts the text form of a card.
const CardPrefix = "glitr-card:"

// ErrBadCard marks a card that does not decode or verify.
var ErrBadCard = errors.New("invalid contact card")

// VerifiedCard is a card whose signatures checked out.
type VerifiedCard struct {
	Cert   keyring.Certificate
	Prekey keyring.SignedPrekey
	Peer   peer.AddrInfo
	raw    Card
}

// cardDec decodes cards and the other small messages peers send.
var cardDec = protocol.SmallDec

var canonicalEnc, _ = cbor.CanonicalEncOptions().EncMode()

// MyCard returns this device's current card.
func (id *Identity) MyCard(p peer.AddrInfo) (string, error) {
	signed, err := id.Keyring.Device.SignPrekey(id.Keyring.Prekeys.Current())
	if err != nil {
		return "", err
	}
	c := Card{Cert: id.Cert, Prekey: signed, Peer: []byte(p.ID)}
	for _, a := range p.Addrs {
		c.Addrs = append(c.Addrs, a.String())
	}
	b, err := canonicalEnc.Marshal(c)
	if err != nil {
		return "", err
	}
	return CardPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// ParseCard decodes and verifies a card's text form. A zero now skips the
// validity-period checks (for cards already accepted and stored).
func ParseCard(s string, now time.Time) (VerifiedCard, error) {
	var vc VerifiedCard
	raw, ok := strings.CutPrefix(strings.TrimSpace(s), CardPrefix)
	if !ok {
		return vc, fmt.Errorf("%w: does not start with %q", ErrBadCard, CardPrefix)
	}
	if len(raw) > 16<<10 {
		return vc, fmt.Errorf("%w: too long", ErrBadCard)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return vc, fmt.Errorf("%w: %w", ErrBadCard, err)
	}
	if err := cardDec.Unmarshal(b, &vc.raw); err != nil {
		return vc, fmt.Errorf("%w: %w", ErrBadCard, err)
	}
	return verifyCard(vc.raw, now)
}

func verifyCard(c Card, now time.Time) (VerifiedCard, error) {
	vc, err := verifyCardIdentity(c, now)
	if err != nil {
		return vc, err
	}
	if vc.Prekey, err = keyring.VerifyPrekey(c.Prekey); err != nil {
		return vc, fmt.Errorf("%w: prekey: %w", ErrBadCard, err)
	}
	if vc.Prekey.Device != vc.Cert.Device {
		return vc, fmt.Errorf("%w: prekey belongs to another device", ErrBadCard)
	}
	if err := vc.Prekey.ValidAt(now); err != nil && !now.IsZero() {
		return vc, fmt.Errorf("%w: prekey: %w", ErrBadCard, err)
	}
	return vc, nil
}

// verifyCardIdentity checks a card's certificate (at now, unless zero),
// peer id and addresses, not its prekey: who the card speaks for.
func verifyCardIdentity(c Card, now time.Time) (VerifiedCard, error) {
	vc := VerifiedCard{raw: c}
	var err error
	if vc.Cert, err = keyring.VerifyCertificate(c.Cert); err != nil {
		return vc, fmt.Errorf("%w: certificate: %w", ErrBadCard, err)
	}
	if err := vc.Cert.ValidAt(now); err != nil && !now.IsZero() {
		return vc, fmt.Errorf("%w: certificate: %w", ErrBadCard, err)
	}
	if vc.Peer.ID, err = peer.IDFromBytes(c.Peer); err != nil {
		return vc, fmt.Errorf("%w: peer id: %w", ErrBadCard, err)
	}
	for _, s := range c.Addrs {
		ai, err := peer.AddrInfoFromString(s + "/p2p/" + vc.Peer.ID.String())
		if err != nil {
			return vc, fmt.Errorf("%w: address %q: %w", ErrBadCard, s, err)
		}
		vc.Peer.Addrs = append(vc.Peer.Addrs, ai.Addrs...)
	}
	return vc, nil
}

// protect re-encrypts the keyring under prot (a passphrase, or the key
// file) and removes the key file when it is no longer used. The caller
// holds the chat service's idMu.
func (id *Identity) protect(prot keyring.Protection) error {
	if err := keyring.WriteFile(id.path, id.Keyring, prot); err != nil {
		return fmt.Errorf("re-encrypt keyring: %w", err)
	}
	old := id.prot
	id.prot = prot
	if kf, ok := old.(keyring.KeyFile); ok {
		if _, now := prot.(keyring.KeyFile); !now {
			if err := os.Remove(string(kf)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove key file: %w", err)
			}
		}
	}
	return nil
}
