package devices

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
)

// fakeAccount is one device's keys and what the conversation service
// would know, with the two adapters the people and devices services see.
type fakeAccount struct {
	acct   *keyring.AccountKey
	noRoot bool // the device lost the account root
	dev    *keyring.DeviceKey
	cert   []byte
	testsupport.Identity
	host host.Host

	mu       sync.Mutex
	fresh    bool
	linked   []card.Verified
	pending  [][]byte
	members  map[string]bool // conversation (string of its id) -> readmits
	readmits []string
	contacts []peer.ID
	recovery keyring.RecoveryKey
}

func newFakeAccount(t *testing.T, h host.Host) *fakeAccount {
	t.Helper()
	id := testsupport.NewIdentity(t, "laptop")
	rk, err := keyring.NewRecoveryKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeAccount{Identity: id, acct: id.Account, dev: id.Device, cert: id.Cert, host: h, fresh: true, members: map[string]bool{}, recovery: rk}
}

// devicesView is the fake as node/devices sees it.
type devicesView struct{ *fakeAccount }

func (f devicesView) Self() Self {
	return Self{Account: f.acct.ID(), Device: f.dev.ID(), Cert: f.cert, HoldsAccountKey: !f.noRoot}
}
func (f devicesView) Fresh() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.fresh }
func (f devicesView) CertifyDevice(d keyring.DeviceID, name string) ([]byte, error) {
	return f.acct.Certify(d, name, time.Now(), time.Time{})
}
func (f devicesView) Bundle(cert []byte) (Bundle, error) {
	return Bundle{AccountSeed: f.acct.Seed(), Cert: cert, AccountConv: bytes.Repeat([]byte{1}, 16)}, nil
}
func (f devicesView) DeviceLinked(_ context.Context, vc card.Verified) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.linked = append(f.linked, vc)
	return nil
}
func (f devicesView) BackupState() (State, keyring.RecoveryKey, *keyring.AccountKey, error) {
	return State{Name: "Ada", Prefs: map[string]string{"theme": "dark"}, ContactNames: [][]byte{append(bytes.Repeat([]byte{2}, 32), "Bo"...)},
		Conversations: [][]byte{bytes.Repeat([]byte{3}, 48)}}, f.recovery, f.acct, nil
}
func (f devicesView) PendingRejoins(context.Context) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.pending...)
}
func (f devicesView) ConnectedContacts() []peer.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.contacts
}
func (f devicesView) Readmit(_ context.Context, conv []byte, vc card.Verified) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.members[string(conv)] {
		return false
	}
	f.readmits = append(f.readmits, vc.Cert.Device.String())
	return true
}

// peopleView is the fake as node/people sees it (only what token links use).
type peopleView struct{ *fakeAccount }

func (f peopleView) Self() people.Self   { return people.Self{Account: f.acct.ID(), Cert: f.cert} }
func (f peopleView) ProfileName() string { return "Ada" }
func (peopleView) AddContact(context.Context, card.Verified, string) error {
	return errors.New("not in these tests")
}
func (peopleView) PutPairSecret(context.Context, keyring.AccountID, []byte) error { return nil }
func (peopleView) CreateConversation(context.Context, string, []keyring.AccountID) (string, error) {
	return "", errors.New("not in these tests")
}
func (peopleView) AwaitConversation(context.Context, string) error { return nil }
func (peopleView) ContactAdded(string)                             {}

type device struct {
	f   *fakeAccount
	svc *Service
}

func newDevice(t *testing.T) *device {
	t.Helper()
	h := testsupport.Host(t)
	f := newFakeAccount(t, h)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	lim := request.NewLimiter(nil)
	store := dssync.MutexWrap(ds.NewMapDatastore())
	ppl := people.New(h, store, peopleView{f}, people.Options{Requests: lim, StoreKey: key, Logger: testsupport.Logger(t)})
	ppl.Start()
	svc := New(h, devicesView{f}, ppl, Options{Requests: lim, Logger: testsupport.Logger(t)})
	svc.Start()
	t.Cleanup(func() { svc.Close(); ppl.Close() })
	return &device{f: f, svc: svc}
}

