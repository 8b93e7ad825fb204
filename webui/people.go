package webui

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Account describes the local account for the onboarding and unlock screens.
type Account struct {
	State         string `json:"state"` // "new", "locked" or "ready"
	Account       string `json:"account"`
	Device        string `json:"device"`
	Name          string `json:"name"`
	Avatar        string `json:"avatar,omitempty"`
	HasPassphrase bool   `json:"hasPassphrase"`
}

// Preferences are the account's settings.
type Preferences struct {
	Theme         string `json:"theme"`    // "system", "light" or "dark"
	Language      string `json:"language"` // "" = the browser's
	Notifications bool   `json:"notifications"`
	ShowPresence  bool   `json:"showPresence"`
	ReadReceipts  bool   `json:"readReceipts"`
}

// Invite is a one-time contact invitation.
type Invite struct {
	Link    string    `json:"link"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// PeopleBackend is the account, invite and group side of the node.
type PeopleBackend interface {
	Account(ctx context.Context) (Account, error)
	CreateAccount(ctx context.Context, name, passphrase string) (words []string, err error)
	Unlock(ctx context.Context, passphrase string) error
	SetProfile(ctx context.Context, name, avatar string) error
	Preferences(ctx context.Context) (Preferences, error)
	SetPreferences(ctx context.Context, p Preferences) error
	CreateInvite(ctx context.Context, ttl time.Duration) (Invite, error)
	InviteQR(link, format string) ([]byte, error)
	AcceptInvite(ctx context.Context, link string) (account, conversation string, err error)
	VerifyContact(ctx context.Context, account string, verified bool) error
	// BlockContact blocks (or unblocks) a contact: no typing, presence or
	// receipts either way, and no new conversations started by them.
	BlockContact(ctx context.Context, account string, blocked bool) error
	AddMember(ctx context.Context, conv, account string) error
	RemoveMember(ctx context.Context, conv, account string) error
	Leave(ctx context.Context, conv string) error
	SetConversationInfo(ctx context.Context, conv, title, avatar string) error
}

// Limits on people requests, checked before the backend sees them.
const (
	maxNameLen       = 128
	maxPassphraseLen = 1024
	maxAvatarLen     = 64 << 10 // data: URL, as node.SetProfile allows
	maxInviteLinkLen = 4096
)

var validThemes = map[string]bool{"system": true, "light": true, "dark": true}

func (s *Server) registerPeople(api *http.ServeMux) {
	p := s.cfg.Backend.People()
	api.HandleFunc("GET /api/v1/account", func(w http.ResponseWriter, r *http.Request) {
		a, err := p.Account(r.Context())
		reply(w, a, err)
	})
	api.HandleFunc("POST /api/v1/account", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name       string `json:"name"`
			Passphrase string `json:"passphrase"`
		}
		if !decode(w, r, &req) {
			return
		}
		req.Name = strings.TrimSpace(req.Name)
		switch {
		case req.Name == "":
			writeError(w, http.StatusBadRequest, "name is required")
			return
		case len(req.Name) > maxNameLen:
			writeError(w, http.StatusBadRequest, "name is longer than 128 bytes")
			return
		case len(req.Passphrase) > maxPassphraseLen:
			writeError(w, http.StatusBadRequest, "passphrase is longer than 1024 bytes")
			return
		}
		words, err := p.CreateAccount(r.Context(), req.Name, req.Passphrase)
		replyStatus(w, http.StatusCreated, map[string][]string{"recoveryWords": words}, err)
	})
	api.HandleFunc("POST /api/v1/unlock", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Passphrase string `json:"passphrase"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Passphrase == "" || len(req.Passphrase) > maxPassphraseLen {
			writeError(w, http.StatusBadRequest, "passphrase is required (at most 1024 bytes)")
			return
		}
		err := p.Unlock(r.Context(), req.Passphrase)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("PUT /api/v1/profile", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name   string `json:"name"`
			Avatar string `json:"avatar"`
		}
		if !decodeLimit(w, r, &req, maxAvatarLen+maxRequestBody) {
			return
		}
		req.Name = strings.TrimSpace(req.Name)
		switch {
		case req.Name == "" || len(req.Name) > maxNameLen:
			writeError(w, http.StatusBadRequest, "name is required (at most 128 bytes)")
			return
		case req.Avatar != "" && !strings.HasPrefix(req.Avatar, "data:image/"):
			writeError(w, http.StatusBadRequest, "avatar must be a data:image/... URL")
			return
		case len(req.Avatar) > maxAvatarLen:
			writeError(w, http.StatusBadRequest, "avatar is larger than 64 KiB")
			return
		}
		err := p.SetProfile(r.Context(), req.Name, req.Avatar)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("GET /api/v1/preferences", func(w http.ResponseWriter, r *http.Request) {
		prefs, err := p.Preferences(r.Context())
		reply(w, prefs, err)
	})
	api.HandleFunc("PUT /api/v1/preferences", func(w http.ResponseWriter, r *http.Request) {
		var req Preferences
		if !decode(w, r, &req) {
			return
		}
		if !validThemes[req.Theme] {
			writeError(w, http.StatusBadRequest, `theme must be "system", "light" or "dark"`)
			return
		}
		if len(req.Language) > 35 {
			writeError(w, http.StatusBadRequest, "language is not a BCP 47 tag")
			return
		}
		err := p.SetPreferences(r.Context(), req)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("POST /api/v1/invites", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TTL string `json:"ttl"` // Go duration; "" = the node's default
		}
		if !decode(w, r, &req) {
			return
		}
		var ttl time.Duration
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 || d > 30*24*time.Hour {
				writeError(w, http.StatusBadRequest, "ttl must be a duration between 1s and 720h")
				return
			}
			ttl = d
		}
		inv, err := p.CreateInvite(r.Context(), ttl)
		replyStatus(w, http.StatusCreated, inv, err)
	})
	api.HandleFunc("GET /api/v1/invites/qr", func(w http.ResponseWriter, r *http.Request) {
		link := r.URL.Query().Get("link")
		if link == "" || len(link) > maxInviteLinkLen {
			writeError(w, http.StatusBadRequest, "link is required (at most 4096 bytes)")
			return
		}
		img, err := p.InviteQR(link, "svg")
		if err != nil {
			replyStatus(w, 0, nil, err)
			return
		}
		w.Header().Set("Content-Type", "image/svg+xml")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(img)
	})
	api.HandleFunc("POST /api/v1/invites/accept", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Link string `json:"link"`
		}
		if !decode(w, r, &req) {
			return
		}
		req.Link = strings.TrimSpace(req.Link)
		if req.Link == "" || len(req.Link) > maxInviteLinkLen {
			writeError(w, http.StatusBadRequest, "link is required (at most 4096 bytes)")
			return
		}
		acct, conv, err := p.AcceptInvite(r.Context(), req.Link)
		reply(w, map[string]string{"account": acct, "conversation": conv}, err)
	})
	api.HandleFunc("PUT /api/v1/contacts/{account}/verified", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Verified bool `json:"verified"`
		}
		if !decode(w, r, &req) {
			return
		}
		err := p.VerifyContact(r.Context(), r.PathValue("account"), req.Verified)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("PUT /api/v1/contacts/{account}/block", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Blocked bool `json:"blocked"`
		}
		if !decode(w, r, &req) {
			return
		}
		err := p.BlockContact(r.Context(), r.PathValue("account"), req.Blocked)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/members", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Account string `json:"account"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Account == "" {
			writeError(w, http.StatusBadRequest, "account is required")
			return
		}
		err := p.AddMember(r.Context(), r.PathValue("id"), req.Account)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("DELETE /api/v1/conversations/{id}/members/{account}", func(w http.ResponseWriter, r *http.Request) {
		err := p.RemoveMember(r.Context(), r.PathValue("id"), r.PathValue("account"))
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("POST /api/v1/conversations/{id}/leave", func(w http.ResponseWriter, r *http.Request) {
		err := p.Leave(r.Context(), r.PathValue("id"))
		replyStatus(w, http.StatusNoContent, nil, err)
	})
	api.HandleFunc("PUT /api/v1/conversations/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Title  string `json:"title"`
			Avatar string `json:"avatar"`
		}
		if !decodeLimit(w, r, &req, maxAvatarLen+maxRequestBody) {
			return
		}
		if len(req.Title) > maxNameLen {
			writeError(w, http.StatusBadRequest, "title is longer than 128 bytes")
			return
		}
		if req.Avatar != "" && !strings.HasPrefix(req.Avatar, "data:image/") {
			writeError(w, http.StatusBadRequest, "avatar must be a data:image/... URL")
			return
		}
		err := p.SetConversationInfo(r.Context(), r.PathValue("id"), req.Title, req.Avatar)
		replyStatus(w, http.StatusNoContent, nil, err)
	})
}
