package node

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
)

// A backup plus the recovery words bring the account back on a fresh
// node: same account key (the contact's safety number does not change),
// profile and contacts, and the conversation with its history from the
// contact; wrong words or a damaged file change nothing.
func TestBackupAndRestoreOnAFreshNode(t *testing.T) {
	ctx := context.Background()
	adaDir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ada, err := Start(ctx, adaDir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	bob := startTestNode(t, loopbackConfig(t))
	words, err := ada.CreateAccount(ctx, "Ada", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.CreateAccount(ctx, "Bob", ""); err != nil {
		t.Fatal(err)
	}
	conv := befriend(t, ada, bob)
	if _, err := bob.Send(ctx, conv, "before the lake", ""); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 10*time.Second, "Bob's message at Ada", func() bool { return hasText(t, ada, conv, "before the lake") })
	// State only the account DAG holds, which the restore must keep with
	// no other device alive (issue 14, item 5): preferences, and the read
	// mark of a conversation read while read receipts are off.
	prefs, err := ada.Preferences(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prefs.Theme, prefs.ReadReceipts = "dark", false
	if err := ada.SetPreferences(ctx, prefs); err != nil {
		t.Fatal(err)
	}
	if err := ada.MarkRead(ctx, conv); err != nil {
		t.Fatal(err)
	}
	var readBefore crdt.Position
	testsupport.Eventually(t, 10*time.Second, "Ada's read mark", func() bool {
		readBefore = readPositionOf(t, ada, conv)
		return len(readBefore) > 0
	})
	backup, err := ada.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adaAccount := ada.Chat.id.AccountID()
	safetyBefore := keyring.SafetyNumber(bob.Chat.id.AccountID(), adaAccount)
	ada.Close() // the phone falls in the lake

	freshDir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Start(ctx, freshDir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	keyringBefore, _ := os.ReadFile(freshDir.file(KeyringFile))
	wrong := strings.Fields(strings.Join(words, " "))
	wrong[0], wrong[1] = wrong[1], wrong[0]
	if err := fresh.Restore(ctx, strings.Join(wrong, " "), backup); err == nil {
		t.Fatal("restore with the words swapped succeeded")
	}
	damaged := append([]byte(nil), backup...)
	damaged[len(damaged)-5] ^= 1
	if err := fresh.Restore(ctx, strings.Join(words, " "), damaged); !errors.Is(err, keyring.ErrBackupTampered) {
		t.Fatalf("restore of a damaged backup = %v, want ErrBackupTampered", err)
	}
	if after, _ := os.ReadFile(freshDir.file(KeyringFile)); string(after) != string(keyringBefore) {
		t.Fatal("a failed restore changed the keyring")
	}
	if info, _ := fresh.Account(ctx); info.State != AccountNew {
		t.Fatalf("after failed restores the state is %q, want new", info.State)
	}

	testsupport.Connect(t, fresh.Host, bob.Host)
	start := time.Now()
	if err := fresh.Restore(ctx, strings.Join(words, " "), backup); err != nil {
		t.Fatal(err)
	}
	if got := fresh.Chat.id.AccountID(); got != adaAccount {
		t.Fatalf("restored account %s, want %s", got, adaAccount)
	}
	if got := keyring.SafetyNumber(bob.Chat.id.AccountID(), fresh.Chat.id.AccountID()); got != safetyBefore {
		t.Fatal("the safety number changed after the restore")
	}
	info, err := fresh.Account(ctx)
	if err != nil || info.Name != "Ada" || info.State != AccountReady {
		t.Fatalf("restored account info %+v, %v", info, err)
	}
	if p, err := fresh.Preferences(ctx); err != nil || p.Theme != "dark" || p.ReadReceipts {
		t.Fatalf("restored preferences %+v, %v: the theme and read receipts were lost", p, err)
	}
	if got := readPositionOf(t, fresh, conv); !slices.Equal(got, readBefore) {
		t.Fatalf("restored read position %v, want %v", got, readBefore)
	}
	testsupport.Eventually(t, 20*time.Second, "the conversation and its history back from Bob", func() bool {
		_, err := fresh.Chat.conversation(conv)
		return err == nil && hasText(t, fresh, conv, "before the lake")
	})
	t.Logf("restored, with history, in %s", time.Since(start).Round(time.Millisecond))
	testsupport.Eventually(t, 15*time.Second, "the restored device to write", func() bool {
		_, err := fresh.Send(ctx, conv, "back from the lake", "")
		return err == nil
	})
	testsupport.Eventually(t, 15*time.Second, "Bob to read the restored device", func() bool { return hasText(t, bob, conv, "back from the lake") })
	// The old device is listed and can be revoked from the new one.
	var old string
	for _, d := range fresh.Chat.Devices() {
		if !d.Self {
			old = d.Device
		}
	}
	if old == "" {
		t.Fatal("the lost device is not in the device list")
	}
	if err := fresh.RevokeDevice(ctx, old); err != nil {
		t.Fatal(err)
	}
}

// readPositionOf is the account's read position in conversation id.
func readPositionOf(t testing.TB, n *Node, id string) crdt.Position {
	t.Helper()
	raw, err := hex.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	n.Chat.mu.RLock()
	acct := n.Chat.account
	n.Chat.mu.RUnlock()
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return acct.acct.ReadPosition(raw)
}
