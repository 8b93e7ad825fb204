// Package identity is this device's keys: the account root, the device key
// and its certificate, the prekeys and the store key, kept in one keyring
// file that is encrypted under a passphrase or a 0600 key file beside it.
package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/dag"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
)

// storeKeyName is the secret in the keyring that encrypts key state and
// blocks in the store.
const storeKeyName = "store-key"

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

// ErrNeedsPassphrase: the keyring is passphrase-protected and no
// passphrase was given.
var ErrNeedsPassphrase = errors.New("keyring is protected by a passphrase")

// Load opens the keyring at path, creating a new account and device on
// first use. Without a passphrase the keyring is protected by the 0600 key
// file at keyFile.
func Load(path, keyFile string, now time.Time, passphrase []byte) (*Identity, error) {
	var prot keyring.Protection = keyring.KeyFile(keyFile)
	if passphrase != nil {
		prot = keyring.Passphrase(passphrase)
	}
	kr, err := keyring.ReadFile(path, prot)
	switch {
	case errors.Is(err, keyring.ErrProtectionMismatch) && passphrase == nil:
		return nil, ErrNeedsPassphrase
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
		if err := id.Save(); err != nil {
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

// StoreKey is the secret that seals the store's records at rest.
func (id *Identity) StoreKey() []byte { return id.Keyring.Secrets[storeKeyName] }

// Passphrase is the passphrase the keyring is encrypted under, or nil when
// it is protected by the key file.
func (id *Identity) Passphrase() []byte {
	if p, ok := id.prot.(keyring.Passphrase); ok {
		return p
	}
	return nil
}

// HasPassphrase reports whether the keyring is encrypted under a
// passphrase (rather than the key file).
func (id *Identity) HasPassphrase() bool {
	_, ok := id.prot.(keyring.Passphrase)
	return ok
}

// Save writes the keyring back under its protection. The caller holds
// whatever guards id.Keyring (the chat service's idMu).
func (id *Identity) Save() error {
	if err := keyring.WriteFile(id.path, id.Keyring, id.prot); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// OpenBlocks opens the block store in db, its records sealed at rest under
// the identity's store key: without the keyring (a stolen disk with a
// passphrase-locked keyring) no message, name or title can be read from it.
func OpenBlocks(ctx context.Context, db ds.Batching, id *Identity) (*dag.Store, error) {
	rc, err := keyring.NewRecordCipher(id.Keyring.Secrets[storeKeyName])
	if err != nil {
		return nil, fmt.Errorf("block store key: %w", err)
	}
	opts := dag.DefaultOptions()
	opts.Records = rc
	return dag.Open(ctx, namespace.Wrap(db, ds.NewKey("/dag")), opts)
}

// MyCard returns this device's current card in its text form.
func (id *Identity) MyCard(p peer.AddrInfo) (string, error) {
	signed, err := id.Keyring.Device.SignPrekey(id.Keyring.Prekeys.Current())
	if err != nil {
		return "", err
	}
	return card.Text(card.Of(id.Cert, signed, p))
}

// Protect re-encrypts the keyring under prot (a passphrase, or the key
// file) and removes the key file when it is no longer used. The caller
// holds the chat service's idMu.
func (id *Identity) Protect(prot keyring.Protection) error {
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
