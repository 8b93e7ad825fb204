package webui

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Frame is one message of the WebSocket event stream (server to client,
// JSON text frames):
//
//   - "hello": first frame; Seq is the cursor the stream starts after,
//     Instance names this run of the node (resume with ?since=N&instance=I).
//   - an event kind ("message", "conversation", "state", ...): Seq is its
//     sequence number; the client stores the last one it processed and
//     reconnects with ?since=<seq> to get exactly what it missed.
//   - "gap": events after the cursor were already dropped; refetch all.
//   - "typing", "presence": ephemeral signals, no Seq, never replayed.
//   - "ping": keep-alive every pingInterval, so a client notices a dead link.
type Frame struct {
	Seq          uint64     `json:"seq,omitempty"`
	Kind         string     `json:"kind"`
	Conversation string     `json:"conversation,omitempty"`
	Message      string     `json:"message,omitempty"`
	Account      string     `json:"account,omitempty"`
	Online       bool       `json:"online,omitempty"`
	LastSeen     *time.Time `json:"lastSeen,omitempty"`
	// Instance (hello only) changes when the node restarts: its event
	// sequence numbers start over, so a client holding a cursor from
	// another instance must refetch instead of resuming.
	Instance string `json:"instance,omitempty"`
}

const (
	pingInterval = 20 * time.Second
	// writeTimeout bounds one frame's write: a client that does not read
	// is disconnected (it reconnects with its cursor and loses nothing)
	// rather than skipped (which would lose events).
	writeTimeout = 10 * time.Second
)

// handleWS serves GET /api/v1/ws[?since=N]. It runs behind guard and
// requireAuth, so Host, Origin and the session are checked before the
// upgrade; the library's own Origin check is a second line.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	b := s.cfg.Backend
	var since uint64
	resume := r.URL.Query().Has("since")
	head, err := b.LastEventSeq(r.Context())
	if err != nil {
		replyStatus(w, 0, nil, err)
		return
	}
	since, gap := head, false
	if resume {
		v, err := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since must be an event sequence number")
			return
		}
		since = v
		if q := r.URL.Query().Get("instance"); (q != "" && q != s.instance) || v > head {
			// A cursor of an earlier run of the node: start at the head
			// and tell the client to refetch.
			since, gap = head, true
		}
	}
	patterns := make([]string, 0, len(s.origins))
	for o := range s.origins {
		patterns = append(patterns, strings.TrimPrefix(o, "http://"))
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: patterns})
	if err != nil {
		return // Accept has answered the request
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 10)
	// The stream is write-only: CloseRead answers pings and notices the
	// client going away; its context ends then.
	ctx := c.CloseRead(r.Context())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = s.streamEvents(ctx, c, since, gap)
	switch {
	case errors.Is(err, errSlowClient):
		c.Close(websocket.StatusTryAgainLater, "too slow: reconnect with your cursor")
	case err != nil && ctx.Err() == nil:
		s.log.Debug("event stream ended", "err", err)
		c.Close(websocket.StatusInternalError, "stream failed")
	default:
		c.Close(websocket.StatusNormalClosure, "")
	}
}

var errSlowClient = errors.New("client does not read")

func (s *Server) streamEvents(ctx context.Context, c *websocket.Conn, since uint64, gap bool) error {
	b := s.cfg.Backend
	send := func(f Frame) error {
		data, err := json.Marshal(f)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		if err := c.Write(wctx, websocket.MessageText, data); err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return errSlowClient
			}
			return err
		}
		return nil
	}
	if err := send(Frame{Kind: "hello", Seq: since, Instance: s.instance}); err != nil {
		return err
	}
	if gap {
		if err := send(Frame{Kind: "gap"}); err != nil {
			return err
		}
	}
	signals := b.SubscribeSignals(ctx)
	batches := make(chan EventBatch)
	errc := make(chan error, 1)
	// One goroutine waits for events and hands them over in order; the
	// loop below owns the connection's writes.
	go func() {
		cursor := since
		for {
			batch, err := b.WaitEvents(ctx, cursor)
			if err != nil {
				errc <- err
				return
			}
			if n := len(batch.Events); n > 0 {
				cursor = batch.Events[n-1].Seq
			}
			select {
			case batches <- batch:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case batch := <-batches:
			if batch.Gap {
				if err := send(Frame{Kind: "gap"}); err != nil {
					return err
				}
			}
			for _, e := range batch.Events {
				if err := send(Frame{Seq: e.Seq, Kind: e.Kind, Conversation: e.Conversation, Message: e.Message}); err != nil {
					return err
				}
			}
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			if err := send(Frame{Kind: sig.Kind, Conversation: sig.Conversation, Account: sig.Account, Online: sig.Online, LastSeen: sig.LastSeen}); err != nil {
				return err
			}
		case <-ping.C:
			if err := send(Frame{Kind: "ping"}); err != nil {
				return err
			}
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