// A fresh device links with a code: it gets the account's bundle, sealed
// to it, and the linker records exactly that device. The code is spent.
func TestLinkWithCode(t *testing.T) {
	ctx := context.Background()
	laptop, phone := newDevice(t), newDevice(t)
	phone.f.host.Peerstore().AddAddrs(laptop.f.host.ID(), laptop.f.host.Addrs(), time.Hour)
	code, err := laptop.svc.CreateLinkCode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(code.Link, card.DeviceLink.Prefix) {
		t.Fatalf("link code %q", code.Link)
	}
	acct, bundle, err := phone.svc.Link(ctx, code.Link)
	if err != nil {
		t.Fatal(err)
	}
	if acct != laptop.f.acct.ID() || !bytes.Equal(bundle.AccountSeed, laptop.f.acct.Seed()) {
		t.Fatal("the bundle is not the linker's account")
	}
	cert, err := keyring.VerifyCertificate(bundle.Cert)
	if err != nil || cert.Device != phone.f.dev.ID() || cert.Account != acct {
		t.Fatalf("the bundle's certificate: %+v, %v", cert, err)
	}
	testsupport.Eventually(t, 5*time.Second, "the linker records the device", func() bool {
		laptop.f.mu.Lock()
		defer laptop.f.mu.Unlock()
		return len(laptop.f.linked) == 1 && laptop.f.linked[0].Cert.Device == phone.f.dev.ID()
	})
	// A second device with the same code: used.
	tablet := newDevice(t)
	tablet.f.host.Peerstore().AddAddrs(laptop.f.host.ID(), laptop.f.host.Addrs(), time.Hour)
	if _, _, err := tablet.svc.Link(ctx, code.Link); !errors.Is(err, ErrLinkUsed) {
		t.Fatalf("a spent code: %v, want ErrLinkUsed", err)
	}
}

func TestLinkRefusals(t *testing.T) {
	ctx := context.Background()
	laptop, phone := newDevice(t), newDevice(t)
	phone.f.host.Peerstore().AddAddrs(laptop.f.host.ID(), laptop.f.host.Addrs(), time.Hour)
	code, err := laptop.svc.CreateLinkCode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	phone.f.fresh = false
	if _, _, err := phone.svc.Link(ctx, code.Link); !errors.Is(err, ErrNotFresh) {
		t.Fatalf("a node in use: %v, want ErrNotFresh", err)
	}
	phone.f.fresh = true
	// Expired at the linker, though not yet at the phone.
	laptop.svc.now = func() time.Time { return time.Now().Add(LinkTTL + time.Minute) }
	if _, _, err := phone.svc.Link(ctx, code.Link); !errors.Is(err, card.ErrLinkExpired) {
		t.Fatalf("an expired code: %v, want ErrLinkExpired", err)
	}
	if len(laptop.f.linked) != 0 {
		t.Fatal("a refused link recorded a device")
	}
	// An invite is no link code.
	inv, err := laptop.svc.people.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := phone.svc.Link(ctx, inv.Link); !errors.Is(err, card.ErrLinkInvalid) {
		t.Fatalf("an invite as link code: %v", err)
	}
	// A device without the account root cannot issue codes.
	laptop.f.noRoot = true
	if _, err := laptop.svc.CreateLinkCode(ctx); !errors.Is(err, ErrNoAccountKey) {
		t.Fatalf("a code from a device without the root: %v", err)
	}
}

