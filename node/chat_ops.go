package node

// Message operations beyond sending: edit, delete for everyone and
// reactions. Each is one op in an own block, built on commitOwn like Send.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/glitr-chat/glitr/crdt"
)

// Errors of the message operations.
var (
	ErrNoMessage      = errors.New("no such message")
	ErrNotYourMessage = errors.New("only the author can change a message")
	ErrMessageDeleted = errors.New("message was deleted")
	ErrBadEmoji       = errors.New("reaction must be a short emoji")
	ErrNotConvMember  = errors.New("this account is no longer a member of the conversation")
)

// target looks a message up and checks that this account may act on it:
// own reports whether the author must be this account.
func (c *Chat) target(conv *conversation, id crdt.MsgID, own bool) error {
	self := crdt.AccountID(c.id.AccountID())
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if member, _ := conv.state.IsMember(self); !member {
		return ErrNotConvMember
	}
	v, ok := conv.state.Message(id)
	switch {
	case !ok:
		return fmt.Errorf("%w: %s", ErrNoMessage, id)
	case v.Deleted:
		return fmt.Errorf("%w: %s", ErrMessageDeleted, id)
	case own && v.Author != self:
		return ErrNotYourMessage
	}
	return nil
}

// Edit replaces the text of one of this account's messages.
func (c *Chat) Edit(ctx context.Context, hexID string, id crdt.MsgID, text string) error {
	if strings.TrimSpace(text) == "" {
		return ErrEmptyMessage
	}
	if len(text) > min(MaxMessageText, crdt.MaxTextLen) {
		return fmt.Errorf("%w: %d bytes > %d", ErrMessageTooLong, len(text), min(MaxMessageText, crdt.MaxTextLen))
	}
	return c.changeMessage(ctx, hexID, id, true, crdt.Edit{Target: id, Text: text})
}

// Delete deletes one of this account's messages for everyone: members'
// nodes drop its text and show a tombstone.
func (c *Chat) Delete(ctx context.Context, hexID string, id crdt.MsgID) error {
	return c.changeMessage(ctx, hexID, id, true, crdt.Delete{Target: id})
}

// React adds or removes this account's reaction to a message.
func (c *Chat) React(ctx context.Context, hexID string, id crdt.MsgID, emoji string, add bool) error {
	if emoji == "" || len(emoji) > crdt.MaxEmojiLen || !utf8.ValidString(emoji) || utf8.RuneCountInString(emoji) > 8 || strings.ContainsAny(emoji, " \t\r\n") {
		return ErrBadEmoji
	}
	var op crdt.Op = crdt.ReactionAdd{Target: id, Emoji: emoji}
	if !add {
		op = crdt.ReactionRemove{Target: id, Emoji: emoji}
	}
	return c.changeMessage(ctx, hexID, id, false, op)
}

func (c *Chat) changeMessage(ctx context.Context, hexID string, id crdt.MsgID, own bool, op crdt.Op) error {
	conv, err := c.conversation(hexID)
	if err != nil {
		return err
	}
	if err := c.target(conv, id, own); err != nil {
		return err
	}
	if _, err := c.commitOwn(ctx, conv, []crdt.Op{op}); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "message", Conversation: conv.hexID, Message: id.String()})
	return nil
}
