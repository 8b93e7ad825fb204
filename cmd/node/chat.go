package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

func (c *client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, bytes.NewReader(body), out)
}

func (c *client) put(ctx context.Context, path string, in any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, path, bytes.NewReader(body), nil)
}

func (c *client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	raw, err := c.doRaw(ctx, method, path, body)
	if err != nil || out == nil || len(raw) == 0 {
		return err
	}
	return json.Unmarshal(raw, out)
}

// raw GETs path and returns the body as it is (a backup file).
func (c *client) raw(ctx context.Context, path string) ([]byte, error) {
	return c.doRaw(ctx, http.MethodGet, path, nil)
}

func (c *client) doRaw(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, &unreachableError{base: c.base, err: err}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = res.Status
		}
		return nil, errors.New(e.Error)
	}
	return raw, nil
}

// unreachableError: a request got no answer (the node is not running, or
// the connection broke before it answered).
type unreachableError struct {
	base string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the node at %s (is `glitr run` running?): %v", e.base, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

func short(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// chatCommands talk to the running node's conversations.
func chatCommands() []command {
	const g = "Chat"
	return []command{
		{name: "card", synopsis: "card", summary: "print this device's contact card (give it to a contact)", group: g, api: true, setup: noFlags(runCard)},
		{name: "contact add", synopsis: "contact add CARD", summary: "add a contact from their card", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runContactAdd)},
		{name: "contacts", synopsis: "contacts", summary: "list contacts with their safety numbers", group: g, api: true, setup: noFlags(runContacts)},
		{name: "chat new", synopsis: "chat new [--title T] ACCOUNT...", summary: "start a conversation with contacts", group: g, minArgs: 1, maxArgs: -1, api: true, setup: setupChatNew},
		{name: "chats", synopsis: "chats", summary: "list conversations", group: g, api: true, setup: noFlags(runChats)},
		{name: "send", synopsis: "send [--reply-to ID] [--file PATH] CONV [TEXT...]", summary: "send a message or a file with a caption (CONV: an id or a unique prefix)", group: g, minArgs: 1, maxArgs: -1, textFrom: 1, api: true, setup: setupSend},
		{name: "save", synopsis: "save [--conv CONV] [--wait D] MSG DIR", summary: "download a message's attachment into DIR (resumes where it stopped)", group: g, minArgs: 2, maxArgs: 2, api: true, setup: setupSave},
		{name: "log", synopsis: "log [-n N] [--follow] CONV", summary: "show the newest N messages (-n 0: all), then follow", group: g, minArgs: 1, maxArgs: 1, api: true, setup: setupLog},
		{name: "read", synopsis: "read CONV", summary: "mark a conversation read (sends a read receipt)", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runRead)},
	}
}

func runCard(ctx context.Context, x *call) error {
	var out struct{ Card string }
	if err := x.api.get(ctx, "/api/v1/card", &out); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, out.Card)
	return nil
}

func runContactAdd(ctx context.Context, x *call) error {
	var ct webui.Contact
	if err := x.api.post(ctx, "/api/v1/contacts", map[string]string{"card": x.arg(0)}, &ct); err != nil {
		return err
	}
	fmt.Fprintf(x.g.stdout, "added %s (%s)\naccount %s\nsafety number %s\n", ct.Name, short(ct.Account), ct.Account, groupDigits(ct.SafetyNumber))
	return nil
}

// groupDigits shows a safety number as 12 groups of 5 digits.
func groupDigits(s string) string {
	var parts []string
	for len(s) > 5 {
		parts = append(parts, s[:5])
		s = s[5:]
	}
	return strings.Join(append(parts, s), " ")
}

func runContacts(ctx context.Context, x *call) error {
	var cs []webui.Contact
	if err := x.api.get(ctx, "/api/v1/contacts", &cs); err != nil {
		return err
	}
	for _, ct := range cs {
		extra := ""
		if ct.Blocked {
			extra = "  (blocked)"
		}
		fmt.Fprintf(x.g.stdout, "%s  %-20s  safety number %s%s\n", ct.Account, ct.Name, groupDigits(ct.SafetyNumber), extra)
	}
	return nil
}

func setupChatNew(fs *flag.FlagSet) runFunc {
	title := fs.String("title", "", "conversation title")
	return func(ctx context.Context, x *call) error {
		var conv webui.Conversation
		if err := x.api.post(ctx, "/api/v1/conversations", map[string]any{"title": *title, "members": x.args}, &conv); err != nil {
			return err
		}
		fmt.Fprintln(x.g.stdout, conv.ID)
		return nil
	}
}

