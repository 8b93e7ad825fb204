package node

import (
	"errors"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
)

// Blocking a contact is this account's decision, kept in the account DAG
// (crdt.ContactBlock) so every device of the account honours it. A blocked
// account's blocks are still stored and merged where it is a member (a
// conversation's DAG must stay whole for everyone else), but this node
// exchanges nothing optional with it: no typing, presence or receipts
// either way, no new conversations started by it (its welcomes are
// refused), and no unread count or message from this account in a direct
// conversation with it.

// ErrContactBlocked: the other member of a direct conversation is blocked.
var ErrContactBlocked = errors.New("this contact is blocked: unblock them to write")

// isBlocked reports whether this account blocked a. It locks the account
// DAG: call it with no conversation locked.
func (c *Chat) isBlocked(a keyring.AccountID) bool {
	c.mu.RLock()
	acct := c.account
	c.mu.RUnlock()
	if acct == nil {
		return false
	}
	acct.mu.Lock()
	defer acct.mu.Unlock()
	return acct.acct.Blocked(crdt.AccountID(a))
}

// blockedDevice reports whether d is a device of a blocked contact.
func (c *Chat) blockedDevice(d keyring.DeviceID) bool {
	c.mu.RLock()
	var owner keyring.AccountID
	found := false
	for a, vc := range c.contacts {
		if vc.Cert.Device == d {
			owner, found = a, true
			break
		}
	}
	c.mu.RUnlock()
	return found && c.isBlocked(owner)
}

// directPeer returns, for a direct conversation, the other account (ok
// false for groups and the account DAG). It locks conv.
func (c *Chat) directPeer(conv *conversation) (self, other keyring.AccountID, ok bool) {
	if conv.acct != nil {
		return self, other, false
	}
	self = c.id.AccountID()
	conv.mu.Lock()
	defer conv.mu.Unlock()
	if !conv.state.Direct() {
		return self, other, false
	}
	for _, m := range conv.state.Members() {
		if keyring.AccountID(m.Account) != self {
			return self, keyring.AccountID(m.Account), true
		}
	}
	return self, other, false
}

// blockedDirect reports whether conv is a direct conversation with a
// blocked account. Call it with no conversation locked.
func (c *Chat) blockedDirect(conv *conversation) bool {
	_, other, ok := c.directPeer(conv)
	return ok && c.isBlocked(other)
}
