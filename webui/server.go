// Package webui serves the local HTTP API (under /api/v1/) and the embedded
// browser UI. It is the only door into a running node from the machine it
// runs on, so every request passes a guard first: a Host allowlist (DNS
// rebinding), an Origin check (CSRF, WebSocket hijacking) and, for the API,
// a token.
package webui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// Status is what /api/v1/status reports.
type Status struct {
	PeerID         string   `json:"peerId"`
	Profile        string   `json:"profile"`
	Version        string   `json:"version"`
	ListenAddrs    []string `json:"listenAddrs"`
	Addrs          []string `json:"addrs"`
	ConnectedPeers []string `json:"connectedPeers"`
	DHTPeers       int      `json:"dhtPeers"`
	Reachability   string   `json:"reachability"`
	StartedAt      string   `json:"startedAt"`
	UptimeSeconds  float64  `json:"uptimeSeconds"`
	// Goroutines is the process's goroutine count (a leak shows as growth).
	Goroutines int `json:"goroutines"`
}

// Backend is what the server needs from the node. The node implements it;
// the interface lives here because webui is its consumer.
type Backend interface {
	Status(ctx context.Context) Status
	ChatBackend
	// People returns the account, invite and group side.
	People() PeopleBackend
}

// Config configures a Server.
type Config struct {
	// Token is the secret that opens the API; it lives in the data directory.
	Token string
	// Backend answers the API.
	Backend Backend
	// Logger receives request errors; never tokens or message text.
	Logger *slog.Logger
	// Addr is the address of the listener the server will Serve; it fixes
	// which Host and Origin values are accepted.
	Addr *net.TCPAddr
}

// Server is the local web server. Create it with New, then Serve a listener.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ui      fs.FS
	srv     *http.Server
	port    string
	hosts   map[string]bool // allowed Host header values
	origins map[string]bool // allowed Origin header values
	session string          // cookie value that stands for the token
	// base is the parent of every request's context; Shutdown cancels it
	// so hijacked WebSocket streams end too (http.Server does not track
	// them).
	base       context.Context
	cancelBase context.CancelFunc
	instance   string // random per server: event cursors do not survive it
}

// sessionLabel derives the cookie value from the token, so the cookie is not
// the token itself and survives a restart of the node.
const sessionLabel = "glitr/v1/api-session"

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if len(cfg.Token) < 16 {
		return nil, errors.New("webui: token too short")
	}
	if cfg.Backend == nil {
		return nil, errors.New("webui: no backend")
	}
	if cfg.Addr == nil {
		return nil, errors.New("webui: no listen address")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ui, err := fs.Sub(distFS, "dist")
	if err != nil {
		return nil, fmt.Errorf("webui: embedded UI: %w", err)
	}
	mac := hmac.New(sha256.New, []byte(cfg.Token))
	mac.Write([]byte(sessionLabel))
	s := &Server{
		cfg:     cfg,
		log:     log,
		ui:      ui,
		port:    strconv.Itoa(cfg.Addr.Port),
		session: base64.RawURLEncoding.EncodeToString(mac.Sum(nil)),
	}
	s.hosts, s.origins = allowedHosts(cfg.Addr)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.instance = rand.Text()[:12]
	s.srv = &http.Server{
		BaseContext:       func(net.Listener) context.Context { return s.base },
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return s, nil
}

// Serve answers requests on ln (whose address must be cfg.Addr) until
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancelBase()
	return s.srv.Shutdown(ctx)
}

// LoginURL is the address a user opens to log in.
func LoginURL(addr, token string) string {
	return "http://" + addr + "/login?token=" + token
}

// CookieName is the session cookie's name. Cookies are not isolated by port,
// so the port is part of the name: two nodes on one machine keep apart.
func (s *Server) CookieName() string { return "glitr_session_" + s.port }