func runChats(ctx context.Context, x *call) error {
	var cs []webui.Conversation
	if err := x.api.get(ctx, "/api/v1/conversations", &cs); err != nil {
		return err
	}
	for _, cv := range cs {
		title := cv.Title
		if title == "" {
			var others []string
			for _, m := range cv.Members {
				if !m.Self {
					others = append(others, cmp.Or(m.Name, short(m.Account)))
				}
			}
			title = "with " + strings.Join(others, ", ")
		}
		last := ""
		if cv.LastMessage != nil {
			last = oneLine(cv.LastMessage.Text, 40)
		}
		fmt.Fprintf(x.g.stdout, "%s  %-24s  %4d msgs  %3d unread  %s\n", cv.ID, oneLine(title, 24), cv.Messages, cv.Unread, last)
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func setupSend(fs *flag.FlagSet) runFunc {
	replyTo := fs.String("reply-to", "", "id of the message this one answers")
	file := fs.String("file", "", "send this file (up to 256 MiB); TEXT is then its caption")
	return func(ctx context.Context, x *call) error {
		if *file == "" && len(x.args) < 2 {
			return x.usageError("give the text to send, or --file PATH")
		}
		// A client id makes the send idempotent: the client retries a
		// send whose answer it lost (a timeout) without a duplicate.
		clientID := rand.Text()
		if *file != "" {
			m, err := sendFile(ctx, x, x.arg(0), *file, x.text(1), *replyTo, clientID)
			if err != nil {
				return err
			}
			fmt.Fprintf(x.g.stdout, "%s %s\n", m.ID, m.Status)
			return nil
		}
		req := map[string]string{"text": x.text(1), "replyTo": *replyTo, "clientId": clientID}
		var m webui.Message
		path := "/api/v1/conversations/" + url.PathEscape(x.arg(0)) + "/messages"
		err := x.api.post(ctx, path, req, &m)
		var lost *unreachableError
		if errors.As(err, &lost) && ctx.Err() == nil {
			// The answer may be what was lost: once more, the same id.
			time.Sleep(time.Second)
			err = x.api.post(ctx, path, req, &m)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(x.g.stdout, "%s %s\n", m.ID, m.Status)
		return nil
	}
}

// humanSize writes a byte count the way people read it.
func humanSize(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// logPage is the page size `log` reads history in (the API's maximum).
const logPage = webui.MaxPageLimit

func setupLog(fs *flag.FlagSet) runFunc {
	n := fs.Int("n", 20, "how many of the newest messages to print (0: the whole history)")
	follow := fs.Bool("follow", false, "keep printing new messages")
	return func(ctx context.Context, x *call) error {
		if *n < 0 {
			return x.usageError(fmt.Sprintf("-n %d: give a count of messages, or 0 for all", *n))
		}
		x.api.http.Timeout = 0
		conv := "/api/v1/conversations/" + url.PathEscape(x.arg(0)) + "/messages"
		// Page backwards from the newest until n messages (or the start).
		var msgs []webui.Message
		total := 0
		q := ""
		for {
			limit := logPage
			if *n > 0 {
				limit = min(logPage, *n-len(msgs))
			}
			var page webui.MessagePage
			if err := x.api.get(ctx, fmt.Sprintf("%s?limit=%d%s", conv, limit, q), &page); err != nil {
				return err
			}
			if total == 0 {
				total = page.Total
			}
			msgs = append(page.Messages, msgs...)
			if len(page.Messages) == 0 || page.Before == 0 || (*n > 0 && len(msgs) >= *n) {
				break
			}
			// By id: a message merged in meanwhile does not shift the cursor.
			q = "&before=" + url.QueryEscape(page.Messages[0].ID)
		}
		for _, m := range msgs {
			printMessage(x.g.stdout, m)
		}
		if !*follow {
			return nil
		}
		return followLog(ctx, x, conv, msgs)
	}
}

// followLog prints the messages that come after the last one shown, as
// events announce them, until SIGINT or SIGTERM.
func followLog(ctx context.Context, x *call, conv string, shown []webui.Message) error {
	ctx, stop := signalContext(ctx)
	defer stop()
	after := "-1"
	if len(shown) > 0 {
		after = shown[len(shown)-1].ID
	}
	var cursor uint64
	for ctx.Err() == nil {
		var batch webui.EventBatch
		if err := x.api.get(ctx, fmt.Sprintf("/api/v1/events?since=%d&wait=25s", cursor), &batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(time.Second)
			continue
		}
		for _, e := range batch.Events {
			cursor = max(cursor, e.Seq)
		}
		for len(batch.Events) > 0 {
			var page webui.MessagePage
			if err := x.api.get(ctx, fmt.Sprintf("%s?limit=%d&after=%s", conv, logPage, url.QueryEscape(after)), &page); err != nil {
				break
			}
			for _, m := range page.Messages {
				printMessage(x.g.stdout, m)
			}
			if len(page.Messages) < logPage {
				if len(page.Messages) > 0 {
					after = page.Messages[len(page.Messages)-1].ID
				}
				break
			}
			after = page.Messages[len(page.Messages)-1].ID
		}
	}
	return nil
}

func printMessage(w io.Writer, m webui.Message) {
	who := short(m.Author)
	if m.Mine {
		who = "me"
	}
	text := m.Text
	if m.Deleted {
		text = "(deleted)"
	}
	extra := ""
	if m.Mine {
		extra = "  [" + m.Status + "]"
	}
	if m.ReplyTo != "" {
		extra += "  (reply)"
	}
	if a := m.Attachment; a != nil {
		text = strings.TrimSpace(fmt.Sprintf("[%s, %s, %s] %s", a.Name, a.Type, humanSize(a.Size), text))
	}
	fmt.Fprintf(w, "%s  %-12s  %s%s\n", m.Time.Local().Format("2006-01-02 15:04"), who, text, extra)
}

func runRead(ctx context.Context, x *call) error {
	return x.api.post(ctx, "/api/v1/conversations/"+url.PathEscape(x.arg(0))+"/read", struct{}{}, nil)
}
