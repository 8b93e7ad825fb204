package webui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Contact is a person this node can start conversations with.
type Contact struct {
	Account string `json:"account"` // hex account key
	Device  string `json:"device"`
	Name    string `json:"name"`
	Peer    string `json:"peer"`
	// SafetyNumber is the 60-digit number both sides compare out of band.
	SafetyNumber string `json:"safetyNumber"`
	// Verified: the user compared the safety number and marked it so.
	Verified bool `json:"verified"`
	// KeyChanged: this contact took the name of an earlier contact with
	// another account key (a reinstall without backup, or an impostor);
	// show a loud warning until the users verify the safety number.
	KeyChanged bool `json:"keyChanged,omitempty"`
	// Blocked: the user blocked this contact (no typing, presence or
	// receipts either way, no new conversations from them).
	Blocked bool `json:"blocked"`
}

// Member is a conversation member.
type Member struct {
	Account string `json:"account"`
	Admin   bool   `json:"admin"`
	Self    bool   `json:"self"`
	// Name is the contact's name for a contact, else the display name
	// the member published in the conversation ("" when none yet): a
	// claim of theirs, not verified by this account.
	Name string `json:"name"`
	// Contact: the member is one of this account's contacts.
	Contact bool `json:"contact"`
	// Verified: a contact whose safety number the user verified.
	Verified bool `json:"verified"`
}

// Reaction is an emoji and who reacted with it.
type Reaction struct {
	Emoji    string   `json:"emoji"`
	Accounts []string `json:"accounts"`
}

// Message is one message as displayed.
type Message struct {
	ID       string    `json:"id"`
	Position int       `json:"position"` // display position, for paging
	Author   string    `json:"author"`
	Mine     bool      `json:"mine"`
	Time     time.Time `json:"time"`
	Text     string    `json:"text"`
	// Attachment is the message's file, nil for text only (and once
	// deleted).
	Attachment *Attachment `json:"attachment,omitempty"`
	ReplyTo    string      `json:"replyTo,omitempty"`
	Edited     bool        `json:"edited,omitempty"`
	Deleted    bool        `json:"deleted,omitempty"`
	Reactions  []Reaction  `json:"reactions,omitempty"`
	// Status of an own message: sending, sent, delivered or read.
	Status string `json:"status,omitempty"`
	// ClientID is the id the client chose when it sent this message from
	// this node (see SendRequest).
	ClientID string `json:"clientId,omitempty"`
}

// SendRequest is a message to post.
type SendRequest struct {
	Text    string
	ReplyTo string
	// ClientID, when set, makes the send idempotent: a second send with
	// the same ClientID in the conversation returns the first one's
	// message instead of posting another (a client retrying after a lost
	// answer or a restart of either side).
	ClientID string
}

// Limits of a client id: long enough for a random UUID, short enough to
// keep the node's record of them small.
const (
	minClientIDLen = 16
	maxClientIDLen = 64
)

// validClientID: 16-64 characters of [A-Za-z0-9_-].
func validClientID(s string) bool {
	if len(s) < minClientIDLen || len(s) > maxClientIDLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Conversation kinds.
const (
	KindDirect = "direct"
	KindGroup  = "group"
)

// Conversation summarises a conversation for the list.
type Conversation struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"` // KindDirect or KindGroup
	Title string `json:"title"`
	// Muted: the user muted the conversation (no notifications).
	Muted bool `json:"muted"`
	// Blocked (direct conversations): the other account is blocked.
	Blocked     bool     `json:"blocked,omitempty"`
	Members     []Member `json:"members"`
	Messages    int      `json:"messages"`
	Unread      int      `json:"unread"`
	LastMessage *Message `json:"lastMessage,omitempty"`
}

// MessagePage is a page of messages, oldest first.
type MessagePage struct {
	Messages []Message `json:"messages"`
	// Before is the position of the first message of the page: the
	// cursor for the older page (before=Before); 0 when there is none.
	Before int `json:"before"`
	// After is the position of the last message of the page: the cursor
	// for the newer page (after=After). With no messages, the position
	// the page would have started at, minus one.
	After int `json:"after"`
	Total int `json:"total"`
}

