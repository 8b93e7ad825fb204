package attachments

import (
	"context"
	"errors"
)

// DefaultAutoDownload is the default cap on files fetched without the
// user asking: 16 MiB, a photo or a voice note but not a film.
const DefaultAutoDownload = 16 << 20

// AutoDownload is the user's setting for what a message's attachment
// fetches on its own when the message arrives: the thumbnail always (it
// is small and shows the message), the file itself only up to MaxBytes.
type AutoDownload struct {
	// MaxBytes caps the padded size of a file fetched without asking;
	// 0 fetches none.
	MaxBytes uint64
}

// Plan is what to fetch of an attachment at once.
type Plan struct {
	// Thumb: fetch the thumbnail first (eagerly).
	Thumb bool
	// File: fetch the file now; otherwise when the user opens it.
	File bool
}

// Plan decides for m. The padded size is compared, so that the decision
// depends only on what the transfer costs.
func (a AutoDownload) Plan(m Manifest) Plan {
	return Plan{Thumb: m.Thumb != nil, File: a.MaxBytes > 0 && m.Padded <= a.MaxBytes}
}

// ReleaseManifest drops owner's hold on the file of m and on its
// thumbnail; each goes when its last owner does. A part never fetched is
// not an error.
func (s *Store) ReleaseManifest(ctx context.Context, m Manifest, owner string) error {
	release := func(root Ref) error {
		if _, err := s.Release(ctx, root, owner); err != nil && !errors.Is(err, ErrNotHeld) {
			return err
		}
		return nil
	}
	err := release(m.Root)
	if m.Thumb != nil {
		err = errors.Join(err, release(m.Thumb.Root))
	}
	return err
}

// DeleteManifest deletes the file of m and its thumbnail, whoever holds
// them: what a node that honours a delete for everyone does.
func (s *Store) DeleteManifest(ctx context.Context, m Manifest) error {
	err := s.Delete(ctx, m.Root)
	if m.Thumb != nil {
		err = errors.Join(err, s.Delete(ctx, m.Thumb.Root))
	}
	return err
}
