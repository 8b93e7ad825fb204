package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/webui"
)

// The node answers the web API (webui.Backend). Errors are wrapped with
// webui's sentinels so the API picks the right status.

func (n *Node) chat() (*Chat, error) {
	if n.Chat == nil {
		return nil, fmt.Errorf("%w: relay nodes keep no chat state", webui.ErrUnavailable)
	}
	return n.Chat, nil
}

func apiErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoConversation):
		return fmt.Errorf("%w: %w", webui.ErrNotFound, err)
	case errors.Is(err, ErrBadCard), errors.Is(err, ErrNotContact), errors.Is(err, ErrEmptyMessage), errors.Is(err, ErrMessageTooLong):
		return fmt.Errorf("%w: %w", webui.ErrBadRequest, err)
	}
	return err
}

// Card implements webui.ChatBackend.
func (n *Node) Card(ctx context.Context) (string, error) {
	c, err := n.chat()
	if err != nil {
		return "", err
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	return c.id.MyCard(addrInfo(n.Host))
}

func contactView(self keyring.AccountID, vc VerifiedCard) webui.Contact {
	return webui.Contact{
		Account:      hex.EncodeToString(vc.Cert.Account[:]),
		Device:       hex.EncodeToString(vc.Cert.Device[:]),
		Name:         vc.Cert.Name,
		Peer:         vc.Peer.ID.String(),
		SafetyNumber: keyring.SafetyNumber(self, vc.Cert.Account),
	}
}

// AddContact implements webui.ChatBackend.
func (n *Node) AddContact(ctx context.Context, card string) (webui.Contact, error) {
	c, err := n.chat()
	if err != nil {
		return webui.Contact{}, err
	}
	vc, err := c.AddContact(ctx, card)
	if err != nil {
		return webui.Contact{}, apiErr(err)
	}
	return contactView(c.id.AccountID(), vc), nil
}

// Contacts implements webui.ChatBackend.
func (n *Node) Contacts(ctx context.Context) ([]webui.Contact, error) {
	c, err := n.chat()
	if err != nil {
		return nil, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := []webui.Contact{}
	for _, vc := range c.contacts {
		out = append(out, contactView(c.id.AccountID(), vc))
	}
	slices.SortFunc(out, func(a, b webui.Contact) int { return strings.Compare(a.Account, b.Account) })
	return out, nil
}

// Conversations implements webui.ChatBackend.
func (n *Node) Conversations(ctx context.Context) ([]webui.Conversation, error) {
	c, err := n.chat()
	if err != nil {
		return nil, err
	}
	c.mu.RLock()
	convs := make([]*conversation, 0, len(c.convs))
	for _, conv := range c.convs {
		convs = append(convs, conv)
	}
	c.mu.RUnlock()
	out := make([]webui.Conversation, 0, len(convs))
	for _, conv := range convs {
		out = append(out, c.summary(conv))
	}
	// Most recent activity first.
	slices.SortFunc(out, func(a, b webui.Conversation) int {
		var ta, tb time.Time
		if a.LastMessage != nil {
			ta = a.LastMessage.Time
		}
		if b.LastMessage != nil {
			tb = b.LastMessage.Time
		}
		if c := tb.Compare(ta); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (c *Chat) summary(conv *conversation) webui.Conversation {
	conv.mu.Lock()
	defer conv.mu.Unlock()
	self := crdt.AccountID(c.id.AccountID())
	s := webui.Conversation{ID: conv.hexID, Title: conv.state.Title(), Messages: conv.state.Len()}
	for _, m := range conv.state.Members() {
		s.Members = append(s.Members, webui.Member{Account: hex.EncodeToString(m.Account[:]), Admin: m.Admin, Self: m.Account == self})
	}
	_, read := conv.state.Receipts(self)
	s.Unread = conv.state.UnreadCount(self, read)
	if n := conv.state.Len(); n > 0 {
		m := c.messageView(conv, conv.state.At(n-1), n-1)
		s.LastMessage = &m
	}
	return s
}

// messageView converts a CRDT message for the API; conv.mu is held.
func (c *Chat) messageView(conv *conversation, v crdt.MessageView, pos int) webui.Message {
	self := crdt.AccountID(c.id.AccountID())
	m := webui.Message{
		ID: v.ID.String(), Position: pos, Author: hex.EncodeToString(v.Author[:]),
		Mine: v.Author == self, Time: time.UnixMilli(v.Time), Text: v.Text,
		Edited: v.Edited, Deleted: v.Deleted,
	}
	if v.ReplyTo != nil {
		m.ReplyTo = v.ReplyTo.String()
	}
	for _, r := range v.Reactions {
		wr := webui.Reaction{Emoji: r.Emoji}
		for _, a := range r.Accounts {
			wr.Accounts = append(wr.Accounts, hex.EncodeToString(a[:]))
		}
		m.Reactions = append(m.Reactions, wr)
	}
	if m.Mine {
		m.Status = "sending"
		if v.Device == crdt.DeviceID(c.id.DeviceID()) && v.Seq > 0 && v.Seq <= conv.ackedSeq {
			m.Status = "sent"
		}
		if overall, _, ok := conv.state.MessageStatus(v.ID); ok {
			switch overall {
			case crdt.StatusDelivered:
				m.Status = "delivered"
			case crdt.StatusRead:
				m.Status = "read"
			}
		}
	}
	return m
}

// CreateConversation implements webui.ChatBackend.
func (n *Node) CreateConversation(ctx context.Context, title string, members []string) (webui.Conversation, error) {
	c, err := n.chat()
	if err != nil {
		return webui.Conversation{}, err
	}
	if len(members) == 0 {
		return webui.Conversation{}, fmt.Errorf("%w: a conversation needs at least one other member", webui.ErrBadRequest)
	}
	var accts []keyring.AccountID
	for _, m := range members {
		a, err := parseAccount(m)
		if err != nil {
			return webui.Conversation{}, err
		}
		accts = append(accts, a)
	}
	id, err := c.CreateConversation(ctx, title, accts)
	if err != nil {
		return webui.Conversation{}, apiErr(err)
	}
	conv, err := c.conversation(id)
	if err != nil {
		return webui.Conversation{}, apiErr(err)
	}
	return c.summary(conv), nil
}

func parseAccount(s string) (keyring.AccountID, error) {
	var a keyring.AccountID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(a) {
		return a, fmt.Errorf("%w: %q is not a 64-digit hex account key", webui.ErrBadRequest, s)
	}
	copy(a[:], b)
	return a, nil
}

// Messages implements webui.ChatBackend.
func (n *Node) Messages(ctx context.Context, id string, before, limit int) (webui.MessagePage, error) {
	c, err := n.chat()
	if err != nil {
		return webui.MessagePage{}, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return webui.MessagePage{}, apiErr(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	total := conv.state.Len()
	if before <= 0 || before > total {
		before = total
	}
	views := conv.state.Page(before, limit)
	p := webui.MessagePage{Messages: make([]webui.Message, 0, len(views)), Total: total}
	first := before - len(views)
	for i, v := range views {
		p.Messages = append(p.Messages, c.messageView(conv, v, first+i))
	}
	p.Before = first
	return p, nil
}

// resolve finds a conversation by its id or a unique prefix of it.
func (c *Chat) resolve(id string) (*conversation, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	c.mu.RLock()
	defer c.mu.RUnlock()
	if conv, ok := c.convs[id]; ok {
		return conv, nil
	}
	var found *conversation
	for k, conv := range c.convs {
		if id != "" && strings.HasPrefix(k, id) {
			if found != nil {
				return nil, fmt.Errorf("%w: %q matches several conversations", ErrNoConversation, id)
			}
			found = conv
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoConversation, id)
	}
	return found, nil
}

// Send implements webui.ChatBackend.
func (n *Node) Send(ctx context.Context, id, text, replyTo string) (webui.Message, error) {
	c, err := n.chat()
	if err != nil {
		return webui.Message{}, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return webui.Message{}, apiErr(err)
	}
	var reply *crdt.MsgID
	if replyTo != "" {
		m, err := parseMsgID(replyTo)
		if err != nil {
			return webui.Message{}, err
		}
		reply = &m
	}
	mid, err := c.Send(ctx, conv.hexID, text, reply)
	if err != nil {
		return webui.Message{}, apiErr(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	pos, _ := conv.state.Position(mid)
	v, _ := conv.state.Message(mid)
	return c.messageView(conv, v, pos), nil
}

// parseMsgID reads the "<cid>/<index>" or "<cid>" form of a message id.
func parseMsgID(s string) (crdt.MsgID, error) {
	cs, idx, _ := strings.Cut(s, "/")
	c, err := cid.Decode(cs)
	if err != nil {
		return crdt.MsgID{}, fmt.Errorf("%w: message id %q: %w", webui.ErrBadRequest, s, err)
	}
	id := crdt.MsgID{Event: c}
	if idx != "" {
		var i uint16
		if _, err := fmt.Sscanf(idx, "%d", &i); err != nil {
			return crdt.MsgID{}, fmt.Errorf("%w: message id %q", webui.ErrBadRequest, s)
		}
		id.Index = i
	}
	return id, nil
}

// MarkRead implements webui.ChatBackend.
func (n *Node) MarkRead(ctx context.Context, id string) error {
	c, err := n.chat()
	if err != nil {
		return err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return apiErr(err)
	}
	return apiErr(c.MarkRead(ctx, conv.hexID))
}

// WaitEvents implements webui.ChatBackend.
func (n *Node) WaitEvents(ctx context.Context, since uint64) (webui.EventBatch, error) {
	c, err := n.chat()
	if err != nil {
		return webui.EventBatch{}, err
	}
	evs, gap, err := c.events.wait(ctx, since)
	if err != nil {
		return webui.EventBatch{}, err
	}
	b := webui.EventBatch{Events: make([]webui.Event, 0, len(evs)), Gap: gap}
	for _, e := range evs {
		b.Events = append(b.Events, webui.Event(e))
	}
	return b, nil
}
