package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Attachment is a message's file as displayed. Name, type, size and the
// media fields come from the (end-to-end encrypted) manifest the sender
// wrote; State says what this node holds of the file.
type Attachment struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Size       uint64 `json:"size"`
	Width      uint32 `json:"width,omitempty"`
	Height     uint32 `json:"height,omitempty"`
	DurationMS uint32 `json:"durationMs,omitempty"`
	// Waveform is a voice note's loudness, one value 0-255 per sample.
	Waveform []int `json:"waveform,omitempty"`
	// Thumb: the sender made a thumbnail; ThumbReady: this node holds it.
	Thumb      bool `json:"thumb"`
	ThumbReady bool `json:"thumbReady"`
	AttachmentStatus
}

// Attachment states.
const (
	AttachmentMissing  = "missing"  // nothing held, nothing running
	AttachmentFetching = "fetching" // a download is running
	AttachmentPartial  = "partial"  // some chunks held, no download running
	AttachmentComplete = "complete" // every chunk held: the file can be opened
	AttachmentFailed   = "failed"   // the last download failed (Error says why)
)

// AttachmentStatus is how much of a file this node holds.
type AttachmentStatus struct {
	State string `json:"state"`
	// Have and Total count the file's sealed bytes (padding included), so
	// Have/Total is the download's progress.
	Have  uint64 `json:"have"`
	Total uint64 `json:"total"`
	Error string `json:"error,omitempty"`
}

// AttachmentUpload is a file to send as a message. File is read once,
// streamed: the node never holds the whole file in memory.
type AttachmentUpload struct {
	Name string
	Type string
	// Size is the exact size in bytes; the node refuses a larger file
	// before reading it, and a shorter or longer body.
	Size                      int64
	Width, Height, DurationMS uint32
	Waveform                  []byte
	// Caption is the message's text (may be empty).
	Caption  string
	ReplyTo  string
	ClientID string
	// Thumb is a small preview made by the sender (JPEG, PNG or WebP),
	// nil for none.
	Thumb                   []byte
	ThumbType               string
	ThumbWidth, ThumbHeight uint32
	File                    io.Reader
}

// AttachmentFile is a file ready to be served: WriteTo writes its
// plaintext. Size is exact.
type AttachmentFile struct {
	Name, Type string
	Size       int64
	WriteTo    func(ctx context.Context, w io.Writer) error
}

// AttachmentBackend is the attachment side of a personal node.
type AttachmentBackend interface {
	// PostAttachment stores a file and posts the message that carries it;
	// created is false when up.ClientID named a message sent before.
	PostAttachment(ctx context.Context, conv string, up AttachmentUpload) (m Message, created bool, err error)
	// AttachmentFile opens the file (thumb=false) or the thumbnail of a
	// message; ErrConflict with CodeNotDownloaded when it is not all here.
	AttachmentFile(ctx context.Context, conv, msg string, thumb bool) (AttachmentFile, error)
	// FetchAttachment starts downloading a message's file (a no-op when it
	// is complete or already downloading) and returns its status.
	FetchAttachment(ctx context.Context, conv, msg string) (AttachmentStatus, error)
	// CancelFetch stops a running download; what arrived is kept, so a
	// later FetchAttachment resumes.
	CancelFetch(ctx context.Context, conv, msg string) (AttachmentStatus, error)
	// AttachmentStatus reports how much of a message's file is here.
	AttachmentStatus(ctx context.Context, conv, msg string) (AttachmentStatus, error)
}

// Limits of an upload besides the file.
const (
	// MaxUploadSize is the largest file (protocol.MaxFileSize, 256 MiB).
	MaxUploadSize = 256 << 20
	// MaxThumbSize caps the sender's thumbnail.
	MaxThumbSize = 512 << 10
	maxMetaSize  = 16 << 10
)

// uploadMeta is the first part of an upload: everything but the bytes.
type uploadMeta struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Size        int64  `json:"size"`
	Width       uint32 `json:"width"`
	Height      uint32 `json:"height"`
	DurationMS  uint32 `json:"durationMs"`
	Waveform    []int  `json:"waveform"`
	Caption     string `json:"caption"`
	ReplyTo     string `json:"replyTo"`
	ClientID    string `json:"clientId"`
	ThumbType   string `json:"thumbType"`
	ThumbWidth  uint32 `json:"thumbWidth"`
	ThumbHeight uint32 `json:"thumbHeight"`
}

