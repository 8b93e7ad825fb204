package testsupport

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/keyring"
)

// Identity is a device's keys for tests of a service without a node: an
// account root, a device certified by it a minute ago (so "now" is inside
// the validity) and a prekey ring.
type Identity struct {
	Account *keyring.AccountKey
	Device  *keyring.DeviceKey
	Cert    []byte
	Prekeys *keyring.PrekeyRing
}

// NewIdentity makes a fresh Identity whose device certificate carries name.
func NewIdentity(t testing.TB, name string) Identity {
	t.Helper()
	acct, err := keyring.NewAccountKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := keyring.NewDeviceKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := acct.Certify(dev.ID(), name, time.Now().Add(-time.Minute), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keyring.NewPrekey(rand.Reader, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return Identity{Account: acct, Device: dev, Cert: cert, Prekeys: keyring.NewPrekeyRing(pk)}
}

// SignedPrekey is the device's current prekey, signed by the device.
func (id Identity) SignedPrekey() ([]byte, error) { return id.Device.SignPrekey(id.Prekeys.Current()) }

// OpenBox opens a box sealed to one of the device's prekeys.
func (id Identity) OpenBox(purpose string, ad, box []byte) ([]byte, error) {
	return id.Prekeys.OpenBox(id.Device.ID(), purpose, ad, box)
}