// MessageQuery selects a page of messages. Before and After are cursors:
// a display position or a message id ("" for none). With Before, the page
// holds the Limit messages just before it; with After, the Limit messages
// just after it; with neither, the newest Limit messages.
type MessageQuery struct {
	Before, After string
	Limit         int
}

// Limits of a page of messages.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// ConversationSettings are this account's own settings of a conversation;
// nil fields are left as they are.
type ConversationSettings struct {
	Muted *bool `json:"muted"`
}

// Event is a change notification; clients refetch what changed.
type Event struct {
	Seq          uint64 `json:"seq"`
	Kind         string `json:"kind"`
	Conversation string `json:"conversation,omitempty"`
	Message      string `json:"message,omitempty"`
}

// EventBatch answers /events: what happened after the cursor. Gap means
// events were lost (the client must refetch everything).
type EventBatch struct {
	Events []Event `json:"events"`
	Gap    bool    `json:"gap"`
}

// ChatBackend is the conversation part of the node. A relay node
// implements it by returning ErrUnavailable.
type ChatBackend interface {
	Card(ctx context.Context) (string, error)
	AddContact(ctx context.Context, card string) (Contact, error)
	Contacts(ctx context.Context) ([]Contact, error)
	Conversations(ctx context.Context) ([]Conversation, error)
	CreateConversation(ctx context.Context, title string, members []string) (Conversation, error)
	MessagePage(ctx context.Context, conv string, q MessageQuery) (MessagePage, error)
	// PostMessage posts a message; created is false when req.ClientID
	// named a message sent before, which is returned instead.
	PostMessage(ctx context.Context, conv string, req SendRequest) (m Message, created bool, err error)
	// SetConversationSettings changes this account's settings of a
	// conversation.
	SetConversationSettings(ctx context.Context, conv string, s ConversationSettings) error
	MarkRead(ctx context.Context, conv string) error
	// Edit replaces the text of one of this account's messages.
	Edit(ctx context.Context, conv, msg, text string) (Message, error)
	// Delete deletes one of this account's messages for everyone.
	Delete(ctx context.Context, conv, msg string) error
	// React adds (add=true) or removes this account's reaction emoji.
	React(ctx context.Context, conv, msg, emoji string, add bool) error
	// WaitEvents returns the events after since, waiting until there is one
	// or ctx ends.
	WaitEvents(ctx context.Context, since uint64) (EventBatch, error)
	// LastEventSeq is the sequence number of the newest event (0: none).
	LastEventSeq(ctx context.Context) (uint64, error)
	// SignalBackend carries the ephemeral signals (typing, presence).
	SignalBackend
}

// Signal is an ephemeral notification: never stored, never replayed, so it
// has no sequence number.
type Signal struct {
	Kind         string     `json:"kind"` // "typing" or "presence"
	Conversation string     `json:"conversation,omitempty"`
	Account      string     `json:"account"`
	Online       bool       `json:"online,omitempty"`
	LastSeen     *time.Time `json:"lastSeen,omitempty"`
}

// Presence is what is known of a contact's online status.
type Presence struct {
	Online   bool       `json:"online"`
	LastSeen *time.Time `json:"lastSeen,omitempty"`
}

// SignalBackend sends and receives ephemeral signals.
type SignalBackend interface {
	// Typing tells the other members that this account is typing.
	Typing(ctx context.Context, conv string) error
	// Presence reports the contacts' online status, by hex account.
	Presence(ctx context.Context) (map[string]Presence, error)
	// SubscribeSignals delivers signals until ctx ends; the channel is
	// then closed. A slow reader loses signals (they are ephemeral).
	SubscribeSignals(ctx context.Context) <-chan Signal
}

const maxRequestBody = 64 << 10

