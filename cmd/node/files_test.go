package main

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"testing"
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
