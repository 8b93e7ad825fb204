//go:build linux

package node

// The fault scenarios' client of a `glitr` process's local API, over
// loopback or into a namespace.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/glitr-chat/glitr/webui"
)

// ---------------------------------------------------------------------------
// The local API, over loopback or into a namespace.

type faultAPI struct {
	base, token string
	hc          *http.Client
}

func newFaultAPI(addr, token, ns string) *faultAPI {
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	if ns != "" {
		tr.DialContext = faultNetnsDialer(ns)
	}
	return &faultAPI{base: "http://" + addr, token: token, hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// faultNetnsDialer dials from inside a network namespace: the socket is
// made by an OS thread that has joined the namespace, and a socket stays in
// the namespace it was made in. The thread goes back to its own namespace
// afterwards; if it cannot, it stays locked and dies with the goroutine.
func faultNetnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			target, err := os.Open(filepath.Join("/var/run/netns", ns))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// do makes one request and returns the status code.
func (a *faultAPI) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return res.StatusCode, nil
}

func (a *faultAPI) mustDo(t *testing.T, method, path string, in, out any) {
	t.Helper()
	if _, err := a.do(context.Background(), method, path, in, out); err != nil {
		t.Fatal(err)
	}
}

func (a *faultAPI) card(t *testing.T) string {
	t.Helper()
	var out struct{ Card string }
	a.mustDo(t, "GET", "/api/v1/card", nil, &out)
	return out.Card
}

func (a *faultAPI) addContact(t *testing.T, card string) webui.Contact {
	t.Helper()
	var c webui.Contact
	a.mustDo(t, "POST", "/api/v1/contacts", map[string]string{"card": card}, &c)
	return c
}

func (a *faultAPI) createConversation(t *testing.T, members ...string) string {
	t.Helper()
	var c webui.Conversation
	a.mustDo(t, "POST", "/api/v1/conversations", map[string]any{"title": "", "members": members}, &c)
	return c.ID
}

// send posts a message; only a 201 counts as an acknowledgement.
func (a *faultAPI) send(ctx context.Context, conv, text string) (webui.Message, error) {
	var m webui.Message
	code, err := a.do(ctx, "POST", "/api/v1/conversations/"+conv+"/messages", map[string]string{"text": text, "replyTo": ""}, &m)
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("send: status %d, want 201", code)
	}
	return m, err
}

func (a *faultAPI) mustSend(t *testing.T, conv, text string) {
	t.Helper()
	if _, err := a.send(context.Background(), conv, text); err != nil {
		t.Fatal(err)
	}
}

func (a *faultAPI) page(t *testing.T, conv string, before, limit int) webui.MessagePage {
	t.Helper()
	var p webui.MessagePage
	a.mustDo(t, "GET", fmt.Sprintf("/api/v1/conversations/%s/messages?before=%d&limit=%d", conv, before, limit), nil, &p)
	return p
}

// count is the number of messages the node shows (0 before it knows the
// conversation).
func (a *faultAPI) count(t *testing.T, conv string) int {
	t.Helper()
	var cs []webui.Conversation
	a.mustDo(t, "GET", "/api/v1/conversations", nil, &cs)
	for _, c := range cs {
		if c.ID == conv {
			return c.Messages
		}
	}
	return 0
}

// allMessages pages through the whole conversation, oldest first.
func (a *faultAPI) allMessages(t *testing.T, conv string) []webui.Message {
	t.Helper()
	p := a.page(t, conv, 0, 500)
	out := p.Messages
	for p.Before > 0 {
		p = a.page(t, conv, p.Before, 500)
		out = append(slices.Clip(p.Messages), out...)
	}
	return out
}
