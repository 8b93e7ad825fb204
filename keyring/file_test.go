package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cheap argon2id parameters for unit tests; the real ones run in one test
// and in BenchmarkKeyringUnlock.
var cheapArgon = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func cheapOpts(seed uint64) []FileOption {
	return []FileOption{WithArgon2Params(cheapArgon), WithArgon2Floor(cheapArgon), WithRand(detRand(seed))}
}

func testKeyring(t testing.TB) *Keyring {
	r := detRand(42)
	acct, _ := NewAccountKey(r)
	dev, _ := NewDeviceKey(r)
	pk, _ := NewPrekey(r, t0)
	ring := NewPrekeyRing(pk)
	ring.Rotate(r, t0.Add(PrekeyRotationPeriod))
	return &Keyring{Account: acct, Device: dev, Prekeys: ring, Secrets: map[string][]byte{"cipher/conv1": []byte("state"), "contact/token": {1, 2, 3}}}
}

func sameKeyring(t *testing.T, a, b *Keyring) {
	t.Helper()
	if (a.Account == nil) != (b.Account == nil) || (a.Account != nil && a.Account.ID() != b.Account.ID()) {
		t.Fatal("account key differs")
	}
	if a.Device.ID() != b.Device.ID() || a.Prekeys.Len() != b.Prekeys.Len() {
		t.Fatal("device or prekeys differ")
	}
	for i := range a.Prekeys.keys {
		if a.Prekeys.keys[i].id != b.Prekeys.keys[i].id || !a.Prekeys.keys[i].created.Equal(b.Prekeys.keys[i].created) {
			t.Fatal("prekey differs")
		}
	}
	if len(a.Secrets) != len(b.Secrets) {
		t.Fatal("secrets differ")
	}
	for k, v := range a.Secrets {
		if !bytes.Equal(b.Secrets[k], v) {
			t.Fatalf("secret %s differs", k)
		}
	}
}

func TestKeyringFilePassphrase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring")
	kr := testKeyring(t)
	if err := WriteFile(path, kr, Passphrase("correct horse"), cheapOpts(1)...); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	got, err := ReadFile(path, Passphrase("correct horse"), cheapOpts(2)...)
	if err != nil {
		t.Fatal(err)
	}
	sameKeyring(t, kr, got)

	before, _ := os.ReadFile(path)
	if _, err := ReadFile(path, Passphrase("wrong"), cheapOpts(2)...); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := ChangeProtection(path, Passphrase("wrong"), Passphrase("new"), cheapOpts(3)...); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("change with wrong passphrase: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("failed operations modified the file")
	}
	if err := ChangeProtection(path, Passphrase("correct horse"), Passphrase("new one"), cheapOpts(4)...); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path, Passphrase("correct horse"), cheapOpts(5)...); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after change: %v", err)
	}
	if got, err = ReadFile(path, Passphrase("new one"), cheapOpts(5)...); err != nil {
		t.Fatal(err)
	}
	sameKeyring(t, kr, got)
	if _, err := ReadFile(path, KeyFile(filepath.Join(dir, "k")), cheapOpts(5)...); !errors.Is(err, ErrProtectionMismatch) {
		t.Fatalf("key file on passphrase keyring: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
}

func TestKeyringFileDowngradeAndTamper(t *testing.T) {
	kr := testKeyring(t)
	strong := Argon2Params{Time: 3, MemoryKiB: 1024, Threads: 1}
	raw, err := SealFile(kr, Passphrase("pw"), WithArgon2Params(strong), WithArgon2Floor(strong), WithRand(detRand(1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(raw, Passphrase("pw"), WithArgon2Floor(strong)); err != nil {
		t.Fatal(err)
	}
	// Rewrite the header with weaker parameters (what an attacker who can
	// write the file would do to speed up guessing).
	var w fileWire
	unmarshalStrict(raw, &w)
	var h fileHeader
	unmarshalStrict(w.Header, &h)
	h.Time = 1
	w.Header, _ = marshal(h)
	weak, _ := marshal(w)
	if _, err := OpenFile(weak, Passphrase("pw"), WithArgon2Floor(strong)); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("downgraded file: %v", err)
	}
	// The default floor rejects cheap files, and writing below the floor
	// is refused too.
	cheap, _ := SealFile(kr, Passphrase("pw"), cheapOpts(1)...)
	if _, err := OpenFile(cheap, Passphrase("pw")); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("cheap file under default floor: %v", err)
	}
	if _, err := SealFile(kr, Passphrase("pw"), WithArgon2Params(cheapArgon)); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("writing below floor: %v", err)
	}
	// A memory bomb is refused before argon2 runs.
	h.Time, h.Memory = 3, 1<<30
	w.Header, _ = marshal(h)
	bomb, _ := marshal(w)
	if _, err := OpenFile(bomb, Passphrase("pw"), WithArgon2Floor(strong)); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("memory bomb: %v", err)
	}
	// A changed salt (inside the AD) or ciphertext reads as a wrong
	// passphrase: AEAD cannot tell them apart, and either way nothing opens.
	tampered := bytes.Clone(cheap)
	tampered[len(tampered)-5] ^= 1
	if _, err := OpenFile(tampered, Passphrase("pw"), cheapOpts(1)...); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("tampered ciphertext: %v", err)
	}
	if _, err := OpenFile(cheap[:20], Passphrase("pw"), cheapOpts(1)...); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestKeyringFileKeyFile(t *testing.T) {
	dir := t.TempDir()
	path, keyPath := filepath.Join(dir, "keyring"), filepath.Join(dir, "keyring.key")
	kr := testKeyring(t)
	kr.Account = nil
	if err := WriteFile(path, kr, KeyFile(keyPath), cheapOpts(1)...); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Fatalf("key file: %v %v", fi, err)
	}
	got, err := ReadFile(path, KeyFile(keyPath))
	if err != nil {
		t.Fatal(err)
	}
	sameKeyring(t, kr, got)
	if _, err := ReadFile(path, Passphrase("x"), cheapOpts(1)...); !errors.Is(err, ErrProtectionMismatch) {
		t.Fatalf("passphrase on key-file keyring: %v", err)
	}
	other := filepath.Join(dir, "other.key")
	os.WriteFile(other, bytes.Repeat([]byte{1}, KeySize), 0o600)
	if _, err := ReadFile(path, KeyFile(other)); !errors.Is(err, ErrWrongKeyFile) {
		t.Fatalf("wrong key file: %v", err)
	}
	os.Chmod(keyPath, 0o644)
	if _, err := ReadFile(path, KeyFile(keyPath)); !errors.Is(err, ErrKeyFilePermissions) {
		t.Fatalf("world-readable key file: %v", err)
	}
	os.Chmod(keyPath, 0o600)
	// Switch to a passphrase.
	if err := ChangeProtection(path, KeyFile(keyPath), Passphrase("pw"), cheapOpts(2)...); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path, Passphrase("pw"), cheapOpts(2)...); err != nil {
		t.Fatal(err)
	}
}

