package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
)

// fakeFiles is a backend with attachments: it keeps uploads in memory.
type fakeFiles struct {
	fakeBackend
	got *[]AttachmentUpload
	// body of the upload's file, as read
	files map[string]AttachmentFile
}

func (f fakeFiles) PostAttachment(_ context.Context, conv string, up AttachmentUpload) (Message, bool, error) {
	if conv != "c1" {
		return Message{}, false, fmt.Errorf("%w: no such conversation", ErrNotFound)
	}
	body, err := io.ReadAll(up.File)
	if err != nil {
		return Message{}, false, err
	}
	if int64(len(body)) != up.Size {
		return Message{}, false, fmt.Errorf("%w: file is %d bytes, declared %d", ErrBadRequest, len(body), up.Size)
	}
	up.File = bytes.NewReader(body)
	*f.got = append(*f.got, up)
	return Message{ID: "bafy/1", Text: up.Caption, Attachment: &Attachment{Name: up.Name, Type: up.Type, Size: uint64(up.Size)}}, true, nil
}

func (f fakeFiles) AttachmentFile(_ context.Context, conv, msg string, thumb bool) (AttachmentFile, error) {
	a, ok := f.files[msg]
	if !ok || thumb {
		return AttachmentFile{}, WithCode(CodeNotDownloaded, fmt.Errorf("%w: not downloaded", ErrConflict))
	}
	return a, nil
}

func (fakeFiles) FetchAttachment(_ context.Context, conv, msg string) (AttachmentStatus, error) {
	return AttachmentStatus{State: AttachmentFetching, Total: 10}, nil
}

func (fakeFiles) CancelFetch(_ context.Context, conv, msg string) (AttachmentStatus, error) {
	return AttachmentStatus{State: AttachmentPartial, Have: 4, Total: 10}, nil
}

func (fakeFiles) AttachmentStatus(_ context.Context, conv, msg string) (AttachmentStatus, error) {
	if msg != "img" {
		return AttachmentStatus{}, WithCode(CodeNoAttachment, fmt.Errorf("%w: no attachment", ErrNotFound))
	}
	return AttachmentStatus{State: AttachmentComplete, Have: 10, Total: 10}, nil
}

func fileOf(name, typ, body string) AttachmentFile {
	return AttachmentFile{Name: name, Type: typ, Size: int64(len(body)), WriteTo: func(_ context.Context, w io.Writer) error {
		_, err := io.WriteString(w, body)
		return err
	}}
}

func newFileServer(t *testing.T) (http.Handler, *[]AttachmentUpload) {
	t.Helper()
	got := &[]AttachmentUpload{}
	fb := fakeFiles{fakeBackend: fakeBackend{ev: newFakeEvents()}, got: got, files: map[string]AttachmentFile{
		"img":  fileOf("cat.png", "image/png", "PNGDATA"),
		"svg":  fileOf("x.svg", "image/svg+xml", "<svg onload=alert(1)>"),
		"html": fileOf("page.html", "text/html", "<script>alert(1)</script>"),
	}}
	s, err := New(Config{Token: testToken, Backend: fb, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7878}})
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler(), got
}

// upload builds a multipart body: meta, then thumb when given, then file.
func upload(t *testing.T, meta any, thumb []byte, file string) (string, io.Reader) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if meta != nil {
		w, _ := mw.CreateFormField("meta")
		if s, ok := meta.(string); ok {
			io.WriteString(w, s)
		} else {
			json.NewEncoder(w).Encode(meta)
		}
	}
	if thumb != nil {
		w, _ := mw.CreateFormFile("thumb", "thumb.jpg")
		w.Write(thumb)
	}
	w, _ := mw.CreateFormFile("file", "f")
	io.WriteString(w, file)
	mw.Close()
	return mw.FormDataContentType(), &buf
}

