package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/webui"
)

func TestMakeThumbKeepsAspect(t *testing.T) {
	for _, c := range []struct{ w, h, tw, th int }{{1600, 900, 320, 180}, {300, 1200, 80, 320}, {100, 50, 100, 50}} {
		img := image.NewRGBA(image.Rect(0, 0, c.w, c.h))
		img.Set(1, 1, color.RGBA{255, 0, 0, 255})
		b, w, h, err := makeThumb(img)
		if err != nil || w != c.tw || h != c.th {
			t.Fatalf("%dx%d: %dx%d %v", c.w, c.h, w, h, err)
		}
		dec, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil || dec.Bounds().Dx() != c.tw || dec.Bounds().Dy() != c.th {
			t.Fatalf("%dx%d: thumbnail does not decode to its size: %v", c.w, c.h, err)
		}
	}
}

// A saved file never overwrites one that is there.
func TestCreateFreeNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cat.png"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, path, err := createFree(dir, "cat.png")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if filepath.Base(path) != "cat (2).png" {
		t.Fatalf("path %s", path)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "cat.png")); string(b) != "mine" {
		t.Fatal("existing file overwritten")
	}
}

// glitr send --file and glitr save between two running nodes: the file
// arrives byte for byte under its own name, and a second save does not
// overwrite the first.
func TestSendFileAndSave(t *testing.T) {
	bin := glitrBinary(t)
	sender, receiver := initLoopback(t, bin), initLoopback(t, bin)
	startProc(t, bin, "--data", sender, "--log-level", "warn", "run")
	startProc(t, bin, "--data", receiver, "--log-level", "warn", "run")
	ctx := context.Background()
	card := func(data string) string {
		var out bytes.Buffer
		if err := run(ctx, []string{"--data", data, "card"}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	for _, p := range [][2]string{{sender, receiver}, {receiver, sender}} {
		if err := run(ctx, []string{"--data", p[0], "contact", "add", card(p[1])}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newClient(&globals{data: sender})
	if err != nil {
		t.Fatal(err)
	}
	var cs []webui.Contact
	if err := c.get(ctx, "/api/v1/contacts", &cs); err != nil || len(cs) != 1 {
		t.Fatalf("contacts %v: %v", cs, err)
	}
	var conv webui.Conversation
	if err := c.post(ctx, "/api/v1/conversations", map[string]any{"members": []string{cs[0].Account}}, &conv); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "report.pdf")
	body := make([]byte, 700<<10)
	rand.Read(body)
	if err := os.WriteFile(src, body, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"--data", sender, "send", "--file", src, conv.ID, "the", "report"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	msg := strings.Fields(out.String())[0]
	dir := t.TempDir()
	var saved string
	testsupport.Eventually(t, 30*time.Second, "the message on the receiver", func() bool {
		out.Reset()
		if run(ctx, []string{"--data", receiver, "save", msg, dir}, &out, io.Discard) != nil {
			return false
		}
		saved = strings.TrimSpace(out.String())
		return true
	})
	if got, err := os.ReadFile(saved); err != nil || !bytes.Equal(got, body) || filepath.Base(saved) != "report.pdf" {
		t.Fatalf("saved %s: %v", saved, err)
	}
	out.Reset()
	if err := run(ctx, []string{"--data", receiver, "save", "--conv", conv.ID, msg, dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if again := strings.TrimSpace(out.String()); filepath.Base(again) != "report (2).pdf" {
		t.Fatalf("second save: %s", again)
	}
	out.Reset()
	if err := run(ctx, []string{"--data", receiver, "log", conv.ID}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "[report.pdf, application/pdf, 700.0 KiB] the report") {
		t.Fatalf("log: %q %v", out.String(), err)
	}
}
