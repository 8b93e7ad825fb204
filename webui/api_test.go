package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fakeEvents is a bounded, sequence-numbered event log like the node's.
type fakeEvents struct {
	mu      sync.Mutex
	changed chan struct{}
	log     []Event
	first   uint64 // seq of log[0]
	keep    int
	signals chan Signal
}

func newFakeEvents() *fakeEvents {
	return &fakeEvents{changed: make(chan struct{}), first: 1, keep: 1 << 20, signals: make(chan Signal, 8)}
}

func (f *fakeEvents) publish(kind, conv string) {
	f.mu.Lock()
	seq := f.first + uint64(len(f.log))
	f.log = append(f.log, Event{Seq: seq, Kind: kind, Conversation: conv})
	if len(f.log) > f.keep {
		f.first += uint64(len(f.log) - f.keep)
		f.log = f.log[len(f.log)-f.keep:]
	}
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (b fakeBackend) WaitEvents(ctx context.Context, since uint64) (EventBatch, error) {
	f := b.ev
	for {
		f.mu.Lock()
		next := f.first + uint64(len(f.log))
		if next > since+1 {
			batch := EventBatch{}
			if since+1 < f.first {
				batch.Gap = true
				since = f.first - 1
			}
			batch.Events = append(batch.Events, f.log[since+1-f.first:]...)
			f.mu.Unlock()
			return batch, nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return EventBatch{}, ctx.Err()
		case <-ch:
		}
	}
}

func (b fakeBackend) LastEventSeq(context.Context) (uint64, error) {
	b.ev.mu.Lock()
	defer b.ev.mu.Unlock()
	return b.ev.first + uint64(len(b.ev.log)) - 1, nil
}

func (fakeBackend) Edit(_ context.Context, conv, msg, text string) (Message, error) {
	switch {
	case conv != "c1":
		return Message{}, fmt.Errorf("%w: no such conversation", ErrNotFound)
	case msg == "theirs":
		return Message{}, fmt.Errorf("%w: only the author can change a message", ErrForbidden)
	case msg != "bafy/0":
		return Message{}, fmt.Errorf("%w: no such message", ErrNotFound)
	}
	return Message{ID: msg, Text: text, Edited: true, Mine: true}, nil
}

func (b fakeBackend) Delete(ctx context.Context, conv, msg string) error {
	_, err := b.Edit(ctx, conv, msg, "")
	return err
}

func (b fakeBackend) React(ctx context.Context, conv, msg, emoji string, add bool) error {
	if emoji == "not an emoji" {
		return fmt.Errorf("%w: reaction must be a short emoji", ErrBadRequest)
	}
	if msg == "theirs" {
		msg = "bafy/0" // anyone may react
	}
	_, err := b.Edit(ctx, conv, msg, "")
	return err
}

func (fakeBackend) Typing(_ context.Context, conv string) error {
	if conv != "c1" {
		return fmt.Errorf("%w: no such conversation", ErrNotFound)
	}
	return nil
}

func (fakeBackend) Presence(context.Context) (map[string]Presence, error) {
	return map[string]Presence{"aa": {Online: true}}, nil
}

func (b fakeBackend) SubscribeSignals(ctx context.Context) <-chan Signal {
	out := make(chan Signal)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-b.ev.signals:
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func (fakeBackend) People() PeopleBackend { return fakePeople{} }

// fakePeople plays a locked account whose passphrase is "right".
type fakePeople struct{}

func (fakePeople) Account(context.Context) (Account, error) {
	return Account{State: "locked", HasPassphrase: true}, nil
}
func (fakePeople) CreateAccount(context.Context, string, string) ([]string, error) {
	return nil, fmt.Errorf("%w: account already set up", ErrConflict)
}
func (fakePeople) Unlock(_ context.Context, pass string) error {
	if pass != "right" {
		return fmt.Errorf("%w: keyring: wrong passphrase", ErrWrongPassphrase)
	}
	return nil
}
func (fakePeople) SetProfile(context.Context, string, string) error {
	return fmt.Errorf("%w: unlock first", ErrLocked)
}
func (fakePeople) Preferences(context.Context) (Preferences, error) {
	return Preferences{Theme: "system", ReadReceipts: true}, nil
}
func (fakePeople) SetPreferences(context.Context, Preferences) error { return nil }
func (fakePeople) CreateInvite(_ context.Context, ttl time.Duration) (Invite, error) {
	return Invite{Link: "glitr:invite/abc", Token: "01", Expires: time.Unix(0, 0).Add(ttl)}, nil
}
func (fakePeople) InviteQR(link, format string) ([]byte, error) {
	return []byte("<svg xmlns='http://www.w3.org/2000/svg'/>"), nil
}
func (fakePeople) AcceptInvite(_ context.Context, link string) (string, string, error) {
	switch link {
	case "glitr:invite/used":
		return "", "", WithCode(CodeInviteUsed, fmt.Errorf("%w: invite was already used", ErrBadRequest))
	case "glitr:invite/good":
		return "aa", "c1", nil
	}
	return "", "", fmt.Errorf("%w: invite is not valid", ErrBadRequest)
}
func (fakePeople) VerifyContact(_ context.Context, account string, _ bool) error {
	if account != "aa" {
		return fmt.Errorf("%w: not a contact", ErrNotFound)
	}
	return nil
}
func (fakePeople) BlockContact(_ context.Context, account string, _ bool) error {
	if account != "aa" {
		return fmt.Errorf("%w: not a contact", ErrNotFound)
	}
	return nil
}
func (fakePeople) AddMember(_ context.Context, conv, account string) error {
	if conv != "c1" {
		return fmt.Errorf("%w: only an admin of the conversation can do that", ErrForbidden)
	}
	return nil
}
func (p fakePeople) RemoveMember(ctx context.Context, conv, account string) error {
	return p.AddMember(ctx, conv, account)
}
func (fakePeople) Leave(context.Context, string) error { return nil }
func (fakePeople) SetConversationInfo(context.Context, string, string, string) error {
	return nil
}

// TestEveryEndpoint covers each API endpoint: its success status, its
// precise errors, 401 without a token and 403 from a foreign origin or a
// rebinding host.
func TestEveryEndpoint(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	withBody := func(b string) func(*http.Request) {
		return func(r *http.Request) {
			bearer(r)
			r.Body = io.NopCloser(strings.NewReader(b))
		}
	}
	type tc struct {
		method, path, body string
		want               int
		code               string // for errors: the code the body must carry ("": the status's own)
	}
	ok := []tc{
		{"GET", "/api/v1/status", "", 200, ""},
		{"GET", "/api/v1/card", "", 200, ""},
		{"GET", "/api/v1/contacts", "", 200, ""},
		{"POST", "/api/v1/contacts", `{"card":"glitr-card:ok"}`, 201, ""},
		{"GET", "/api/v1/conversations", "", 200, ""},
		{"GET", "/api/v1/conversations/c1/messages?before=5&limit=20", "", 200, ""},
		{"GET", "/api/v1/conversations/c1/messages?after=bafy/0&limit=500", "", 200, ""},
		{"GET", "/api/v1/conversations/c1/messages", "", 200, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"hi","replyTo":"bafy/0"}`, 201, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"hi","clientId":"0123456789abcdef-new"}`, 201, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"hi","clientId":"` + repeatedClientID + `"}`, 200, ""},
		{"PUT", "/api/v1/conversations/c1/settings", `{"muted":true}`, 204, ""},
		{"PUT", "/api/v1/contacts/aa/block", `{"blocked":true}`, 204, ""},
		{"PUT", "/api/v1/conversations/c1/messages/bafy/0", `{"text":"edited"}`, 200, ""},
		{"DELETE", "/api/v1/conversations/c1/messages/bafy/0", "", 204, ""},
		{"POST", "/api/v1/conversations/c1/reactions", `{"message":"theirs","emoji":"👍"}`, 204, ""},
		{"POST", "/api/v1/conversations/c1/reactions", `{"message":"bafy/0","emoji":"👍","remove":true}`, 204, ""},
		{"POST", "/api/v1/conversations/c1/read", `{}`, 204, ""},
		{"POST", "/api/v1/conversations/c1/typing", `{}`, 204, ""},
		{"GET", "/api/v1/presence", "", 200, ""},
		{"GET", "/api/v1/events?since=0&wait=10ms", "", 200, ""},
		{"GET", "/api/v1/account", "", 200, ""},
		{"POST", "/api/v1/unlock", `{"passphrase":"right"}`, 204, ""},
		{"GET", "/api/v1/preferences", "", 200, ""},
		{"PUT", "/api/v1/preferences", `{"theme":"dark","language":"de","notifications":true,"showPresence":false,"readReceipts":false}`, 204, ""},
		{"POST", "/api/v1/invites", `{"ttl":"24h"}`, 201, ""},
		{"POST", "/api/v1/invites", `{}`, 201, ""},
		{"GET", "/api/v1/invites/qr?link=glitr:invite/abc", "", 200, ""},
		{"POST", "/api/v1/invites/accept", `{"link":" glitr:invite/good "}`, 200, ""},
		{"PUT", "/api/v1/contacts/aa/verified", `{"verified":true}`, 204, ""},
		{"POST", "/api/v1/conversations/c1/members", `{"account":"bb"}`, 204, ""},
		{"DELETE", "/api/v1/conversations/c1/members/bb", "", 204, ""},
		{"POST", "/api/v1/conversations/c1/leave", `{}`, 204, ""},
		{"PUT", "/api/v1/conversations/c1", `{"title":"Team"}`, 204, ""},
	}
	bad := []tc{
		{"PUT", "/api/v1/conversations/c1/messages/theirs", `{"text":"x"}`, 403, ""},
		{"PUT", "/api/v1/conversations/c1/messages/nope/0", `{"text":"x"}`, 404, ""},
		{"PUT", "/api/v1/conversations/c9/messages/bafy/0", `{"text":"x"}`, 404, ""},
		{"DELETE", "/api/v1/conversations/c1/messages/theirs", "", 403, ""},
		{"POST", "/api/v1/conversations/c1/reactions", `{"message":"bafy/0"}`, 400, ""},
		{"POST", "/api/v1/conversations/c1/reactions", `{"message":"bafy/0","emoji":"not an emoji"}`, 400, ""},
		{"POST", "/api/v1/conversations/c9/typing", `{}`, 404, ""},
		{"POST", "/api/v1/account", `{"name":"Ann"}`, 409, ""},
		{"POST", "/api/v1/account", `{"name":"  "}`, 400, ""},
		{"POST", "/api/v1/account", `{"name":"` + strings.Repeat("n", 129) + `"}`, 400, ""},
		{"POST", "/api/v1/unlock", `{"passphrase":"wrong"}`, 403, CodeWrongPassphrase},
		{"POST", "/api/v1/unlock", `{"passphrase":""}`, 400, ""},
		{"PUT", "/api/v1/profile", `{"name":"Ann"}`, 423, ""},
		{"PUT", "/api/v1/profile", `{"name":"Ann","avatar":"javascript:alert(1)"}`, 400, ""},
		{"PUT", "/api/v1/profile", `{"name":"Ann","avatar":"data:image/png;base64,` + strings.Repeat("A", maxAvatarLen) + `"}`, 400, ""},
		{"PUT", "/api/v1/preferences", `{"theme":"neon"}`, 400, ""},
		{"PUT", "/api/v1/preferences", `{"theme":"dark","extra":1}`, 400, CodeBadJSON},
		{"POST", "/api/v1/invites", `{"ttl":"forever"}`, 400, ""},
		{"POST", "/api/v1/invites", `{"ttl":"-1h"}`, 400, ""},
		{"GET", "/api/v1/invites/qr", "", 400, ""},
		{"POST", "/api/v1/invites/accept", `{"link":"glitr:invite/used"}`, 400, CodeInviteUsed},
		{"POST", "/api/v1/invites/accept", `{"link":"nonsense"}`, 400, ""},
		{"POST", "/api/v1/invites/accept", `{"link":""}`, 400, ""},
		{"PUT", "/api/v1/contacts/zz/verified", `{"verified":true}`, 404, ""},
		{"POST", "/api/v1/conversations/c2/members", `{"account":"bb"}`, 403, ""},
		{"POST", "/api/v1/conversations/c1/members", `{}`, 400, ""},
		{"PUT", "/api/v1/conversations/c1", `{"title":"` + strings.Repeat("t", 129) + `"}`, 400, ""},
		{"GET", "/api/v1/ws?since=abc", "", 400, ""},
		{"GET", "/api/v1/conversations/c1/messages?limit=501", "", 400, CodeBadLimit},
		{"GET", "/api/v1/conversations/c1/messages?limit=0", "", 400, CodeBadLimit},
		{"GET", "/api/v1/conversations/c1/messages?limit=many", "", 400, CodeBadLimit},
		{"GET", "/api/v1/conversations/c1/messages?before=3&after=1", "", 400, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"hi","clientId":"short"}`, 400, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"hi","clientId":"0123456789abcdef/../x"}`, 400, ""},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":"` + strings.Repeat("x", maxRequestBody) + `"}`, 413, CodeTooLarge},
		{"POST", "/api/v1/conversations/c1/messages", `{"text":`, 400, CodeBadJSON},
		{"PUT", "/api/v1/conversations/c9/settings", `{"muted":true}`, 404, ""},
		{"PUT", "/api/v1/conversations/c1/settings", `{"pinned":true}`, 400, CodeBadJSON},
		{"PUT", "/api/v1/contacts/zz/block", `{"blocked":true}`, 404, ""},
	}
	run := func(c tc, mod func(*http.Request)) *http.Response {
		w := do(t, h, c.method, c.path, func(r *http.Request) {
			withBody(c.body)(r)
			if mod != nil {
				mod(r)
			}
		})
		return w.Result()
	}
	for _, c := range append(ok, bad...) {
		res := run(c, nil)
		if res.StatusCode != c.want {
			b, _ := io.ReadAll(res.Body)
			t.Errorf("%s %s: %d, want %d (%s)", c.method, c.path, res.StatusCode, c.want, b)
		}
		if c.want >= 400 {
			var e apiError
			if err := json.NewDecoder(res.Body).Decode(&e); err != nil || e.Error == "" {
				t.Errorf("%s %s: error without a JSON message", c.method, c.path)
			}
			want := c.code
			if want == "" {
				want = statusCodes[c.want]
			}
			if e.Code != want {
				t.Errorf("%s %s: code %q, want %q", c.method, c.path, e.Code, want)
			}
		}
	}
	for _, c := range append(ok, bad...) {
		if res := run(c, func(r *http.Request) { r.Header.Del("Authorization") }); res.StatusCode != 401 {
			t.Errorf("%s %s without token: %d, want 401", c.method, c.path, res.StatusCode)
		}
		if res := run(c, func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }); res.StatusCode != 403 {
			t.Errorf("%s %s from a foreign origin: %d, want 403", c.method, c.path, res.StatusCode)
		}
		if res := run(c, func(r *http.Request) { r.Host = "rebind.example:7878" }); res.StatusCode != 403 {
			t.Errorf("%s %s on a rebinding host: %d, want 403", c.method, c.path, res.StatusCode)
		}
	}
}

