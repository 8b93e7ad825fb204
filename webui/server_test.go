package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeBackend answers the API from memory; ev is its event log.
type fakeBackend struct{ ev *fakeEvents }

func (fakeBackend) Status(context.Context) Status {
	return Status{PeerID: "12D3KooWtest", Version: "test", ConnectedPeers: []string{}}
}

const testToken = "TESTTOKEN0123456789ABCDEF"

func newTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7878}
	s, err := New(Config{Token: testToken, Backend: fakeBackend{ev: newFakeEvents()}, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return s, "127.0.0.1:7878"
}

func do(t *testing.T, h http.Handler, method, target string, mod func(*http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "http://127.0.0.1:7878"+target, nil)
	r.Host = "127.0.0.1:7878"
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func bearer(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) }

func TestAPIGuard(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	cases := []struct {
		name string
		mod  func(*http.Request)
		want int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, http.StatusUnauthorized},
		{"token without Bearer scheme", func(r *http.Request) { r.Header.Set("Authorization", testToken) }, http.StatusUnauthorized},
		{"bearer token", bearer, http.StatusOK},
		{"localhost name", func(r *http.Request) { bearer(r); r.Host = "localhost:7878" }, http.StatusOK},
		{"rebinding host", func(r *http.Request) { bearer(r); r.Host = "evil.example:7878" }, http.StatusForbidden},
		{"right host, other port", func(r *http.Request) { bearer(r); r.Host = "127.0.0.1:9999" }, http.StatusForbidden},
		{"foreign origin", func(r *http.Request) { bearer(r); r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden},
		{"other local port as origin", func(r *http.Request) { bearer(r); r.Header.Set("Origin", "http://127.0.0.1:9999") }, http.StatusForbidden},
		{"null origin", func(r *http.Request) { bearer(r); r.Header.Set("Origin", "null") }, http.StatusForbidden},
		{"rebinding host and origin agree", func(r *http.Request) {
			bearer(r)
			r.Host = "evil.example:7878"
			r.Header.Set("Origin", "http://evil.example:7878")
		}, http.StatusForbidden},
		{"same origin", func(r *http.Request) { bearer(r); r.Header.Set("Origin", "http://127.0.0.1:7878") }, http.StatusOK},
		{"cross-site fetch metadata", func(r *http.Request) {
			bearer(r)
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			r.Header.Set("Sec-Fetch-Mode", "cors")
		}, http.StatusForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := do(t, h, "GET", "/api/v1/status", c.mod)
			if w.Code != c.want {
				t.Fatalf("status %d, want %d (%s)", w.Code, c.want, w.Body)
			}
			if w.Header().Get("Content-Security-Policy") == "" {
				t.Fatal("no CSP header")
			}
			if w.Code == http.StatusOK {
				var st Status
				if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || st.PeerID != "12D3KooWtest" {
					t.Fatalf("status body %q: %v", w.Body, err)
				}
			}
		})
	}
}

func TestLoginSetsStrictCookieThatOpensTheAPI(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	if w := do(t, h, "GET", "/login?token=wrong", nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("bad login: %d", w.Code)
	}
	w := do(t, h, "GET", "/login?token="+testToken, nil)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("login: %d to %q", w.Code, w.Header().Get("Location"))
	}
	res := w.Result()
	cookies := res.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Name != "glitr_session_7878" {
		t.Fatalf("cookie %+v is not HttpOnly SameSite=Strict with the port in its name", c)
	}
	if strings.Contains(c.Value, testToken) {
		t.Fatal("cookie carries the token itself")
	}
	if got := do(t, h, "GET", "/api/v1/status", func(r *http.Request) { r.AddCookie(c) }); got.Code != http.StatusOK {
		t.Fatalf("API with cookie: %d", got.Code)
	}
	forged := *c
	forged.Value = "forged"
	if got := do(t, h, "GET", "/api/v1/status", func(r *http.Request) { r.AddCookie(&forged) }); got.Code != http.StatusUnauthorized {
		t.Fatalf("API with forged cookie: %d", got.Code)
	}
	// The cookie does not help a page on another origin.
	if got := do(t, h, "GET", "/api/v1/status", func(r *http.Request) {
		r.AddCookie(c)
		r.Header.Set("Origin", "http://127.0.0.1:9999")
	}); got.Code != http.StatusForbidden {
		t.Fatalf("cookie from foreign origin: %d", got.Code)
	}
}

