package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// glitr runs the CLI in-process and returns its stdout.
func glitr(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("glitr %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// try runs the CLI and returns its stdout and error, for polling.
func try(args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), err
}

// startCLINode runs `glitr run` in the background until the test ends.
func startCLINode(t *testing.T, data string, initFlags ...string) {
	t.Helper()
	glitr(t, append([]string{"--data", data, "init", "--loopback", "--port", "0", "--api", "127.0.0.1:0"}, initFlags...)...)
	// Port 0 for every transport: tests never collide.
	cfg := filepath.Join(data, "config.json")
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.ReplaceAll(raw, []byte("/4101/"), []byte("/0/")), 0o600)
	raw, _ = os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.ReplaceAll(raw, []byte("/4102/"), []byte("/0/")), 0o600)
	raw, _ = os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.ReplaceAll(raw, []byte("/tcp/4101\""), []byte("/tcp/0\"")), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var out, errb bytes.Buffer
		done <- run(ctx, []string{"--data", data, "--log-level", "error", "run"}, &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run exited with %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("node did not stop within the shutdown budget")
		}
	})
	waitFor(t, "the node's API", func() bool {
		var out, errb bytes.Buffer
		return run(context.Background(), []string{"--data", data, "id"}, &out, &errb) == nil
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two nodes chat through the CLI alone, as in the README's tour.
func TestTwoNodesChatThroughTheCLI(t *testing.T) {
	root := t.TempDir()
	alice, bob := filepath.Join(root, "alice"), filepath.Join(root, "bob")
	startCLINode(t, alice)
	startCLINode(t, bob)

	added := glitr(t, "--data", alice, "contact", "add", strings.TrimSpace(glitr(t, "--data", bob, "card")))
	if !strings.Contains(added, "safety number") {
		t.Fatalf("contact add printed %q", added)
	}
	glitr(t, "--data", bob, "contact", "add", strings.TrimSpace(glitr(t, "--data", alice, "card")))
	bobAccount := strings.Fields(glitr(t, "--data", alice, "contacts"))[0]
	conv := strings.TrimSpace(glitr(t, "--data", alice, "chat", "new", "--title", "lunch", bobAccount))
	if len(conv) != 32 {
		t.Fatalf("chat new printed %q", conv)
	}
	glitr(t, "--data", alice, "send", conv, "hello", "Bob")
	waitFor(t, "Bob to see the message", func() bool {
		log, err := try("--data", bob, "log", conv[:8])
		return err == nil && strings.Contains(log, "hello Bob")
	})
	if chats := glitr(t, "--data", bob, "chats"); !strings.Contains(chats, "lunch") || !strings.Contains(chats, "1 unread") {
		t.Fatalf("bob's chats: %q", chats)
	}
	glitr(t, "--data", bob, "send", conv[:8], "hi Alice")
	glitr(t, "--data", bob, "read", conv[:8])
	waitFor(t, "Alice to see the reply and her message read", func() bool {
		log, err := try("--data", alice, "log", conv)
		return err == nil && strings.Contains(log, "hi Alice") && strings.Contains(log, "hello Bob  [read]")
	})
}

// Strangers become contacts with an invite link, as in the README.
func TestInviteThroughTheCLI(t *testing.T) {
	root := t.TempDir()
	alice, bob := filepath.Join(root, "alice"), filepath.Join(root, "bob")
	startCLINode(t, alice)
	var boot string
	for _, f := range strings.Fields(glitr(t, "--data", alice, "id", "--addrs")) {
		if strings.HasSuffix(strings.Split(f, "/p2p/")[0], "/quic-v1") {
			boot = f
			break
		}
	}
	startCLINode(t, bob, "--bootstrap", boot)
	words := glitr(t, "--data", alice, "account", "setup", "--name", "Alice")
	if !strings.Contains(words, "24. ") {
		t.Fatalf("account setup printed %q", words)
	}
	glitr(t, "--data", bob, "account", "setup", "--name", "Bob")
	qr := filepath.Join(root, "invite.svg")
	link := strings.TrimSpace(glitr(t, "--data", alice, "invite", "--ttl", "1h", "--qr", qr))
	if svg, err := os.ReadFile(qr); err != nil || !bytes.HasPrefix(svg, []byte("<svg")) {
		t.Fatalf("QR file: %v", err)
	}
	accepted := glitr(t, "--data", bob, "accept", link)
	conv := strings.TrimPrefix(strings.Split(strings.TrimSpace(accepted), "\n")[1], "conversation ")
	glitr(t, "--data", bob, "send", conv, "thanks for the invite")
	waitFor(t, "Alice to see Bob's message", func() bool {
		log, err := try("--data", alice, "log", conv)
		return err == nil && strings.Contains(log, "thanks for the invite")
	})
	if contacts := glitr(t, "--data", alice, "contacts"); !strings.Contains(contacts, "Bob") {
		t.Fatalf("Alice's contacts: %q", contacts)
	}
	if _, err := try("--data", bob, "accept", link); err == nil {
		t.Fatal("a used invite was accepted again")
	}
}

func TestCLIErrors(t *testing.T) {
	data := filepath.Join(t.TempDir(), "n")
	var out, errb bytes.Buffer
	// Not initialized: a precise error, no directory created behind the user's back.
	err := run(context.Background(), []string{"--data", data, "run"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "not initialized") {
		t.Fatalf("run on an empty dir: %v", err)
	}
	if err := run(context.Background(), []string{"--data", data, "status"}, &out, &errb); err == nil {
		t.Fatal("status without a node succeeded")
	}
	var ee exitError
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errb); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("unknown command: %v", err)
	}
	if err := run(context.Background(), []string{"--data", data, "init", "--profile", "server"}, &out, &errb); err == nil {
		t.Fatal("unknown profile accepted")
	}
	glitr(t, "--data", data, "init", "--profile", "relay", "--loopback")
	if err := run(context.Background(), []string{"--data", data, "run"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "glitr relay") {
		t.Fatalf("run on a relay dir: %v", err)
	}
}

// A second device joins the account through the CLI, shows in the device
// list, and is revoked.
func TestLinkAndRevokeDeviceThroughTheCLI(t *testing.T) {
	root := t.TempDir()
	laptop, phone := filepath.Join(root, "laptop"), filepath.Join(root, "phone")
	startCLINode(t, laptop)
	var boot string
	for _, f := range strings.Fields(glitr(t, "--data", laptop, "id", "--addrs")) {
		if strings.HasSuffix(strings.Split(f, "/p2p/")[0], "/quic-v1") {
			boot = f
			break
		}
	}
	startCLINode(t, phone, "--bootstrap", boot)
	glitr(t, "--data", laptop, "account", "setup", "--name", "Ada")
	code := strings.TrimSpace(glitr(t, "--data", laptop, "device", "link-code"))
	if !strings.HasPrefix(code, "web+glitr:link/") {
		t.Fatalf("link-code printed %q", code)
	}
	glitr(t, "--data", phone, "link", code)
	if _, err := try("--data", phone, "link", code); err == nil {
		t.Fatal("a used link code linked again")
	}
	var phoneDevice string
	waitFor(t, "the laptop to list the phone online", func() bool {
		out, err := try("--data", laptop, "devices")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 2 || !strings.Contains(lines[0], "this device") || !strings.HasSuffix(lines[1], "online") {
			return false
		}
		phoneDevice = strings.Fields(lines[1])[0]
		return true
	})
	waitFor(t, "the phone to carry the account's name", func() bool {
		out, err := try("--data", phone, "devices")
		return err == nil && strings.Count(out, "\n") == 2
	})
	glitr(t, "--data", laptop, "device", "revoke", phoneDevice)
	waitFor(t, "the phone to be listed as revoked", func() bool {
		out, err := try("--data", laptop, "devices")
		return err == nil && strings.Contains(out, "revoked")
	})
}

// A backup written by one node restores the account on a fresh one; wrong
// words are refused with a precise error.
func TestBackupAndRestoreThroughTheCLI(t *testing.T) {
	root := t.TempDir()
	old, fresh := filepath.Join(root, "old"), filepath.Join(root, "fresh")
	startCLINode(t, old)
	startCLINode(t, fresh)
	setup := glitr(t, "--data", old, "account", "setup", "--name", "Ada")
	var words []string
	for _, f := range strings.Fields(setup) {
		if !strings.HasSuffix(f, ".") && f == strings.ToLower(f) && !strings.ContainsAny(f, ".,:;()") {
			words = append(words, f)
		}
	}
	words = words[len(words)-24:]
	file := filepath.Join(root, "ada.backup")
	glitr(t, "--data", old, "backup", file)
	if _, err := try("--data", old, "backup", file); err == nil {
		t.Fatal("backup overwrote an existing file")
	}
	restore := func(w string) (string, error) {
		var out, errb bytes.Buffer
		err := runIO(context.Background(), []string{"--data", fresh, "restore", file}, strings.NewReader(w+"\n"), &out, &errb)
		return out.String() + errb.String(), err
	}
	bad := append([]string{words[1], words[0]}, words[2:]...)
	if _, err := restore(strings.Join(bad, " ")); err == nil || !strings.Contains(err.Error(), "recovery") {
		t.Fatalf("restore with wrong words: %v", err)
	}
	if out, err := restore(strings.Join(words, " ")); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	// The restored node carries the account (its name is set: no second
	// set-up), and it refuses a second restore.
	if _, err := try("--data", fresh, "account", "setup", "--name", "Eve"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("account setup after a restore: %v", err)
	}
	if _, err := restore(strings.Join(words, " ")); err == nil {
		t.Fatal("a node in use accepted a restore")
	}
}

// A history longer than a page is read whole with `log CONV -n N` (the
// flag after the conversation), and usage errors are precise.
func TestLogReadsWholeHistory(t *testing.T) {
	root := t.TempDir()
	alice, bob := filepath.Join(root, "alice"), filepath.Join(root, "bob")
	startCLINode(t, alice)
	startCLINode(t, bob)
	glitr(t, "--data", alice, "contact", "add", strings.TrimSpace(glitr(t, "--data", bob, "card")))
	bobAccount := strings.Fields(glitr(t, "--data", alice, "contacts"))[0]
	conv := strings.TrimSpace(glitr(t, "--data", alice, "chat", "new", bobAccount, "--title", "long"))
	const total = 1234 // three pages of the API's 500
	c, err := newClient(&globals{data: alice})
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		if err := c.post(context.Background(), "/api/v1/conversations/"+conv+"/messages", map[string]string{"text": fmt.Sprintf("line %04d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	lines := func(out string) []string { return strings.Split(strings.TrimRight(out, "\n"), "\n") }
	for _, tc := range []struct {
		args  []string
		first int // index of the first message printed
	}{
		{[]string{"log", conv, "-n", "0"}, 0},
		{[]string{"log", conv[:8], "-n", "1100"}, total - 1100},
		{[]string{"log", "-n", "1234", conv}, 0},
		{[]string{"log", conv, "-n", "99999"}, 0},
		{[]string{"log", conv}, total - 20},
	} {
		got := lines(glitr(t, append([]string{"--data", alice}, tc.args...)...))
		if len(got) != total-tc.first {
			t.Fatalf("glitr %v: %d lines, want %d", tc.args, len(got), total-tc.first)
		}
		for i, l := range got {
			if !strings.Contains(l, fmt.Sprintf("line %04d", tc.first+i)) {
				t.Fatalf("glitr %v: line %d is %q", tc.args, i, l)
			}
		}
	}
	// A text that looks like a flag goes after "--"; words after the text
	// has begun are text.
	glitr(t, "--data", alice, "send", conv, "--", "-5", "degrees")
	glitr(t, "--data", alice, "send", conv, "it", "is", "-5")
	got := lines(glitr(t, "--data", alice, "log", conv, "-n", "2"))
	if len(got) != 2 || !strings.Contains(got[0], "-5 degrees") || !strings.Contains(got[1], "it is -5") {
		t.Fatalf("texts with dashes: %q", got)
	}
	var ee exitError
	for _, bad := range [][]string{
		{"log"}, {"log", conv, conv}, {"log", conv, "-n", "-1"}, {"log", conv, "-x"},
		{"group"}, {"group", "frobnicate"}, {"send", conv},
	} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), append([]string{"--data", alice}, bad...), &out, &errb); !errors.As(err, &ee) || ee.code != 2 || errb.Len() == 0 {
			t.Errorf("glitr %v: %v, stderr %q", bad, err, errb.String())
		}
	}
}
