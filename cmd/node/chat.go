package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
		return nil, fmt.Errorf("cannot reach the node at %s (is `glitr run` running?): %w", c.base, err)
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

func short(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

func cmdCard(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "card", "card")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var out struct{ Card string }
	if err := c.get(ctx, "/api/v1/card", &out); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, out.Card)
	return nil
}

func cmdContact(ctx context.Context, g *globals, args []string) error {
	if len(args) < 2 || args[0] != "add" {
		fmt.Fprintln(g.stderr, "Usage: glitr contact add CARD")
		return exitError{2}
	}
	fs := newFlagSet(g, "contact add", "contact add CARD")
	if err := fs.Parse(args[2:]); err != nil {
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var ct webui.Contact
	if err := c.post(ctx, "/api/v1/contacts", map[string]string{"card": args[1]}, &ct); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "added %s (%s)\naccount %s\nsafety number %s\n", ct.Name, short(ct.Account), ct.Account, groupDigits(ct.SafetyNumber))
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

func cmdContacts(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "contacts", "contacts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var cs []webui.Contact
	if err := c.get(ctx, "/api/v1/contacts", &cs); err != nil {
		return err
	}
	for _, ct := range cs {
		fmt.Fprintf(g.stdout, "%s  %-20s  safety number %s\n", ct.Account, ct.Name, groupDigits(ct.SafetyNumber))
	}
	return nil
}

func cmdChat(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(g.stderr, "Usage: glitr chat new [--title T] ACCOUNT...")
		return exitError{2}
	}
	fs := newFlagSet(g, "chat new", "chat new [--title T] ACCOUNT...")
	title := fs.String("title", "", "conversation title")
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{2}
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(g.stderr, "name at least one contact's account (see `glitr contacts`)")
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var conv webui.Conversation
	if err := c.post(ctx, "/api/v1/conversations", map[string]any{"title": *title, "members": fs.Args()}, &conv); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, conv.ID)
	return nil
}

func cmdChats(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "chats", "chats")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var cs []webui.Conversation
	if err := c.get(ctx, "/api/v1/conversations", &cs); err != nil {
		return err
	}
	for _, cv := range cs {
		title := cv.Title
		if title == "" {
			var others []string
			for _, m := range cv.Members {
				if !m.Self {
					others = append(others, short(m.Account))
				}
			}
			title = "with " + strings.Join(others, ", ")
		}
		last := ""
		if cv.LastMessage != nil {
			last = oneLine(cv.LastMessage.Text, 40)
		}
		fmt.Fprintf(g.stdout, "%s  %-24s  %4d msgs  %3d unread  %s\n", cv.ID, oneLine(title, 24), cv.Messages, cv.Unread, last)
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

func cmdSend(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "send", "send [--reply-to ID] CONVERSATION TEXT...")
	replyTo := fs.String("reply-to", "", "id of the message this one answers")
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var m webui.Message
	text := strings.Join(fs.Args()[1:], " ")
	if err := c.post(ctx, "/api/v1/conversations/"+url.PathEscape(fs.Arg(0))+"/messages", map[string]string{"text": text, "replyTo": *replyTo}, &m); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s %s\n", m.ID, m.Status)
	return nil
}

func cmdLog(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "log", "log [-n N] [--follow] CONVERSATION")
	n := fs.Int("n", 20, "number of most recent messages")
	follow := fs.Bool("follow", false, "keep printing new messages")
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	c.http.Timeout = 0
	conv := url.PathEscape(fs.Arg(0))
	var page webui.MessagePage
	if err := c.get(ctx, fmt.Sprintf("/api/v1/conversations/%s/messages?limit=%d", conv, *n), &page); err != nil {
		return err
	}
	for _, m := range page.Messages {
		printMessage(g.stdout, m)
	}
	if !*follow {
		return nil
	}
	ctx, stop := signalContext(ctx)
	defer stop()
	shown := page.Total
	var cursor uint64
	for ctx.Err() == nil {
		var batch webui.EventBatch
		if err := c.get(ctx, fmt.Sprintf("/api/v1/events?since=%d&wait=25s", cursor), &batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(time.Second)
			continue
		}
		for _, e := range batch.Events {
			cursor = max(cursor, e.Seq)
		}
		if len(batch.Events) == 0 {
			continue
		}
		if err := c.get(ctx, fmt.Sprintf("/api/v1/conversations/%s/messages?limit=500", conv), &page); err != nil {
			continue
		}
		for _, m := range page.Messages {
			if m.Position >= shown {
				printMessage(g.stdout, m)
			}
		}
		shown = max(shown, page.Total)
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
	fmt.Fprintf(w, "%s  %-12s  %s%s\n", m.Time.Local().Format("2006-01-02 15:04"), who, text, extra)
}

func cmdRead(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "read", "read CONVERSATION")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	return c.post(ctx, "/api/v1/conversations/"+url.PathEscape(fs.Arg(0))+"/read", struct{}{}, nil)
}
