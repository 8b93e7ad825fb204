package node

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/keyring"
)

// Onboarding, profile and preferences live in the account DAG; a
// passphrase locks the keyring across restarts; a wrong passphrase
// changes nothing.
func TestAccountOnboardingLockAndUnlock(t *testing.T) {
	ctx := context.Background()
	dir, err := Init(t.TempDir(), loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(ctx, dir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := n.Account(ctx)
	if err != nil || info.State != AccountNew || info.Account == "" {
		t.Fatalf("fresh Account = %+v, %v; want state new with an account key", info, err)
	}
	if _, err := n.CreateAccount(ctx, "  ", ""); !errors.Is(err, ErrBadInput) {
		t.Fatalf("CreateAccount with a blank name = %v, want ErrBadInput", err)
	}
	words, err := n.CreateAccount(ctx, "Ada", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if len(words) != 24 {
		t.Fatalf("%d recovery words, want 24", len(words))
	}
	if _, err := n.CreateAccount(ctx, "Eve", ""); !errors.Is(err, ErrAccountExists) {
		t.Fatalf("second CreateAccount = %v, want ErrAccountExists", err)
	}
	if _, err := os.Stat(dir.file(KeyringKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key file still present after choosing a passphrase: %v", err)
	}
	avatar := "data:image/png;base64,iVBORw0KGgo="
	if err := n.SetProfile(ctx, "Ada L.", avatar); err != nil {
		t.Fatal(err)
	}
	if err := n.SetProfile(ctx, "Ada", "data:text/html;base64,PGI+"); !errors.Is(err, ErrBadInput) {
		t.Fatalf("html avatar = %v, want ErrBadInput", err)
	}
	prefs := DefaultPreferences()
	prefs.Theme, prefs.Language, prefs.ReadReceipts = "dark", "de", false
	if err := n.SetPreferences(ctx, prefs); err != nil {
		t.Fatal(err)
	}
	if err := n.SetPreferences(ctx, Preferences{Theme: "neon"}); !errors.Is(err, ErrBadInput) {
		t.Fatalf("bad theme = %v, want ErrBadInput", err)
	}
	account := info.Account
	n.Close()

	// Restart without the passphrase: locked, nothing served but the state.
	n, err = Start(ctx, dir, Options{Logger: testsupport.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if info, _ := n.Account(ctx); info.State != AccountLocked {
		t.Fatalf("restart state = %q, want locked", info.State)
	}
	if _, err := n.Preferences(ctx); !errors.Is(err, ErrAccountLocked) {
		t.Fatalf("Preferences while locked = %v, want ErrAccountLocked", err)
	}
	before, _ := os.ReadFile(dir.file(KeyringFile))
	if err := n.Unlock(ctx, "wrong horse"); !errors.Is(err, keyring.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase = %v, want ErrWrongPassphrase", err)
	}
	if after, _ := os.ReadFile(dir.file(KeyringFile)); string(after) != string(before) {
		t.Fatal("a wrong passphrase modified the keyring")
	}
	if err := n.Unlock(ctx, "correct horse"); err != nil {
		t.Fatal(err)
	}
	info, err = n.Account(ctx)
	if err != nil || info.State != AccountReady || info.Name != "Ada L." || info.Avatar != avatar || info.Account != account || !info.HasPassphrase {
		t.Fatalf("after unlock Account = %+v, %v", info, err)
	}
	got, err := n.Preferences(ctx)
	if err != nil || got != prefs {
		t.Fatalf("Preferences = %+v, %v; want %+v", got, err, prefs)
	}
}