// allowedHosts lists the Host values a browser may legitimately send: the
// bound address under the names that reach it. Anything else is a DNS
// rebinding attempt (evil.example resolving to 127.0.0.1).
func allowedHosts(addr *net.TCPAddr) (hosts, origins map[string]bool) {
	port := strconv.Itoa(addr.Port)
	names := []string{net.JoinHostPort(addr.IP.String(), port)}
	if addr.IP.IsLoopback() || addr.IP.IsUnspecified() {
		names = append(names, "127.0.0.1:"+port, "localhost:"+port, "[::1]:"+port)
	}
	if addr.IP.IsUnspecified() {
		// Listening on every interface (api.allowNonLoopback): accept the
		// machine's own addresses, so a phone on the LAN can reach the UI.
		if ifaddrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range ifaddrs {
				if ipn, ok := a.(*net.IPNet); ok {
					names = append(names, net.JoinHostPort(ipn.IP.String(), port))
				}
			}
		}
	}
	hosts, origins = map[string]bool{}, map[string]bool{}
	for _, n := range names {
		hosts[strings.ToLower(n)] = true
		origins["http://"+strings.ToLower(n)] = true
	}
	return hosts, origins
}

// Handler returns the guarded handler; exported for tests.
func (s *Server) Handler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/status", s.handleStatus)
	s.registerChat(api)
	s.registerAttachments(api)
	s.registerPeople(api)
	s.registerDevices(api)
	s.registerBackup(api)
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint")
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.handleLogin)
	mux.HandleFunc("POST /logout", s.handleLogout)
	mux.Handle("/api/", s.requireAuth(api))
	mux.Handle("/", s.static())
	return s.guard(mux)
}

// guard runs before everything: Host allowlist, Origin check, security
// headers.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		if !s.hosts[strings.ToLower(r.Host)] {
			writeCodedError(w, http.StatusForbidden, CodeForbiddenHost, "forbidden host")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !s.origins[strings.ToLower(o)] {
			writeCodedError(w, http.StatusForbidden, CodeForbiddenOrigin, "forbidden origin")
			return
		}
		// A cross-site subresource request carries no Origin on some
		// GETs; Fetch Metadata still names it. Navigations (a user
		// clicking the login link) are fine.
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" && r.Header.Get("Sec-Fetch-Mode") != "navigate" {
			writeCodedError(w, http.StatusForbidden, CodeForbiddenOrigin, "forbidden cross-site request")
			return
		}
		next.ServeHTTP(w, r)
	})
}

const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// requireAuth accepts the session cookie (browser) or the bearer token (CLI).
func (s *Server) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="glitr"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token: open the login URL the node printed, or send Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if a := r.Header.Get("Authorization"); a != "" {
		tok, ok := strings.CutPrefix(a, "Bearer ")
		return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1
	}
	c, err := r.Cookie(s.CookieName())
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.session)) == 1
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	tok := r.URL.Query().Get("token")
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
		writeError(w, http.StatusUnauthorized, "wrong or missing login token")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     s.CookieName(),
		Value:    s.session,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		MaxAge:   int((400 * 24 * time.Hour).Seconds()),
	})
	// Redirect so the token leaves the address bar and the history.
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: s.CookieName(), Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Backend.Status(r.Context()))
}

// static serves the embedded UI with cache rules a service worker can live
// with: hashed assets forever, the shell always revalidated.
func (s *Server) static() http.Handler {
	files := http.FileServerFS(s.ui)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		if r.URL.Path != "/" && s.isDir(r.URL.Path) {
			// No directory listings: the bundle's file names are not
			// anybody's business, and nothing links to a directory.
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		if strings.HasPrefix(r.URL.Path, "/assets/") {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}

// isDir reports whether the URL path names a directory of the embedded UI.
func (s *Server) isDir(urlPath string) bool {
	name := strings.Trim(path.Clean("/"+urlPath), "/")
	if name == "" {
		return true
	}
	fi, err := fs.Stat(s.ui, name)
	return err == nil && fi.IsDir()
}
