package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/webui"
)

// The node answers the web API (webui.Backend). Errors are wrapped with
// webui's sentinels so the API picks the right status.

func (n *Node) chat() (*Chat, error) {
	c, err := n.readyChat()
	switch {
	case errors.Is(err, ErrAccountLocked):
		return nil, fmt.Errorf("%w: %w", webui.ErrLocked, err)
	case err != nil:
		return nil, fmt.Errorf("%w: relay nodes keep no chat state", webui.ErrUnavailable)
	}
	return c, nil
}

// apiErrors maps the node's errors to the API's: the status (a webui
// sentinel) and the code the browser translates. The first match wins, so
// specific errors come before the general ones they may wrap.
var apiErrors = []struct {
	err    error
	status error
	code   string
}{
	{ErrNoConversation, webui.ErrNotFound, webui.CodeNoConversation},
	{ErrNoMessage, webui.ErrNotFound, webui.CodeNoMessage},
	{card.ErrBadCard, webui.ErrBadRequest, webui.CodeBadCard},
	{ErrNotContact, webui.ErrBadRequest, webui.CodeNotContact},
	{ErrEmptyMessage, webui.ErrBadRequest, webui.CodeMessageEmpty},
	{ErrMessageTooLong, webui.ErrBadRequest, webui.CodeMessageTooLong},
	{ErrBadEmoji, webui.ErrBadRequest, webui.CodeBadEmoji},
	{ErrMessageDeleted, webui.ErrBadRequest, webui.CodeMessageDeleted},
	{ErrInviteInvalid, webui.ErrBadRequest, webui.CodeInviteInvalid},
	{ErrInviteExpired, webui.ErrBadRequest, webui.CodeInviteExpired},
	{ErrInviteUsed, webui.ErrBadRequest, webui.CodeInviteUsed},
	{people.ErrInviteTTL, webui.ErrBadRequest, webui.CodeBadRequest},
	{ErrLinkInvalid, webui.ErrBadRequest, webui.CodeLinkInvalid},
	{ErrLinkExpired, webui.ErrBadRequest, webui.CodeLinkExpired},
	{ErrLinkUsed, webui.ErrBadRequest, webui.CodeLinkUsed},
	{ErrNotOwnDevice, webui.ErrBadRequest, webui.CodeBadRequest},
	{ErrNoRecoveryKey, webui.ErrBadRequest, webui.CodeBadRequest},
	{keyring.ErrRecoveryWordCount, webui.ErrBadRequest, webui.CodeWrongRecoveryWords},
	{keyring.ErrRecoveryUnknownWord, webui.ErrBadRequest, webui.CodeWrongRecoveryWords},
	{keyring.ErrRecoveryChecksum, webui.ErrBadRequest, webui.CodeWrongRecoveryWords},
	{keyring.ErrWrongRecoveryKey, webui.ErrBadRequest, webui.CodeWrongRecoveryWords},
	{keyring.ErrBackupTampered, webui.ErrBadRequest, webui.CodeBackupInvalid},
	{keyring.ErrMalformed, webui.ErrBadRequest, webui.CodeBackupInvalid},
	{keyring.ErrUnsupportedVersion, webui.ErrBadRequest, webui.CodeBackupInvalid},
	{ErrBadInput, webui.ErrBadRequest, webui.CodeBadRequest},
	{ErrNotYourMessage, webui.ErrForbidden, webui.CodeNotYourMessage},
	{ErrNotConvMember, webui.ErrForbidden, webui.CodeNotMember},
	{ErrNotAdmin, webui.ErrForbidden, webui.CodeNotAdmin},
	{ErrNotMember, webui.ErrForbidden, webui.CodeNotMember},
	{ErrDeviceRevoked, webui.ErrForbidden, webui.CodeDeviceRevoked},
	{ErrAccountLocked, webui.ErrLocked, webui.CodeLocked},
	{errNoChat, webui.ErrUnavailable, webui.CodeUnavailable},
	{ErrAccountExists, webui.ErrConflict, webui.CodeAccountExists},
	{ErrRecoveryShown, webui.ErrConflict, webui.CodeRecoveryShown},
	{ErrNotSynced, webui.ErrConflict, webui.CodeNotSynced},
	{ErrContactKeyExpired, webui.ErrConflict, webui.CodeContactKeyExpired},
	{ErrContactBlocked, webui.ErrConflict, webui.CodeContactBlocked},
	{ErrNotFresh, webui.ErrConflict, webui.CodeNotFresh},
	{keyring.ErrWrongPassphrase, webui.ErrWrongPassphrase, webui.CodeWrongPassphrase},
}