// A backup opens only with its words and carries the account's state; the
// restored device gets a certificate of that account and the list of
// conversations to rejoin.
func TestBackupOpensWithItsWordsOnly(t *testing.T) {
	ctx := context.Background()
	d := newDevice(t)
	b, err := d.svc.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("Ada")) || bytes.Contains(b, []byte("theme")) {
		t.Fatal("the backup is not encrypted")
	}
	r, err := OpenBackup(d.f.recovery.Words(), b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Account.ID() != d.f.acct.ID() || r.State.Name != "Ada" || r.State.Prefs["theme"] != "dark" {
		t.Fatalf("restored %+v", r.State)
	}
	other, _ := keyring.NewRecoveryKey(rand.Reader)
	if _, err := OpenBackup(other.Words(), b); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("wrong words: %v, want ErrBadBackup", err)
	}
	tampered := bytes.Clone(b)
	tampered[len(tampered)/2] ^= 1
	if _, err := OpenBackup(d.f.recovery.Words(), tampered); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("a damaged file: %v, want ErrBadBackup", err)
	}
	newDev, _ := keyring.NewDeviceKey(rand.Reader)
	bundle, rejoin, err := r.RestoreBundle(newDev.ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := keyring.VerifyCertificate(bundle.Cert)
	if err != nil || cert.Account != d.f.acct.ID() || cert.Device != newDev.ID() || len(rejoin) != 1 {
		t.Fatalf("restore bundle: %+v %v, %d to rejoin", cert, err, len(rejoin))
	}
	if batches, err := r.State.AccountOps(); err != nil || len(batches) != 1 || len(batches[0]) != 3 {
		t.Fatalf("account ops %v (%v), want one batch of name, preference and contact", batches, err)
	}
}

// A restored device asks its connected contacts to let it back in until
// one does; a conversation the contact has no member of is refused.
func TestRejoinAsksUntilReadmitted(t *testing.T) {
	member, restored := newDevice(t), newDevice(t)
	testsupport.Connect(t, restored.f.host, member.f.host)
	conv := bytes.Repeat([]byte{5}, 16)
	member.f.mu.Lock()
	member.f.members[string(conv)] = true
	member.f.mu.Unlock()
	restored.f.mu.Lock()
	restored.f.pending = [][]byte{conv, bytes.Repeat([]byte{6}, 16)}
	restored.f.contacts = []peer.ID{member.f.host.ID()}
	restored.f.mu.Unlock()
	// The loop started with nothing pending; a restart picks the list up.
	restored.svc.Close()
	restored.svc = New(restored.f.host, devicesView{restored.f}, restored.svc.people, Options{Logger: testsupport.Logger(t)})
	restored.svc.Start()
	testsupport.Eventually(t, 10*time.Second, "the member readmits the device", func() bool {
		member.f.mu.Lock()
		defer member.f.mu.Unlock()
		return len(member.f.readmits) >= 1 && member.f.readmits[0] == restored.f.dev.ID().String()
	})
}

// The account's state goes into the backup in batches that each fit one
// block, and comes back op for op.
func TestAccountStateBatches(t *testing.T) {
	name := "Ada"
	ops := []crdt.Op{crdt.ProfileName{Name: name}}
	for i := range 3 {
		ops = append(ops, crdt.ProfileAvatar{Mime: "image/png", Data: bytes.Repeat([]byte{byte(i)}, crdt.MaxBlobLen)})
	}
	for i := range 200 {
		ops = append(ops, crdt.SetPreference{Key: fmt.Sprintf("k%03d", i), Value: "v"})
	}
	batches, err := EncodeAccount(ops)
	if err != nil {
		t.Fatal(err)
	}
	st := State{Name: "old field, ignored", Account: batches}
	got, err := st.AccountOps()
	if err != nil {
		t.Fatal(err)
	}
	var flat []crdt.Op
	for _, b := range got {
		if len(b) > maxBatch {
			t.Fatalf("a batch of %d ops", len(b))
		}
		flat = append(flat, b...)
	}
	if len(flat) != len(ops) || !reflect.DeepEqual(flat, ops) {
		t.Fatalf("%d ops back of %d, or different", len(flat), len(ops))
	}
	st.Account = [][]byte{{0xff}}
	if _, err := st.AccountOps(); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("a damaged batch: %v", err)
	}
}
