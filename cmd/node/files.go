package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	_ "image/gif" // decoders for thumbnails
	"image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/glitr-chat/glitr/webui"
)

// thumbEdge is the longest side of a thumbnail the CLI makes of an image
// (the browser makes the same).
const thumbEdge = 320

// sendFile uploads path as a message of conv with caption, streaming the
// file: nothing larger than a chunk of it is held in memory.
func sendFile(ctx context.Context, x *call, conv, path, caption, replyTo, clientID string) (webui.Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return webui.Message{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return webui.Message{}, err
	}
	if !st.Mode().IsRegular() {
		return webui.Message{}, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > webui.MaxUploadSize {
		return webui.Message{}, fmt.Errorf("%s is %d MiB: the largest attachment is %d MiB", path, st.Size()>>20, webui.MaxUploadSize>>20)
	}
	meta := map[string]any{
		"name": filepath.Base(path), "type": fileType(f, path), "size": st.Size(),
		"caption": caption, "replyTo": replyTo, "clientId": clientID,
	}
	var thumb []byte
	if strings.HasPrefix(meta["type"].(string), "image/") && st.Size() <= 64<<20 {
		if img, _, err := image.Decode(f); err == nil {
			b := img.Bounds()
			meta["width"], meta["height"] = b.Dx(), b.Dy()
			if t, tw, th, err := makeThumb(img); err == nil {
				thumb = t
				meta["thumbType"], meta["thumbWidth"], meta["thumbHeight"] = "image/jpeg", tw, th
			}
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return webui.Message{}, err
	}

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeUpload(mw, meta, thumb, f))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.api.base+"/api/v1/conversations/"+url.PathEscape(conv)+"/attachments", pr)
	if err != nil {
		return webui.Message{}, err
	}
	req.Header.Set("Authorization", "Bearer "+x.api.token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	hc := *x.api.http
	hc.Timeout = 0 // a large file takes as long as it takes
	res, err := hc.Do(req)
	if err != nil {
		return webui.Message{}, &unreachableError{base: x.api.base, err: err}
	}
	defer res.Body.Close()
	var m webui.Message
	if err := readAnswer(res, &m); err != nil {
		return webui.Message{}, err
	}
	return m, nil
}

func writeUpload(mw *multipart.Writer, meta map[string]any, thumb []byte, f io.Reader) error {
	w, err := mw.CreateFormField("meta")
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(meta); err != nil {
		return err
	}
	if thumb != nil {
		if w, err = mw.CreateFormFile("thumb", "thumb.jpg"); err != nil {
			return err
		}
		if _, err := w.Write(thumb); err != nil {
			return err
		}
	}
	if w, err = mw.CreateFormFile("file", "file"); err != nil {
		return err
	}
	if _, err := io.Copy(w, f); err != nil {
		return err
	}
	return mw.Close()
}

// fileType names a file's media type: by its extension, else by its first
// bytes.
func fileType(f *os.File, path string) string {
	if t := mime.TypeByExtension(strings.ToLower(filepath.Ext(path))); t != "" {
		if mt, _, err := mime.ParseMediaType(t); err == nil {
			return mt
		}
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	t, _, _ := mime.ParseMediaType(http.DetectContentType(head[:n]))
	return t
}

// makeThumb scales img so that its longer side is at most thumbEdge and
// encodes it as JPEG.
func makeThumb(img image.Image) ([]byte, int, int, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, 0, 0, errors.New("empty image")
	}
	if w > thumbEdge || h > thumbEdge {
		if w >= h {
			w, h = thumbEdge, max(1, h*thumbEdge/w)
		} else {
			w, h = max(1, w*thumbEdge/h), thumbEdge
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: 75}); err != nil {
		return nil, 0, 0, err
	}
	return out.Bytes(), w, h, nil
}

// readAnswer decodes a JSON answer, or the API error it carries.
func readAnswer(res *http.Response, out any) error {
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = res.Status
		}
		return errors.New(e.Error)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

func setupSave(fs *flag.FlagSet) runFunc {
	conv := fs.String("conv", "", "the message's conversation (default: found by asking each)")
	wait := fs.Duration("wait", 10*time.Minute, "how long to wait for the download")
	return func(ctx context.Context, x *call) error {
		x.api.http.Timeout = 0
		msg, dir := x.arg(0), x.arg(1)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		c := *conv
		if c == "" {
			var err error
			if c, err = findConversation(ctx, x, msg); err != nil {
				return err
			}
		}
		path, err := saveAttachment(ctx, x, c, msg, dir, *wait)
		if err != nil {
			return err
		}
		fmt.Fprintln(x.g.stdout, path)
		return nil
	}
}

// findConversation asks each conversation for the message's attachment.
func findConversation(ctx context.Context, x *call, msg string) (string, error) {
	var convs []webui.Conversation
	if err := x.api.get(ctx, "/api/v1/conversations", &convs); err != nil {
		return "", err
	}
	for _, c := range convs {
		var st webui.AttachmentStatus
		if x.api.get(ctx, "/api/v1/conversations/"+url.PathEscape(c.ID)+"/attachments/"+url.PathEscape(msg)+"/status", &st) == nil {
			return c.ID, nil
		}
	}
	return "", fmt.Errorf("no conversation has a message %s with an attachment", msg)
}

// saveAttachment downloads a message's attachment (fetching it from the members
// first when this node lacks chunks) and writes it into DIR under its
// name, never over an existing file.
func saveAttachment(ctx context.Context, x *call, conv, msg, dir string, wait time.Duration) (string, error) {
	base := "/api/v1/conversations/" + url.PathEscape(conv) + "/attachments/" + url.PathEscape(msg)
	var st webui.AttachmentStatus
	if err := x.api.post(ctx, base+"/fetch", struct{}{}, &st); err != nil {
		return "", err
	}
	deadline := time.Now().Add(wait)
	for st.State != webui.AttachmentComplete {
		switch {
		case st.State == webui.AttachmentFailed:
			return "", fmt.Errorf("download failed: %s", st.Error)
		case time.Now().After(deadline):
			return "", fmt.Errorf("download not finished after %s (%d of %d bytes); run save again to resume", wait, st.Have, st.Total)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if err := x.api.get(ctx, base+"/status", &st); err != nil {
			return "", err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, x.api.base+base+"/file?download=1", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+x.api.token)
	hc := *x.api.http
	hc.Timeout = 0
	res, err := hc.Do(req)
	if err != nil {
		return "", &unreachableError{base: x.api.base, err: err}
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", readAnswer(res, nil)
	}
	name := "attachment"
	if _, params, err := mime.ParseMediaType(res.Header.Get("Content-Disposition")); err == nil && params["filename"] != "" {
		name = params["filename"]
	}
	// The name is the sender's: keep only its last element.
	name = filepath.Base(filepath.Clean("/" + name))
	if name == "/" || name == "." {
		name = "attachment"
	}
	out, path, err := createFree(dir, name)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, res.Body); err != nil {
		out.Close()
		os.Remove(path)
		return "", fmt.Errorf("download broke off: %w", err)
	}
	if err := out.Close(); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// createFree creates name in dir, or "name (2)" and so on when taken.
func createFree(dir, name string) (*os.File, string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 1; i < 1000; i++ {
		try := name
		if i > 1 {
			try = fmt.Sprintf("%s (%d)%s", stem, i, ext)
		}
		path := filepath.Join(dir, try)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, path, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("%s: too many files named %s", dir, name)
}