// serveTest runs a real server on a loopback port (the WebSocket needs a
// real connection) and returns it with its fake backend and address.
func serveTest(t *testing.T) (*Server, fakeBackend, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := fakeBackend{ev: newFakeEvents()}
	s, err := New(Config{Token: testToken, Backend: fb, Addr: ln.Addr().(*net.TCPAddr)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, fb, ln.Addr().String()
}

func dialWS(ctx context.Context, addr, query string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	if hdr == nil {
		hdr = http.Header{"Authorization": {"Bearer " + testToken}}
	}
	return websocket.Dial(ctx, "ws://"+addr+"/api/v1/ws"+query, &websocket.DialOptions{HTTPHeader: hdr})
}

func readFrame(t *testing.T, ctx context.Context, c *websocket.Conn) Frame {
	t.Helper()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		var f Frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		if f.Kind != "ping" {
			return f
		}
	}
}

// TestWebSocketResume disconnects a client in the middle of a stream of
// events and reconnects it with its cursor: it must see every event
// exactly once, in order.
func TestWebSocketResume(t *testing.T) {
	_, fb, addr := serveTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 5 {
		fb.ev.publish("message", "c1")
	}
	// A fresh client starts at the head: it is told the cursor and gets
	// only what happens next.
	c, _, err := dialWS(ctx, addr, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, ctx, c); f.Kind != "hello" || f.Seq != 5 {
		t.Fatalf("hello frame %+v, want seq 5", f)
	}
	const total = 300
	done := make(chan struct{})
	go func() { // a producer that keeps going while the client drops out
		defer close(done)
		for i := range total {
			fb.ev.publish("message", fmt.Sprint("c", i))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var got []uint64
	for len(got) < 40 {
		f := readFrame(t, ctx, c)
		got = append(got, f.Seq)
	}
	c.CloseNow() // mid-stream
	for len(got) < total {
		c, _, err = dialWS(ctx, addr, fmt.Sprintf("?since=%d", got[len(got)-1]), nil)
		if err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ctx, c); f.Kind != "hello" || f.Seq != got[len(got)-1] {
			t.Fatalf("hello after resume %+v", f)
		}
		for n := 0; n < 97 && len(got) < total; n++ {
			f := readFrame(t, ctx, c)
			if f.Kind == "gap" {
				t.Fatal("gap reported although nothing was dropped")
			}
			got = append(got, f.Seq)
		}
		c.CloseNow()
	}
	<-done
	for i, seq := range got {
		if want := uint64(6 + i); seq != want {
			t.Fatalf("event %d has seq %d, want %d (lost or duplicated)", i, seq, want)
		}
	}
}

// TestWebSocketGapAndSignals: a cursor older than the kept log yields a
// "gap" frame; signals arrive without a sequence number.
func TestWebSocketGapAndSignals(t *testing.T) {
	_, fb, addr := serveTest(t)
	fb.ev.keep = 3
	for range 10 {
		fb.ev.publish("message", "c1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := dialWS(ctx, addr, "?since=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readFrame(t, ctx, c) // hello
	if f := readFrame(t, ctx, c); f.Kind != "gap" {
		t.Fatalf("want gap, got %+v", f)
	}
	for want := uint64(8); want <= 10; want++ {
		if f := readFrame(t, ctx, c); f.Seq != want {
			t.Fatalf("after gap: seq %d, want %d", f.Seq, want)
		}
	}
	fb.ev.signals <- Signal{Kind: "typing", Conversation: "c1", Account: "aa"}
	if f := readFrame(t, ctx, c); f.Kind != "typing" || f.Account != "aa" || f.Seq != 0 {
		t.Fatalf("typing frame %+v", f)
	}
}

// TestWebSocketUpgradeGuard: the upgrade passes the same guard as every
// request.
func TestWebSocketUpgradeGuard(t *testing.T) {
	s, _, addr := serveTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, port, _ := net.SplitHostPort(addr)
	cookie := s.CookieName() + "=" + s.session
	cases := []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"no credentials", http.Header{"Origin": {"http://" + addr}}, 401},
		{"cookie from a foreign origin", http.Header{"Cookie": {cookie}, "Origin": {"http://evil.example"}}, 403},
		{"cookie from another local port", http.Header{"Cookie": {cookie}, "Origin": {"http://127.0.0.1:1"}}, 403},
		{"rebinding host and origin agree", http.Header{"Cookie": {cookie}, "Host": {"rebind.example:" + port}, "Origin": {"http://rebind.example:" + port}}, 403},
		{"cookie, same origin", http.Header{"Cookie": {cookie}, "Origin": {"http://localhost:" + port}}, 101},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res, err := websocket.Dial(ctx, "ws://"+addr+"/api/v1/ws", &websocket.DialOptions{HTTPHeader: c.hdr, Host: c.hdr.Get("Host")})
			if conn != nil {
				defer conn.CloseNow()
			}
			if res == nil {
				t.Fatalf("no response: %v", err)
			}
			if res.StatusCode != c.want {
				t.Fatalf("status %d, want %d (%v)", res.StatusCode, c.want, err)
			}
		})
	}
}