func TestStaticShellIsPublicButGuarded(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	w := do(t, h, "GET", "/", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<title>Glitr</title>") {
		t.Fatalf("shell: %d", w.Code)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("shell Cache-Control %q", cc)
	}
	if w := do(t, h, "GET", "/", func(r *http.Request) { r.Host = "evil.example:7878" }); w.Code != http.StatusForbidden {
		t.Fatalf("shell on rebinding host: %d", w.Code)
	}
	if w := do(t, h, "GET", "/api/v1/nothing", bearer); w.Code != http.StatusNotFound {
		t.Fatalf("unknown endpoint: %d", w.Code)
	}
	if w := do(t, h, "GET", "/api/v1/status", bearer); w.Header().Get("Cache-Control") != "no-store" {
		t.Fatal("API responses must not be cached")
	}
}

func (fakeBackend) Card(context.Context) (string, error) { return "glitr-card:test", nil }
func (fakeBackend) AddContact(_ context.Context, card string) (Contact, error) {
	if card != "glitr-card:ok" {
		return Contact{}, fmt.Errorf("%w: invalid card", ErrBadRequest)
	}
	return Contact{Account: "aa"}, nil
}
func (fakeBackend) Contacts(context.Context) ([]Contact, error) { return []Contact{}, nil }
func (fakeBackend) Conversations(context.Context) ([]Conversation, error) {
	return []Conversation{}, nil
}
func (fakeBackend) CreateConversation(context.Context, string, []string) (Conversation, error) {
	return Conversation{}, ErrUnavailable
}
func (fakeBackend) MessagePage(_ context.Context, conv string, q MessageQuery) (MessagePage, error) {
	if conv != "c1" {
		return MessagePage{}, fmt.Errorf("%w: no such conversation", ErrNotFound)
	}
	if q.Limit < 1 || q.Limit > MaxPageLimit {
		return MessagePage{}, fmt.Errorf("backend got limit %d", q.Limit)
	}
	return MessagePage{Messages: []Message{{ID: "m", Text: "hi"}}, Total: 1}, nil
}

// repeatedClientID is a client id the fake has seen before.
const repeatedClientID = "0123456789abcdef-seen"

func (fakeBackend) PostMessage(_ context.Context, conv string, req SendRequest) (Message, bool, error) {
	m := Message{ID: "m2", Text: req.Text, Mine: true, Status: "sending", ClientID: req.ClientID}
	return m, req.ClientID != repeatedClientID, nil
}
func (fakeBackend) SetConversationSettings(_ context.Context, conv string, s ConversationSettings) error {
	if conv != "c1" {
		return fmt.Errorf("%w: no such conversation", ErrNotFound)
	}
	return nil
}
func (fakeBackend) MarkRead(context.Context, string) error { return nil }

func TestChatEndpoints(t *testing.T) {
	s, _ := newTestServer(t)
	h := s.Handler()
	body := func(b string) func(*http.Request) {
		return func(r *http.Request) {
			bearer(r)
			r.Body = io.NopCloser(strings.NewReader(b))
		}
	}
	cases := []struct {
		method, path string
		mod          func(*http.Request)
		want         int
	}{
		{"GET", "/api/v1/conversations/c1/messages", bearer, http.StatusOK},
		{"GET", "/api/v1/conversations/nope/messages", bearer, http.StatusNotFound},
		{"GET", "/api/v1/conversations/c1/messages", nil, http.StatusUnauthorized},
		{"POST", "/api/v1/conversations/c1/messages", body(`{"text":"hello"}`), http.StatusCreated},
		{"POST", "/api/v1/conversations/c1/messages", body(`{"text":`), http.StatusBadRequest},
		{"POST", "/api/v1/conversations/c1/messages", body(`{"txt":"typo"}`), http.StatusBadRequest},
		{"POST", "/api/v1/conversations/c1/messages", func(r *http.Request) {
			body(`{"text":"x"}`)(r)
			r.Header.Set("Origin", "http://evil.example")
		}, http.StatusForbidden},
		{"POST", "/api/v1/contacts", body(`{"card":"glitr-card:bad"}`), http.StatusBadRequest},
		{"POST", "/api/v1/contacts", body(`{"card":"glitr-card:ok"}`), http.StatusCreated},
		{"POST", "/api/v1/conversations", body(`{"members":["aa"]}`), http.StatusNotImplemented},
		{"POST", "/api/v1/conversations/c1/read", body(`{}`), http.StatusNoContent},
		{"GET", "/api/v1/events?since=0&wait=10ms", bearer, http.StatusOK},
		{"POST", "/api/v1/conversations/c1/messages", body(`{"text":"` + strings.Repeat("x", maxRequestBody) + `"}`), http.StatusRequestEntityTooLarge},
		{"POST", "/api/v1/conversations/c1/messages", body(`{"text":"a"} {"text":"b"}`), http.StatusBadRequest},
	}
	for _, c := range cases {
		w := do(t, h, c.method, c.path, c.mod)
		if w.Code != c.want {
			t.Errorf("%s %s: %d, want %d (%s)", c.method, c.path, w.Code, c.want, w.Body)
		}
	}
}
