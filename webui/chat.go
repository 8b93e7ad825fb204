package webui

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Errors a Backend wraps so the API can answer with the right status.
var (
	ErrNotFound    = errors.New("not found")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("not available on this node")
	// ErrForbidden: allowed for someone, not for this account (not an
	// admin, not the author of the message).
	ErrForbidden = errors.New("forbidden")
	// ErrLocked: the account is locked; unlock it with the passphrase.
	ErrLocked = errors.New("account locked")
	// ErrConflict: the request contradicts the state (account already
	// set up, recovery words already shown).
	ErrConflict = errors.New("conflict")
	// ErrWrongPassphrase: the passphrase does not open the keyring.
	ErrWrongPassphrase = errors.New("wrong passphrase")
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
}

// Member is a conversation member.
type Member struct {
	Account string `json:"account"`
	Admin   bool   `json:"admin"`
	Self    bool   `json:"self"`
}

// Reaction is an emoji and who reacted with it.
type Reaction struct {
	Emoji    string   `json:"emoji"`
	Accounts []string `json:"accounts"`
}

// Message is one message as displayed.
type Message struct {
	ID        string     `json:"id"`
	Position  int        `json:"position"` // display position, for paging
	Author    string     `json:"author"`
	Mine      bool       `json:"mine"`
	Time      time.Time  `json:"time"`
	Text      string     `json:"text"`
	ReplyTo   string     `json:"replyTo,omitempty"`
	Edited    bool       `json:"edited,omitempty"`
	Deleted   bool       `json:"deleted,omitempty"`
	Reactions []Reaction `json:"reactions,omitempty"`
	// Status of an own message: sending, sent, delivered or read.
	Status string `json:"status,omitempty"`
}

// Conversation summarises a conversation for the list.
type Conversation struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Members     []Member `json:"members"`
	Messages    int      `json:"messages"`
	Unread      int      `json:"unread"`
	LastMessage *Message `json:"lastMessage,omitempty"`
}

// MessagePage is a page of messages, oldest first.
type MessagePage struct {
	Messages []Message `json:"messages"`
	// Before is the cursor for the previous (older) page; 0 when there is none.
	Before int `json:"before"`
	Total  int `json:"total"`
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
	Messages(ctx context.Context, conv string, before, limit int) (MessagePage, error)
	Send(ctx context.Context, conv, text, replyTo string) (Message, error)
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
		before, _ := strconv.Atoi(r.URL.Query().Get("before"))
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil || limit <= 0 || limit > 500 {
			limit = 50
		}
		p, err := b.Messages(r.Context(), r.PathValue("id"), before, limit)
		reply(w, p, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/messages", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Text    string `json:"text"`
			ReplyTo string `json:"replyTo"`
		}
		if !decode(w, r, &req) {
			return
		}
		m, err := b.Send(r.Context(), r.PathValue("id"), req.Text, req.ReplyTo)
		replyStatus(w, http.StatusCreated, m, err)
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

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeLimit(w, r, v, maxRequestBody)
}

// decodeLimit reads one JSON value of at most limit bytes into v, refusing
// unknown fields and trailing data.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) { replyStatus(w, http.StatusOK, v, err) }

func replyStatus(w http.ResponseWriter, code int, v any, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusNotImplemented, err.Error())
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrWrongPassphrase):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, ErrLocked):
		writeError(w, http.StatusLocked, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
	case err != nil:
		// Internal errors are logged by the backend; the message names the
		// operation, never secrets.
		writeError(w, http.StatusInternalServerError, err.Error())
	case code == http.StatusNoContent:
		w.WriteHeader(code)
	default:
		writeJSON(w, code, v)
	}
}