// apiErr wraps err with the API status and code of the first node error
// it is; other errors are internal (500).
func apiErr(err error) error {
	if err == nil || webui.ErrorCode(err) != "" {
		return err
	}
	for _, e := range apiErrors {
		if errors.Is(err, e.err) {
			return webui.WithCode(e.code, fmt.Errorf("%w: %w", e.status, err))
		}
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

func contactView(self keyring.AccountID, vc card.Verified) webui.Contact {
	return webui.Contact{
		Account:      hex.EncodeToString(vc.Cert.Account[:]),
		Device:       hex.EncodeToString(vc.Cert.Device[:]),
		Name:         vc.Cert.Name,
		Peer:         vc.Peer.ID.String(),
		SafetyNumber: keyring.SafetyNumber(self, vc.Cert.Account),
	}
}

// withAccountView fills in what the account DAG knows of a contact: the
// display name it chose and whether the user verified it.
func withAccountView(v accountView, w webui.Contact, a keyring.AccountID) webui.Contact {
	if ct, ok := v.contacts[a]; ok {
		if ct.Name != "" {
			w.Name = ct.Name
		}
		w.Verified = ct.Verification == crdt.Verified
		w.KeyChanged = ct.Verification == crdt.KeyChanged
	}
	w.Blocked = v.blocked[a]
	return w
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
	return withAccountView(c.accountSnapshot(), contactView(c.id.AccountID(), vc), vc.Cert.Account), nil
}

// Contacts implements webui.ChatBackend.
func (n *Node) Contacts(ctx context.Context) ([]webui.Contact, error) {
	c, err := n.chat()
	if err != nil {
		return nil, err
	}
	av := c.accountSnapshot()
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := []webui.Contact{}
	for a, vc := range c.contacts {
		out = append(out, withAccountView(av, contactView(c.id.AccountID(), vc), a))
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
	convs := c.conversationList()
	out := make([]webui.Conversation, 0, len(convs))
	av := c.accountSnapshot()
	for _, conv := range convs {
		out = append(out, c.summary(conv, av))
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

// summary describes conv for the list, with what the account DAG (av)
// knows of it and its members.
func (c *Chat) summary(conv *conversation, av accountView) webui.Conversation {
	local := c.localRead(conv.hexID) // before conv.mu: it locks the account DAG
	self := crdt.AccountID(c.id.AccountID())
	conv.mu.Lock()
	defer conv.mu.Unlock()
	s := webui.Conversation{ID: conv.hexID, Kind: webui.KindGroup, Title: conv.state.Title(), Messages: conv.state.Len()}
	s.Muted = av.convs[conv.hexID].Muted
	direct := conv.state.Direct()
	if direct {
		s.Kind = webui.KindDirect
	}
	for _, m := range conv.state.Members() {
		a := keyring.AccountID(m.Account)
		wm := webui.Member{Account: hex.EncodeToString(m.Account[:]), Admin: m.Admin, Self: m.Account == self}
		switch ct := av.contacts[a]; {
		case wm.Self:
			wm.Name = av.name
		case av.cards[a]:
			wm.Contact, wm.Name, wm.Verified = true, ct.Name, ct.Verification == crdt.Verified
		}
		if wm.Name == "" {
			wm.Name = conv.state.MemberName(m.Account)
		}
		if direct && !wm.Self && av.blocked[a] {
			s.Blocked = true
		}
		s.Members = append(s.Members, wm)
	}
	_, read := conv.state.Receipts(self)
	if local != nil {
		read = local
	}
	if !s.Blocked {
		s.Unread = conv.state.UnreadCount(self, read)
	}
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
	if v.Device == crdt.DeviceID(c.id.DeviceID()) {
		m.ClientID = c.clientID(v.ID)
	}
	if v.ReplyTo != nil {
		m.ReplyTo = v.ReplyTo.String()
	}
	if len(v.Attachment) > 0 && c.files != nil {
		m.Attachment = c.files.View(context.Background(), conv.hexID, v.ID, v.Attachment)
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
	return c.summary(conv, c.accountSnapshot()), nil
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

// Messages returns the page of up to limit messages before position
// before (0: the newest).
func (n *Node) Messages(ctx context.Context, id string, before, limit int) (webui.MessagePage, error) {
	return n.MessagePage(ctx, id, webui.MessageQuery{Before: strconv.Itoa(before), Limit: limit})
}

// MessagePage implements webui.ChatBackend.
func (n *Node) MessagePage(ctx context.Context, id string, q webui.MessageQuery) (webui.MessagePage, error) {
	c, err := n.chat()
	if err != nil {
		return webui.MessagePage{}, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return webui.MessagePage{}, apiErr(err)
	}
	if q.Limit == 0 {
		q.Limit = webui.DefaultPageLimit
	}
	if q.Limit < 1 || q.Limit > webui.MaxPageLimit {
		return webui.MessagePage{}, webui.WithCode(webui.CodeBadLimit, fmt.Errorf("%w: limit %d is not from 1 to %d", webui.ErrBadRequest, q.Limit, webui.MaxPageLimit))
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	total := conv.state.Len()
	var from, to int
	if q.After != "" {
		p, err := cursorPosition(conv, q.After, -1)
		if err != nil {
			return webui.MessagePage{}, err
		}
		from = min(p+1, total)
		to = min(from+q.Limit, total)
	} else {
		to = total
		if q.Before != "" {
			p, err := cursorPosition(conv, q.Before, 0)
			if err != nil {
				return webui.MessagePage{}, err
			}
			// before=0 (nothing could be older than position 0) and a
			// position past the end both ask for the newest page.
			if p > 0 && p < total {
				to = p
			}
		}
		from = max(to-q.Limit, 0)
	}
	p := webui.MessagePage{Messages: make([]webui.Message, 0, to-from), Total: total, Before: from, After: to - 1}
	for i := from; i < to; i++ {
		p.Messages = append(p.Messages, c.messageView(conv, conv.state.At(i), i))
	}
	return p, nil
}

// cursorPosition reads a page cursor: a display position (at least min)
// or a message id, whose position it returns. conv.mu is held.
func cursorPosition(conv *conversation, s string, min int) (int, error) {
	if p, err := strconv.Atoi(s); err == nil {
		if p < min {
			return 0, fmt.Errorf("%w: cursor %d is below %d", webui.ErrBadRequest, p, min)
		}
		return p, nil
	}
	mid, err := parseMsgID(s)
	if err != nil {
		return 0, err
	}
	p, ok := conv.state.Position(mid)
	if !ok {
		return 0, apiErr(fmt.Errorf("%w: cursor %s", ErrNoMessage, s))
	}
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

// Send posts a text message (replyTo: a message id, or "").
func (n *Node) Send(ctx context.Context, id, text, replyTo string) (webui.Message, error) {
	m, _, err := n.PostMessage(ctx, id, webui.SendRequest{Text: text, ReplyTo: replyTo})
	return m, err
}

// PostMessage implements webui.ChatBackend.
func (n *Node) PostMessage(ctx context.Context, id string, req webui.SendRequest) (webui.Message, bool, error) {
	c, err := n.chat()
	if err != nil {
		return webui.Message{}, false, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return webui.Message{}, false, apiErr(err)
	}
	var reply *crdt.MsgID
	if req.ReplyTo != "" {
		m, err := parseMsgID(req.ReplyTo)
		if err != nil {
			return webui.Message{}, false, err
		}
		reply = &m
	}
	mid, created, err := c.SendOnce(ctx, conv.hexID, req.Text, reply, req.ClientID)
	if err != nil {
		return webui.Message{}, false, apiErr(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	pos, _ := conv.state.Position(mid)
	v, _ := conv.state.Message(mid)
	return c.messageView(conv, v, pos), created, nil
}

// SetConversationSettings implements webui.ChatBackend.
func (n *Node) SetConversationSettings(ctx context.Context, id string, s webui.ConversationSettings) error {
	c, err := n.chat()
	if err != nil {
		return err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return apiErr(err)
	}
	if s.Muted == nil {
		return nil
	}
	muted := *s.Muted
	if err := c.commitAccount(ctx, crdt.ConversationUpdate{ID: conv.id, Muted: &muted}); err != nil {
		return apiErr(err)
	}
	c.events.publish(Event{Kind: "state", Conversation: conv.hexID})
	return nil
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
	if prefs, err := n.Preferences(ctx); (err == nil && !prefs.ReadReceipts) || c.blockedDirect(conv) {
		// No read receipt leaves this node; the position stays local.
		// It goes to the account DAG: this account's other devices
		// learn it, and it survives a restart.
		pos, err := c.position(ctx, conv)
		if err != nil {
			return err
		}
		if err := c.commitAccount(ctx, crdt.ReadMark{Conversation: conv.id, Position: pos}); err != nil {
			return apiErr(err)
		}
		c.events.publish(Event{Kind: "state", Conversation: conv.hexID})
		return nil
	}
	return apiErr(c.MarkRead(ctx, conv.hexID))
}

// localRead is the read position this account keeps in its account DAG
// for conversations read while read receipts are off (nil: none).
func (c *Chat) localRead(hexID string) crdt.Position {
	id, err := hex.DecodeString(hexID)
	if err != nil {
		return nil
	}
	c.mu.RLock()
	acct := c.account
	c.mu.RUnlock()
	if acct == nil {
		return nil
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return acct.acct.ReadPosition(id)
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

// Edit implements webui.ChatBackend.
func (n *Node) Edit(ctx context.Context, id, msg, text string) (webui.Message, error) {
	c, conv, mid, err := n.messageTarget(id, msg)
	if err != nil {
		return webui.Message{}, err
	}
	if err := c.Edit(ctx, conv.hexID, mid, text); err != nil {
		return webui.Message{}, apiErr(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	pos, _ := conv.state.Position(mid)
	v, _ := conv.state.Message(mid)
	return c.messageView(conv, v, pos), nil
}

// Delete implements webui.ChatBackend.
func (n *Node) Delete(ctx context.Context, id, msg string) error {
	c, conv, mid, err := n.messageTarget(id, msg)
	if err != nil {
		return err
	}
	return apiErr(c.Delete(ctx, conv.hexID, mid))
}

// React implements webui.ChatBackend.
func (n *Node) React(ctx context.Context, id, msg, emoji string, add bool) error {
	c, conv, mid, err := n.messageTarget(id, msg)
	if err != nil {
		return err
	}
	return apiErr(c.React(ctx, conv.hexID, mid, emoji, add))
}

func (n *Node) messageTarget(id, msg string) (*Chat, *conversation, crdt.MsgID, error) {
	c, err := n.chat()
	if err != nil {
		return nil, nil, crdt.MsgID{}, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return nil, nil, crdt.MsgID{}, apiErr(err)
	}
	mid, err := parseMsgID(msg)
	if err != nil {
		return nil, nil, crdt.MsgID{}, err
	}
	return c, conv, mid, nil
}

// LastEventSeq implements webui.ChatBackend.
func (n *Node) LastEventSeq(ctx context.Context) (uint64, error) {
	c, err := n.chat()
	if err != nil {
		return 0, err
	}
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	return c.events.next - 1, nil
}

// Typing implements webui.SignalBackend.
func (n *Node) Typing(ctx context.Context, id string) error {
	c, err := n.chat()
	if err != nil {
		return err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return apiErr(err)
	}
	return c.sig.Typing(ctx, c.room(conv), c.memberPeers(conv))
}

// Presence implements webui.SignalBackend.
func (n *Node) Presence(ctx context.Context) (map[string]webui.Presence, error) {
	c, err := n.chat()
	if err != nil {
		return nil, err
	}
	return c.sig.Presence(), nil
}

// SubscribeSignals implements webui.SignalBackend.
func (n *Node) SubscribeSignals(ctx context.Context) <-chan webui.Signal {
	c, err := n.chat()
	if err != nil {
		ch := make(chan webui.Signal)
		go func() { <-ctx.Done(); close(ch) }()
		return ch
	}
	return c.sig.Subscribe(ctx)
}

// People implements webui.Backend.
func (n *Node) People() webui.PeopleBackend { return peopleAPI{n} }

// peopleAPI adapts the node's people methods (node types) to webui's.
type peopleAPI struct{ n *Node }

func (p peopleAPI) Account(ctx context.Context) (webui.Account, error) {
	a, err := p.n.Account(ctx)
	if err != nil {
		return webui.Account{}, apiErr(err)
	}
	return webui.Account{State: a.State, Account: a.Account, Device: a.Device, Name: a.Name, Avatar: a.Avatar, HasPassphrase: a.HasPassphrase}, nil
}

func (p peopleAPI) CreateAccount(ctx context.Context, name, passphrase string) ([]string, error) {
	w, err := p.n.CreateAccount(ctx, name, passphrase)
	return w, apiErr(err)
}

func (p peopleAPI) Unlock(ctx context.Context, passphrase string) error {
	return apiErr(p.n.Unlock(ctx, passphrase))
}

func (p peopleAPI) SetProfile(ctx context.Context, name, avatar string) error {
	return apiErr(p.n.SetProfile(ctx, name, avatar))
}

func (p peopleAPI) Preferences(ctx context.Context) (webui.Preferences, error) {
	pr, err := p.n.Preferences(ctx)
	if err != nil {
		return webui.Preferences{}, apiErr(err)
	}
	return webui.Preferences(pr), nil
}

func (p peopleAPI) SetPreferences(ctx context.Context, pr webui.Preferences) error {
	return apiErr(p.n.SetPreferences(ctx, Preferences(pr)))
}

func (p peopleAPI) CreateInvite(ctx context.Context, ttl time.Duration) (webui.Invite, error) {
	inv, err := p.n.CreateInvite(ctx, ttl)
	if err != nil {
		return webui.Invite{}, apiErr(err)
	}
	return webui.Invite(inv), nil
}

func (p peopleAPI) InviteQR(link, format string) ([]byte, error) {
	b, err := InviteQR(link, format)
	return b, apiErr(err)
}

func (p peopleAPI) AcceptInvite(ctx context.Context, link string) (string, string, error) {
	a, c, err := p.n.AcceptInvite(ctx, link)
	return a, c, apiErr(err)
}

func (p peopleAPI) VerifyContact(ctx context.Context, account string, verified bool) error {
	return apiErr(p.n.VerifyContact(ctx, account, verified))
}

func (p peopleAPI) BlockContact(ctx context.Context, account string, blocked bool) error {
	return apiErr(p.n.BlockContact(ctx, account, blocked))
}

func (p peopleAPI) AddMember(ctx context.Context, conv, account string) error {
	return apiErr(p.n.AddMember(ctx, conv, account))
}

func (p peopleAPI) RemoveMember(ctx context.Context, conv, account string) error {
	return apiErr(p.n.RemoveMember(ctx, conv, account))
}

func (p peopleAPI) Leave(ctx context.Context, conv string) error {
	return apiErr(p.n.Leave(ctx, conv))
}

func (p peopleAPI) SetConversationInfo(ctx context.Context, conv, title, avatar string) error {
	return apiErr(p.n.SetConversationInfo(ctx, conv, title, avatar))
}