// TestKeyringFileRealParams runs the production parameters once.
func TestKeyringFileRealParams(t *testing.T) {
	if testing.Short() {
		t.Skip("argon2id with production parameters")
	}
	kr := testKeyring(t)
	raw, err := SealFile(kr, Passphrase("pw"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenFile(raw, Passphrase("pw"))
	if err != nil {
		t.Fatal(err)
	}
	sameKeyring(t, kr, got)
}

func TestRecoveryAndBackup(t *testing.T) {
	k, _ := NewRecoveryKey(detRand(5))
	words := k.Words()
	if n := len(strings.Fields(words)); n != 24 {
		t.Fatalf("%d words", n)
	}
	back, err := ParseRecoveryWords(words)
	if err != nil || back != k {
		t.Fatalf("round trip: %v", err)
	}
	ws := strings.Fields(words)
	swapped := append([]string{}, ws...)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	if ws[0] == ws[1] {
		t.Skip("degenerate key")
	}
	typo := append([]string{}, ws...)
	typo[3] = "notaword"
	for name, tc := range map[string]struct {
		s    string
		want error
	}{
		"23 words":     {strings.Join(ws[:23], " "), ErrRecoveryWordCount},
		"unknown word": {strings.Join(typo, " "), ErrRecoveryUnknownWord},
		"swapped":      {strings.Join(swapped, " "), ErrRecoveryChecksum},
	} {
		if _, err := ParseRecoveryWords(tc.s); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}

	acct, _ := NewAccountKey(detRand(6))
	b := Backup{Account: acct, Secrets: map[string][]byte{"epoch/x": {9}}, Created: t0}
	blob, err := SealBackup(detRand(7), k, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenBackup(k, blob)
	if err != nil {
		t.Fatal(err)
	}
	if got.Account.ID() != acct.ID() || !bytes.Equal(got.Secrets["epoch/x"], []byte{9}) || !got.Created.Equal(t0) {
		t.Fatal("backup content differs")
	}
	other, _ := NewRecoveryKey(detRand(8))
	if _, err := OpenBackup(other, blob); !errors.Is(err, ErrWrongRecoveryKey) {
		t.Fatalf("wrong key: %v", err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-3] ^= 1
	if _, err := OpenBackup(k, tampered); !errors.Is(err, ErrBackupTampered) {
		t.Fatalf("tampered body: %v", err)
	}
	// Header tampering (the created time, inside the AD).
	var w fileWire
	unmarshalStrict(blob, &w)
	var h backupHeader
	unmarshalStrict(w.Header, &h)
	h.Created++
	w.Header, _ = marshal(h)
	hdrTampered, _ := marshal(w)
	if _, err := OpenBackup(k, hdrTampered); !errors.Is(err, ErrBackupTampered) {
		t.Fatalf("tampered header: %v", err)
	}
}

func TestSafetyNumber(t *testing.T) {
	a, _ := NewAccountKey(detRand(1))
	b, _ := NewAccountKey(detRand(2))
	m, _ := NewAccountKey(detRand(3))
	ab := SafetyNumber(a.ID(), b.ID())
	if len(ab) != 60 || strings.Trim(ab, "0123456789") != "" {
		t.Fatalf("format %q", ab)
	}
	if SafetyNumber(b.ID(), a.ID()) != ab {
		t.Fatal("not symmetric")
	}
	if SafetyNumber(a.ID(), m.ID()) == ab {
		t.Fatal("a key change kept the number")
	}
	if got := FormatSafetyNumber(ab); len(strings.Fields(got)) != 12 {
		t.Fatalf("formatted %q", got)
	}
}
