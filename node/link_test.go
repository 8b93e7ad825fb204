package node

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
)

// A fresh node linked to Ada's account becomes one more of her devices:
// it gets the account (same key, name, contacts), every conversation with
// its history, and from then on everything flows to both devices and to
// the contact.
func TestLinkDeviceSharesEverything(t *testing.T) {
	ctx := context.Background()
	ada := startTestNode(t, loopbackConfig(t))
	bob := startTestNode(t, loopbackConfig(t))
	phone := startTestNode(t, loopbackConfig(t))
	setUpAccounts(t, map[*Node]string{ada: "Ada", bob: "Bob"})
	conv := befriend(t, ada, bob)
	if _, err := bob.Send(ctx, conv, "before the phone", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "Bob's message at Ada", func() bool { return hasText(t, ada, conv, "before the phone") })

	code, err := ada.Chat.devices.CreateLinkCode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(code.Link, card.DeviceLink.Prefix) {
		t.Fatalf("link code %q", code.Link)
	}
	// An invite is not a link code, and a node in use cannot be linked.
	inv, err := ada.CreateInvite(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := phone.Link(ctx, inv.Link); !errors.Is(err, ErrLinkInvalid) {
		t.Fatalf("Link(invite) = %v, want ErrLinkInvalid", err)
	}
	if err := bob.Link(ctx, code.Link); !errors.Is(err, ErrNotFresh) {
		t.Fatalf("Link on a node in use = %v, want ErrNotFresh", err)
	}
	testsupport.Connect(t, phone.Host, ada.Host)
	start := time.Now()
	if err := phone.Link(ctx, code.Link); err != nil {
		t.Fatal(err)
	}
	if err := phone.Link(ctx, code.Link); err == nil {
		t.Fatal("a used code linked again")
	}
	if got, want := phone.Chat.id.AccountID(), ada.Chat.id.AccountID(); got != want {
		t.Fatalf("phone account %s, want Ada's %s", got, want)
	}
	testsupport.Eventually(t, 15*time.Second, "the conversation and its history on the phone", func() bool {
		_, err := phone.Chat.conversation(conv)
		return err == nil && hasText(t, phone, conv, "before the phone")
	})
	t.Logf("linked and showing the history after %s", time.Since(start).Round(time.Millisecond))
	testsupport.Eventually(t, 15*time.Second, "the account DAG on the phone", func() bool {
		info, err := phone.Account(ctx)
		return err == nil && info.Name == "Ada" && info.State == AccountReady
	})
	if _, ok := phone.Chat.contacts[bob.Chat.id.AccountID()]; !ok {
		t.Fatal("the phone does not know Bob")
	}

	// Everything flows to every device.
	testsupport.Eventually(t, 15*time.Second, "the phone to write", func() bool {
		_, err := phone.Send(ctx, conv, "from the phone", "")
		return err == nil
	})
	for _, n := range []*Node{ada, bob} {
		testsupport.Eventually(t, 15*time.Second, "the phone's message", func() bool { return hasText(t, n, conv, "from the phone") })
	}
	// The laptop lists the phone, online and recently seen.
	var listed bool
	for _, d := range ada.Chat.Devices() {
		if d.Device == phone.Chat.id.DeviceID().String() {
			listed = d.Online && !d.LastSeen.IsZero() && time.Since(d.LastSeen) < time.Minute && !d.Revoked
		}
	}
	if !listed {
		t.Fatalf("the laptop's device list: %+v", ada.Chat.Devices())
	}
	if _, err := bob.Send(ctx, conv, "to both devices", ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{ada, phone} {
		testsupport.Eventually(t, 15*time.Second, "Bob's reply on both devices", func() bool { return hasText(t, n, conv, "to both devices") })
	}
	// Reading on the laptop clears the unread count on the phone.
	unread := func(n *Node) int {
		cs, err := n.Conversations(ctx)
		if err != nil {
			return -1
		}
		for _, cv := range cs {
			if cv.ID == conv {
				return cv.Unread
			}
		}
		return -1
	}
	testsupport.Eventually(t, 15*time.Second, "Bob's reply unread on the phone", func() bool { return unread(phone) > 0 })
	if err := ada.MarkRead(ctx, conv); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the phone to show it read", func() bool { return unread(phone) == 0 })
	if _, err := ada.Send(ctx, conv, "from the laptop", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the laptop's message on the phone", func() bool { return hasText(t, phone, conv, "from the laptop") })
	// Account changes made on one device show on the other.
	if err := phone.SetProfile(ctx, "Ada Lovelace", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the new name on the laptop", func() bool {
		info, err := ada.Account(ctx)
		return err == nil && info.Name == "Ada Lovelace"
	})
}

// Revoking a device while it is offline: when it returns it cannot read
// what was sent after, its new blocks are refused by everyone, and it
// shows that it was removed.
func TestRevokeOfflineDevice(t *testing.T) {
	ctx := context.Background()
	ada := startTestNode(t, loopbackConfig(t))
	bob := startTestNode(t, loopbackConfig(t))
	phoneDir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	phone, err := Start(ctx, phoneDir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	setUpAccounts(t, map[*Node]string{ada: "Ada", bob: "Bob"})
	conv := befriend(t, ada, bob)
	testsupport.Connect(t, phone.Host, ada.Host)
	code, _ := ada.Chat.devices.CreateLinkCode(ctx)
	if err := phone.Link(ctx, code.Link); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the phone to join the conversation", func() bool {
		_, err := phone.Chat.conversation(conv)
		return err == nil
	})
	testsupport.Eventually(t, 15*time.Second, "the phone to write", func() bool {
		_, err := phone.Send(ctx, conv, "phone before", "")
		return err == nil
	})
	testsupport.Eventually(t, 15*time.Second, "the phone's message at Bob", func() bool { return hasText(t, bob, conv, "phone before") })
	phoneDev := phone.Chat.id.DeviceID()
	phone.Close()

	// Revoked from the laptop while the phone is away.
	if err := ada.Chat.RevokeDevice(ctx, ada.Chat.id.DeviceID()); !errors.Is(err, ErrNotOwnDevice) {
		t.Fatalf("revoking the device in use = %v, want ErrNotOwnDevice", err)
	}
	if err := ada.Chat.RevokeDevice(ctx, phoneDev); err != nil {
		t.Fatal(err)
	}
	if _, err := ada.Send(ctx, conv, "after the phone was lost", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, "the laptop's message at Bob", func() bool { return hasText(t, bob, conv, "after the phone was lost") })

	phone, err = Start(ctx, phoneDir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	testsupport.Connect(t, phone.Host, ada.Host)
	testsupport.Connect(t, phone.Host, bob.Host)
	testsupport.Eventually(t, 20*time.Second, "the phone to learn it was removed", func() bool {
		info, err := phone.Account(ctx)
		return err == nil && info.State == AccountRevoked
	})
	if _, err := phone.Send(ctx, conv, "phone after", ""); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("send from a revoked device = %v, want ErrDeviceRevoked", err)
	}
	time.Sleep(time.Second)
	if hasText(t, phone, conv, "after the phone was lost") {
		t.Fatal("the revoked device read a message sent after its revocation")
	}

	// A block the thief writes anyway (bypassing its own node's refusal)
	// is refused by the others.
	pc, _ := phone.Chat.conversation(conv)
	phone.Chat.revokedSelf.Store(false)
	blk, err := phone.Chat.commitOwn(ctx, pc, []crdt.Op{crdt.Message{Text: "forged after revocation"}})
	if err != nil {
		t.Fatal(err)
	}
	env, err := blk.EnvelopeBytes()
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := bob.Chat.conversation(conv)
	res, err := bob.Chat.ingest(ctx, bc, phone.Host.ID(), [][]byte{env}, false)
	if res.revoked != 1 || res.committed != 0 {
		t.Fatalf("Bob's ingest of the revoked device's block: %+v, %v; want refused as revoked", res, err)
	}
	time.Sleep(time.Second)
	if hasText(t, bob, conv, "forged after revocation") || hasText(t, ada, conv, "forged after revocation") {
		t.Fatal("a block written after the revocation was accepted")
	}
}

// A link interrupted after the new device recorded the bundle but before it
// applied it (a crash) is finished at the next start: the device ends up
// wholly in the linked account, never half in each.
func TestInterruptedLinkIsFinishedAtStart(t *testing.T) {
	ctx := context.Background()
	ada := startTestNode(t, loopbackConfig(t))
	if _, err := ada.CreateAccount(ctx, "Ada", ""); err != nil {
		t.Fatal(err)
	}
	dir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	phone, err := Start(ctx, dir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The bundle Ada's device would send, recorded as the new device does
	// before applying it; then the process dies.
	cert, err := ada.Chat.id.Keyring.Account.Certify(phone.Chat.id.DeviceID(), "phone", time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ada.Chat.linkBundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := canonicalEnc.Marshal(pendingAdoption{Bundle: b})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := keyring.SealAtRest(phone.Chat.storeKey(), adoptingKey.String(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := phone.Store.Put(ctx, adoptingKey, sealed); err != nil {
		t.Fatal(err)
	}
	provisional := phone.Chat.id.AccountID()
	phone.Close()

	phone, err = Start(ctx, dir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	if got := phone.Chat.id.AccountID(); got != ada.Chat.id.AccountID() || got == provisional {
		t.Fatalf("after the restart the device is in account %s; want Ada's %s", got, ada.Chat.id.AccountID())
	}
	if has, _ := phone.Store.Has(ctx, adoptingKey); has {
		t.Fatal("the adoption record is still there")
	}
	if id, _ := phone.Chat.accountConversationID(ctx); id != hex.EncodeToString(b.AccountConv) {
		t.Fatalf("account DAG id %q, want the linked account's", id)
	}
}

// A bundle whose certificate is forged — for another device, or signed by
// another account's root — is refused and leaves the node as it was.
func TestLinkRefusesForgedCertificates(t *testing.T) {
	ctx := context.Background()
	ada := startTestNode(t, loopbackConfig(t))
	eve := startTestNode(t, loopbackConfig(t))
	phone := startTestNode(t, loopbackConfig(t))
	for n, name := range map[*Node]string{ada: "Ada", eve: "Eve"} {
		if _, err := n.CreateAccount(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	adaAcct := ada.Chat.id.AccountID()
	good, err := ada.Chat.id.Keyring.Account.Certify(phone.Chat.id.DeviceID(), "phone", time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	otherDevice, _ := ada.Chat.id.Keyring.Account.Certify(eve.Chat.id.DeviceID(), "not the phone", time.Now(), time.Time{})
	byEve, _ := eve.Chat.id.Keyring.Account.Certify(phone.Chat.id.DeviceID(), "phone", time.Now(), time.Time{})
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-1] ^= 1
	for name, cert := range map[string][]byte{"another device's": otherDevice, "another account's": byEve, "tampered": tampered} {
		b, err := ada.Chat.linkBundle(cert)
		if err != nil {
			t.Fatal(err)
		}
		if err := phone.adoptAccount(ctx, adaAcct, b, nil); !errors.Is(err, ErrBadPeer) {
			t.Fatalf("%s certificate: adopt = %v, want ErrBadPeer", name, err)
		}
		if phone.Chat == nil || phone.Chat.id.AccountID() == adaAcct {
			t.Fatalf("%s certificate changed the node", name)
		}
	}
	// A root key that is not the code's account is refused too.
	b, _ := ada.Chat.linkBundle(good)
	b.AccountSeed = eve.Chat.id.Keyring.Account.Seed()
	if err := phone.adoptAccount(ctx, adaAcct, b, nil); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("another account's root: adopt = %v, want ErrBadPeer", err)
	}
}

// Two accounts, with two and three devices: everyone writes from every
// device, and every device of both accounts ends up with every message.
func TestTwoAccountsWithTwoAndThreeDevicesConverge(t *testing.T) {
	ctx := context.Background()
	adaLaptop := startTestNode(t, loopbackConfig(t))
	bobDesk := startTestNode(t, loopbackConfig(t))
	setUpAccounts(t, map[*Node]string{adaLaptop: "Ada", bobDesk: "Bob"})
	conv := befriend(t, adaLaptop, bobDesk)
	link := func(from *Node) *Node {
		n := startTestNode(t, loopbackConfig(t))
		testsupport.Connect(t, n.Host, from.Host)
		code, err := from.Chat.devices.CreateLinkCode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Link(ctx, code.Link); err != nil {
			t.Fatal(err)
		}
		testsupport.Eventually(t, 20*time.Second, "the linked device to hold the conversation", func() bool {
			_, err := n.Chat.conversation(conv)
			return err == nil
		})
		return n
	}
	adaPhone := link(adaLaptop)
	bobLaptop := link(bobDesk)
	bobPhone := link(bobLaptop) // linked by a device that was itself linked: none is primary
	all := []*Node{adaLaptop, adaPhone, bobDesk, bobLaptop, bobPhone}
	names := []string{"ada laptop", "ada phone", "bob desk", "bob laptop", "bob phone"}
	for i, n := range all {
		testsupport.Eventually(t, 20*time.Second, names[i]+" to write", func() bool {
			_, err := n.Send(ctx, conv, "hello from "+names[i], "")
			return err == nil
		})
	}
	missing := func() []string {
		var out []string
		for i, n := range all {
			for _, name := range names {
				if !hasText(t, n, conv, "hello from "+name) {
					out = append(out, names[i]+" lacks "+name)
				}
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %v", missing())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := bobPhone.Chat.id.AccountID(); got != bobDesk.Chat.id.AccountID() {
		t.Fatalf("the phone linked by Bob's laptop is in account %s", got)
	}
}
