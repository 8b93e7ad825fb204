package attachments

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/protocol"
)

func TestAutoDownloadPlan(t *testing.T) {
	small := Manifest{Size: 1 << 20, Padded: PaddedSize(1 << 20)}
	big := Manifest{Size: 100 << 20, Padded: PaddedSize(100 << 20), Thumb: &Thumb{}}
	edge := Manifest{Size: DefaultAutoDownload, Padded: PaddedSize(DefaultAutoDownload)}
	cases := []struct {
		a    AutoDownload
		m    Manifest
		want Plan
	}{
		{AutoDownload{DefaultAutoDownload}, small, Plan{File: true}},
		{AutoDownload{DefaultAutoDownload}, big, Plan{Thumb: true}},
		{AutoDownload{DefaultAutoDownload}, edge, Plan{File: true}},
		{AutoDownload{}, small, Plan{}},
		{AutoDownload{}, big, Plan{Thumb: true}},
	}
	for i, tc := range cases {
		if got := tc.a.Plan(tc.m); got != tc.want {
			t.Errorf("case %d: %+v, want %+v", i, got, tc.want)
		}
	}
}

// A photo with its thumbnail: imported, released by one owner, deleted
// for everyone with both parts.
func TestManifestWithThumbnailLifecycle(t *testing.T) {
	ctx := context.Background()
	s := memStore(t, 0)
	thumbData := randomBytes(t, 20_000)
	tm := importBytes(t, s, thumbData, Meta{Size: 20_000, ChunkSize: protocol.MinChunkSize, Type: "image/webp", Width: 160, Height: 120, Owner: "msg"})
	thumb, err := ThumbOf(tm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ThumbOf(importBytes(t, s, randomBytes(t, MaxThumbSize+1), Meta{Size: MaxThumbSize + 1, Type: "image/webp", Owner: "x"})); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("oversized thumbnail: %v", err)
	}
	photo := importBytes(t, s, randomBytes(t, 300_000), Meta{Size: 300_000, Type: "image/jpeg", Width: 4000, Height: 3000, Thumb: thumb, Owner: "msg"})
	b, err := EncodeManifest(photo)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeManifest(b)
	if err != nil || got.Thumb == nil {
		t.Fatalf("decode: %v", err)
	}
	var out bytes.Buffer
	if err := s.Open(ctx, got.Thumb.Manifest(), &out, nil); err != nil || !bytes.Equal(out.Bytes(), thumbData) {
		t.Fatalf("thumbnail: %v", err)
	}
	if err := s.Hold(ctx, photo.Root, "forward", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseManifest(ctx, photo, "msg"); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, photo, io.Discard, nil); err != nil {
		t.Fatalf("photo still held by another owner: %v", err)
	}
	if err := s.Open(ctx, tm, io.Discard, nil); !errors.Is(err, ErrMissing) {
		t.Fatalf("thumbnail after its only owner released it: %v", err)
	}
	if err := s.DeleteManifest(ctx, photo); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, photo, io.Discard, nil); !errors.Is(err, ErrMissing) {
		t.Fatalf("photo after delete for everyone: %v", err)
	}
}