func (s *Server) registerChat(api *http.ServeMux) {
	b := s.cfg.Backend
	api.HandleFunc("GET /api/v1/card", func(w http.ResponseWriter, r *http.Request) {
		card, err := b.Card(r.Context())
		reply(w, map[string]string{"card": card}, err)
	})
	api.HandleFunc("GET /api/v1/contacts", func(w http.ResponseWriter, r *http.Request) {
		cs, err := b.Contacts(r.Context())
		reply(w, cs, err)
	})
	api.HandleFunc("POST /api/v1/contacts", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Card string `json:"card"`
		}
		if !decode(w, r, &req) {
			return
		}
		c, err := b.AddContact(r.Context(), req.Card)
		replyStatus(w, http.StatusCreated, c, err)
	})
	api.HandleFunc("GET /api/v1/conversations", func(w http.ResponseWriter, r *http.Request) {
		cs, err := b.Conversations(r.Context())
		reply(w, cs, err)
	})
	api.HandleFunc("POST /api/v1/conversations", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Title   string   `json:"title"`
			Members []string `json:"members"`
		}
		if !decode(w, r, &req) {
			return
		}
		c, err := b.CreateConversation(r.Context(), req.Title, req.Members)
		replyStatus(w, http.StatusCreated, c, err)
	})
	api.HandleFunc("GET /api/v1/conversations/{id}/messages", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mq := MessageQuery{Before: q.Get("before"), After: q.Get("after"), Limit: DefaultPageLimit}
		if mq.Before != "" && mq.After != "" {
			writeError(w, http.StatusBadRequest, "give before or after, not both")
			return
		}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > MaxPageLimit {
				writeCodedError(w, http.StatusBadRequest, CodeBadLimit, fmt.Sprintf("limit must be a number from 1 to %d (page through longer histories with before= or after=)", MaxPageLimit))
				return
			}
			mq.Limit = n
		}
		p, err := b.MessagePage(r.Context(), r.PathValue("id"), mq)
		reply(w, p, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/messages", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Text     string `json:"text"`
			ReplyTo  string `json:"replyTo"`
			ClientID string `json:"clientId"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.ClientID != "" && !validClientID(req.ClientID) {
			writeError(w, http.StatusBadRequest, "clientId must be 16 to 64 characters of A-Z, a-z, 0-9, - and _")
			return
		}
		m, created, err := b.PostMessage(r.Context(), r.PathValue("id"), SendRequest{Text: req.Text, ReplyTo: req.ReplyTo, ClientID: req.ClientID})
		status := http.StatusCreated
		if !created {
			status = http.StatusOK
		}
		replyStatus(w, status, m, err)
	})
	api.HandleFunc("PUT /api/v1/conversations/{id}/settings", func(w http.ResponseWriter, r *http.Request) {
		var req ConversationSettings
		if !decode(w, r, &req) {
			return
		}
		replyStatus(w, http.StatusNoContent, nil, b.SetConversationSettings(r.Context(), r.PathValue("id"), req))
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/read", func(w http.ResponseWriter, r *http.Request) {
		err := b.MarkRead(r.Context(), r.PathValue("id"))
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("PUT /api/v1/conversations/{id}/messages/{msg...}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Text string `json:"text"`
		}
		if !decode(w, r, &req) {
			return
		}
		m, err := b.Edit(r.Context(), r.PathValue("id"), r.PathValue("msg"), req.Text)
		reply(w, m, err)
	})
	api.HandleFunc("DELETE /api/v1/conversations/{id}/messages/{msg...}", func(w http.ResponseWriter, r *http.Request) {
		err := b.Delete(r.Context(), r.PathValue("id"), r.PathValue("msg"))
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/reactions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Message string `json:"message"`
			Emoji   string `json:"emoji"`
			Remove  bool   `json:"remove"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Message == "" || req.Emoji == "" {
			writeError(w, http.StatusBadRequest, "message and emoji are required")
			return
		}
		err := b.React(r.Context(), r.PathValue("id"), req.Message, req.Emoji, !req.Remove)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/typing", func(w http.ResponseWriter, r *http.Request) {
		err := b.Typing(r.Context(), r.PathValue("id"))
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("GET /api/v1/presence", func(w http.ResponseWriter, r *http.Request) {
		p, err := b.Presence(r.Context())
		reply(w, p, err)
	})
	api.HandleFunc("GET /api/v1/ws", s.handleWS)
	api.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
		if err != nil || wait < 0 || wait > time.Minute {
			wait = 25 * time.Second
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		batch, err := b.WaitEvents(ctx, since)
		if errors.Is(err, context.DeadlineExceeded) {
			batch, err = EventBatch{Events: []Event{}}, nil
		}
		reply(w, batch, err)
	})
}