func TestAttachmentUpload(t *testing.T) {
	h, got := newFileServer(t)
	post := func(ctype string, body io.Reader) (int, apiError) {
		w := do(t, h, "POST", "/api/v1/conversations/c1/attachments", func(r *http.Request) {
			bearer(r)
			r.Header.Set("Content-Type", ctype)
			r.Body = io.NopCloser(body)
		})
		var e apiError
		json.NewDecoder(w.Body).Decode(&e)
		return w.Code, e
	}
	ct, body := upload(t, map[string]any{"name": "cat.png", "type": "image/png", "size": 5, "caption": "look",
		"waveform": []int{0, 128, 255}, "thumbType": "image/jpeg", "thumbWidth": 8, "thumbHeight": 6}, []byte("THUMB"), "hello")
	if code, e := post(ct, body); code != http.StatusCreated {
		t.Fatalf("upload: %d %+v", code, e)
	}
	up := (*got)[0]
	if up.Name != "cat.png" || up.Caption != "look" || string(up.Thumb) != "THUMB" || up.ThumbWidth != 8 ||
		!bytes.Equal(up.Waveform, []byte{0, 128, 255}) {
		t.Fatalf("upload %+v", up)
	}
	if b, _ := io.ReadAll(up.File); string(b) != "hello" {
		t.Fatalf("file %q", b)
	}

	bad := []struct {
		name  string
		meta  any
		thumb []byte
		file  string
		want  int
		code  string
	}{
		{"over the limit, refused before reading", map[string]any{"name": "big", "size": MaxUploadSize + 1}, nil, "x", 413, CodeFileTooLarge},
		{"no size", map[string]any{"name": "x", "size": -1}, nil, "x", 400, ""},
		{"bad meta", `{"name":`, nil, "x", 400, CodeBadJSON},
		{"unknown meta field", `{"name":"x","size":1,"owner":"me"}`, nil, "x", 400, CodeBadJSON},
		{"no meta", nil, nil, "x", 400, ""},
		{"waveform out of range", map[string]any{"name": "v", "size": 1, "waveform": []int{300}}, nil, "x", 400, ""},
		{"bad client id", map[string]any{"name": "v", "size": 1, "clientId": "short"}, nil, "x", 400, ""},
		{"thumbnail too large", map[string]any{"name": "v", "size": 1}, make([]byte, MaxThumbSize+1), "x", 413, CodeTooLarge},
		{"shorter than declared", map[string]any{"name": "v", "size": 10}, nil, "x", 400, ""},
	}
	for _, c := range bad {
		ct, body := upload(t, c.meta, c.thumb, c.file)
		code, e := post(ct, body)
		want := c.code
		if want == "" {
			want = statusCodes[c.want]
		}
		if code != c.want || e.Code != want || e.Error == "" {
			t.Errorf("%s: %d %+v, want %d %s", c.name, code, e, c.want, want)
		}
	}
	if code, _ := post("application/json", strings.NewReader(`{"text":"x"}`)); code != 400 {
		t.Errorf("not multipart: %d", code)
	}
	if len(*got) != 1 {
		t.Fatalf("%d uploads reached the backend, want 1", len(*got))
	}
}

// Files from other members are served so that none can run script in the
// app's origin: only plain media inline, everything else a download,
// always nosniff and a sandboxing CSP.
func TestAttachmentServing(t *testing.T) {
	h, _ := newFileServer(t)
	get := func(path string) *http.Response {
		return do(t, h, "GET", path, bearer).Result()
	}
	cases := []struct {
		msg, query, ctype, disp string
	}{
		{"img", "", "image/png", "inline"},
		{"img", "?download=1", "image/png", "attachment"},
		{"svg", "", "application/octet-stream", "attachment"},
		{"html", "", "application/octet-stream", "attachment"},
	}
	for _, c := range cases {
		res := get("/api/v1/conversations/c1/attachments/" + c.msg + "/file" + c.query)
		h := res.Header
		if res.StatusCode != 200 || h.Get("Content-Type") != c.ctype || !strings.HasPrefix(h.Get("Content-Disposition"), c.disp) ||
			h.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(h.Get("Content-Security-Policy"), "sandbox") {
			t.Errorf("%s%s: %d %v", c.msg, c.query, res.StatusCode, h)
		}
	}
	if res := get("/api/v1/conversations/c1/attachments/img/file"); res.Header.Get("Content-Length") != "7" {
		t.Errorf("length %q", res.Header.Get("Content-Length"))
	}
	if res := get("/api/v1/conversations/c1/attachments/nope/file"); res.StatusCode != 409 {
		t.Errorf("not downloaded: %d", res.StatusCode)
	}
	if res := get("/api/v1/conversations/c1/attachments/img/status"); res.StatusCode != 200 {
		t.Errorf("status: %d", res.StatusCode)
	}
	if res := get("/api/v1/conversations/c1/attachments/other/status"); res.StatusCode != 404 {
		t.Errorf("no attachment: %d", res.StatusCode)
	}
	for method, want := range map[string]string{"POST": AttachmentFetching, "DELETE": AttachmentPartial} {
		w := do(t, h, method, "/api/v1/conversations/c1/attachments/img/fetch", bearer)
		var st AttachmentStatus
		json.NewDecoder(w.Body).Decode(&st)
		if st.State != want {
			t.Errorf("%s fetch: %d %+v", method, w.Code, st)
		}
	}
	if w := do(t, h, "GET", "/api/v1/conversations/c1/attachments/img/file", nil); w.Code != 401 {
		t.Errorf("without token: %d", w.Code)
	}
}

// A backend without attachments has no such endpoints.
func TestNoAttachmentBackend(t *testing.T) {
	s, _ := newTestServer(t)
	if w := do(t, s.Handler(), "GET", "/api/v1/conversations/c1/attachments/img/status", bearer); w.Code != 404 {
		t.Fatalf("status %d", w.Code)
	}
}