func (s *Server) registerAttachments(api *http.ServeMux) {
	b, ok := s.cfg.Backend.(AttachmentBackend)
	if !ok {
		return // the catch-all answers 404: this node has no attachments
	}
	api.HandleFunc("POST /api/v1/conversations/{id}/attachments", func(w http.ResponseWriter, r *http.Request) {
		up, err := readUpload(w, r)
		if err != nil {
			replyStatus(w, 0, nil, err)
			return
		}
		m, created, err := b.PostAttachment(r.Context(), r.PathValue("id"), up)
		status := http.StatusCreated
		if !created {
			status = http.StatusOK
		}
		replyStatus(w, status, m, err)
	})
	serve := func(thumb bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			f, err := b.AttachmentFile(r.Context(), r.PathValue("id"), r.PathValue("msg"), thumb)
			if err != nil {
				replyStatus(w, 0, nil, err)
				return
			}
			h := w.Header()
			h.Set("Content-Type", servedType(f.Type))
			h.Set("Content-Length", strconv.FormatInt(f.Size, 10))
			h.Set("X-Content-Type-Options", "nosniff")
			// A file from another member is hostile until shown
			// otherwise: it runs nothing, even opened on its own.
			h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox")
			h.Set("Cache-Control", "private, max-age=31536000, immutable")
			disp := "attachment"
			if inlineType(f.Type) && r.URL.Query().Get("download") == "" {
				disp = "inline"
			}
			h.Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": f.Name}))
			if r.Method == http.MethodHead {
				return
			}
			if err := f.WriteTo(r.Context(), w); err != nil && r.Context().Err() == nil {
				// Headers are gone: all that is left is to cut the body
				// short, which the client sees as a failed download.
				s.log.Warn("attachment: serving failed", "err", err)
				panic(http.ErrAbortHandler)
			}
		}
	}
	api.HandleFunc("GET /api/v1/conversations/{id}/attachments/{msg}/file", serve(false))
	api.HandleFunc("GET /api/v1/conversations/{id}/attachments/{msg}/thumb", serve(true))
	api.HandleFunc("GET /api/v1/conversations/{id}/attachments/{msg}/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.AttachmentStatus(r.Context(), r.PathValue("id"), r.PathValue("msg"))
		reply(w, st, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/attachments/{msg}/fetch", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.FetchAttachment(r.Context(), r.PathValue("id"), r.PathValue("msg"))
		replyStatus(w, http.StatusAccepted, st, err)
	})
	api.HandleFunc("DELETE /api/v1/conversations/{id}/attachments/{msg}/fetch", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.CancelFetch(r.Context(), r.PathValue("id"), r.PathValue("msg"))
		reply(w, st, err)
	})
}

// readUpload reads an upload's multipart body up to the file: a "meta"
// part (JSON), an optional "thumb" part, then the "file" part, which the
// caller streams. Nothing is read past the declared size.
func readUpload(w http.ResponseWriter, r *http.Request) (AttachmentUpload, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	// The body is the file plus a few headers and the thumbnail.
	r.Body = http.MaxBytesReader(w, r.Body, MaxUploadSize+MaxThumbSize+maxMetaSize+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		return AttachmentUpload{}, bad("an upload is multipart/form-data with parts meta, thumb (optional) and file: %v", err)
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "meta" {
		return AttachmentUpload{}, bad("the first part must be meta (JSON)")
	}
	var meta uploadMeta
	dec := json.NewDecoder(io.LimitReader(part, maxMetaSize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return AttachmentUpload{}, WithCode(CodeBadJSON, bad("meta: %v", err))
	}
	up := AttachmentUpload{
		Name: meta.Name, Type: meta.Type, Size: meta.Size, Width: meta.Width, Height: meta.Height,
		DurationMS: meta.DurationMS, Caption: meta.Caption, ReplyTo: meta.ReplyTo, ClientID: meta.ClientID,
		ThumbType: meta.ThumbType, ThumbWidth: meta.ThumbWidth, ThumbHeight: meta.ThumbHeight,
	}
	switch {
	case meta.Size < 0:
		return up, bad("size must be given (bytes)")
	case meta.Size > MaxUploadSize:
		return up, WithCode(CodeFileTooLarge, fmt.Errorf("%w: the file is %s, the limit is %s", ErrTooLarge, byteSize(meta.Size), byteSize(MaxUploadSize)))
	case meta.ClientID != "" && !validClientID(meta.ClientID):
		return up, bad("clientId must be 16 to 64 characters of A-Z, a-z, 0-9, - and _")
	}
	for _, v := range meta.Waveform {
		if v < 0 || v > 255 {
			return up, bad("waveform values are 0 to 255")
		}
		up.Waveform = append(up.Waveform, byte(v))
	}
	part, err = mr.NextPart()
	if err == nil && part.FormName() == "thumb" {
		up.Thumb, err = io.ReadAll(io.LimitReader(part, MaxThumbSize+1))
		if err != nil {
			return up, bad("thumb: %v", err)
		}
		if len(up.Thumb) > MaxThumbSize {
			return up, WithCode(CodeTooLarge, fmt.Errorf("%w: the thumbnail is over %s", ErrTooLarge, byteSize(MaxThumbSize)))
		}
		if up.ThumbType == "" {
			up.ThumbType = part.Header.Get("Content-Type")
		}
		part, err = mr.NextPart()
	}
	if err != nil || part.FormName() != "file" {
		return up, bad("the last part must be file")
	}
	up.File = part
	return up, nil
}

// inlineType: media a browser shows without running anything. SVG is
// left out (it can carry script), and so is everything else.
func inlineType(t string) bool {
	switch strings.ToLower(t) {
	case "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
		"video/mp4", "video/webm", "video/ogg",
		"audio/webm", "audio/ogg", "audio/mpeg", "audio/mp4", "audio/wav", "audio/aac", "audio/flac":
		return true
	}
	return false
}

// servedType is the Content-Type a file is served with: its own when the
// browser may show it, else a download.
func servedType(t string) string {
	if inlineType(t) {
		return strings.ToLower(t)
	}
	return "application/octet-stream"
}