// TestWebSocketCursorOfAnotherRun: after a node restart its sequence
// numbers start over; a cursor from the old run must not make the client
// wait for numbers the new run has not reached (it would miss everything).
func TestWebSocketCursorOfAnotherRun(t *testing.T) {
	s, fb, addr := serveTest(t)
	fb.ev.publish("message", "c1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, q := range []string{"?since=500", "?since=1&instance=other"} {
		c, _, err := dialWS(ctx, addr, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ctx, c); f.Kind != "hello" || f.Seq != 1 || f.Instance != s.instance {
			t.Fatalf("%s: hello %+v", q, f)
		}
		if f := readFrame(t, ctx, c); f.Kind != "gap" {
			t.Fatalf("%s: want gap, got %+v", q, f)
		}
		fb.ev.publish("message", "c2")
		if f := readFrame(t, ctx, c); f.Conversation != "c2" {
			t.Fatalf("%s: live event after gap: %+v", q, f)
		}
		c.CloseNow()
		fb.ev.mu.Lock()
		fb.ev.log, fb.ev.first = fb.ev.log[:1], 1 // back to one event
		fb.ev.mu.Unlock()
	}
	// The same instance resumes normally.
	c, _, err := dialWS(ctx, addr, "?since=0&instance="+s.instance, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readFrame(t, ctx, c)
	if f := readFrame(t, ctx, c); f.Seq != 1 {
		t.Fatalf("resume in the same run: %+v", f)
	}
}

// TestEmbeddedApp: the committed build is embedded and served with the
// types and cache rules a service worker and an install need.
func TestEmbeddedApp(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	index := do(t, h, "GET", "/", nil)
	if index.Code != 200 {
		t.Fatalf("index: %d", index.Code)
	}
	// Every asset the shell names is embedded, immutable and typed.
	assets := 0
	for _, part := range strings.Split(index.Body.String(), `"`) {
		if !strings.HasPrefix(part, "/assets/") {
			continue
		}
		assets++
		w := do(t, h, "GET", part, nil)
		if w.Code != 200 || !strings.Contains(w.Header().Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d, Cache-Control %q", part, w.Code, w.Header().Get("Cache-Control"))
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") && !strings.HasPrefix(ct, "text/css") {
			t.Errorf("%s: Content-Type %q", part, ct)
		}
	}
	if assets < 2 {
		t.Fatalf("the shell names %d assets, want script and style sheet", assets)
	}
	for path, ctype := range map[string]string{
		"/manifest.webmanifest": "application/manifest+json",
		"/sw.js":                "text/javascript",
		"/icon-192.png":         "image/png",
		"/icon-512.png":         "image/png",
	} {
		w := do(t, h, "GET", path, nil)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) || w.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: %d, %q, %q", path, w.Code, w.Header().Get("Content-Type"), w.Header().Get("Cache-Control"))
		}
	}
	var man struct {
		Display string `json:"display"`
		Icons   []struct {
			Sizes string `json:"sizes"`
		} `json:"icons"`
	}
	if err := json.Unmarshal(do(t, h, "GET", "/manifest.webmanifest", nil).Body.Bytes(), &man); err != nil || man.Display != "standalone" || len(man.Icons) < 2 {
		t.Fatalf("manifest %+v: %v", man, err)
	}
	// No directory of the bundle is listed, under any spelling.
	for _, dir := range []string{"/assets/", "/assets", "/assets//", "/./assets/", "/assets/../assets/"} {
		w := do(t, h, "GET", dir, nil)
		if w.Code == 200 || strings.Contains(w.Body.String(), ".js") {
			t.Errorf("GET %s: %d, lists the directory: %.200s", dir, w.Code, w.Body)
		}
	}
	// The service worker must not cache API answers.
	if sw := do(t, h, "GET", "/sw.js", nil).Body.String(); !strings.Contains(sw, "api") || strings.Contains(sw, "runtimeCaching") {
		t.Errorf("sw.js does not deny-list /api/ from its navigation fallback")
	}
}

// TestNoMessageTextInLogs: requests that fail or succeed leave neither the
// token nor message text in the log.
func TestNoMessageTextInLogs(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7878}
	s, err := New(Config{Token: testToken, Backend: fakeBackend{ev: newFakeEvents()}, Addr: addr,
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return buf.Write(p)
		}), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	const secret = "attack at dawn"
	for _, path := range []string{"/api/v1/conversations/c1/messages", "/api/v1/conversations/c9/messages", "/api/v1/conversations/c1/messages/theirs"} {
		do(t, h, "POST", path, func(r *http.Request) {
			bearer(r)
			r.Body = io.NopCloser(strings.NewReader(`{"text":"` + secret + `"}`))
		})
	}
	do(t, h, "GET", "/login?token=wrong-"+testToken, nil)
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(buf.String(), secret) || strings.Contains(buf.String(), testToken) {
		t.Fatalf("log holds a secret:\n%s", buf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
