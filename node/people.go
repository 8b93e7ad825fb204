package node

// The people side of the node: the account's profile and preferences,
// invites, contact verification and group membership. These are the
// methods the web API and the CLI call; see docs/people.md.
//
// CONTRACT IN PROGRESS: the signatures below are fixed; bodies that return
// errPeopleNotYet are being written in this same change series.

import (
	"context"
	"errors"
	"time"
)

var errPeopleNotYet = errors.New("not available yet")

// Errors of the people API.
var (
	ErrAccountLocked = errors.New("account is locked: unlock it with the passphrase")
	ErrAccountExists = errors.New("account already set up")
	ErrRecoveryShown = errors.New("recovery words were already shown once")
	ErrInviteInvalid = errors.New("invite is not valid")
	ErrInviteExpired = errors.New("invite has expired")
	ErrInviteUsed    = errors.New("invite was already used")
	ErrNotAdmin      = errors.New("only an admin of the conversation can do that")
	ErrNotMember     = errors.New("not a member of the conversation")
)

// Account states reported by Account.
const (
	AccountNew    = "new"    // keys exist, no display name chosen yet: show onboarding
	AccountLocked = "locked" // the keyring is passphrase-protected and not unlocked
	AccountReady  = "ready"
)

// AccountInfo describes the local account and device.
type AccountInfo struct {
	State   string // AccountNew, AccountLocked or AccountReady
	Account string // hex account key ("" while locked)
	Device  string // hex device key ("" while locked)
	Name    string
	Avatar  string // data: URL of a small image, or ""
	// HasPassphrase reports whether the keyring is passphrase-protected.
	HasPassphrase bool
}

// Preferences are the account's settings, shared by its devices.
type Preferences struct {
	Theme         string // "system", "light" or "dark"
	Language      string // BCP 47 tag of a UI language, "" = browser's
	Notifications bool
	ShowPresence  bool // send online / last-seen signals to contacts
	ReadReceipts  bool // send read receipts
}

// DefaultPreferences are what a new account starts with.
func DefaultPreferences() Preferences {
	return Preferences{Theme: "system", Notifications: true, ShowPresence: true, ReadReceipts: true}
}

// Invite is a one-time contact invitation.
type Invite struct {
	Link    string    // "glitr:invite/..." — also a web+glitr: deep link
	Token   string    // the one-time token's id (hex), to revoke it
	Expires time.Time // after this, accepting fails with ErrInviteExpired
}

// Account reports the account state; it works while locked.
func (n *Node) Account(ctx context.Context) (AccountInfo, error) {
	return AccountInfo{}, errPeopleNotYet
}

// CreateAccount finishes onboarding of a new account: it sets the display
// name and, when passphrase is not empty, re-encrypts the keyring under it.
// It returns the 24 recovery words; they are shown this once.
func (n *Node) CreateAccount(ctx context.Context, name, passphrase string) (words []string, err error) {
	return nil, errPeopleNotYet
}

// Unlock opens a passphrase-protected keyring and starts the chat service;
// a wrong passphrase fails with keyring.ErrWrongPassphrase.
func (n *Node) Unlock(ctx context.Context, passphrase string) error { return errPeopleNotYet }

// SetProfile changes the display name and avatar (a data: URL, at most
// 64 KiB; "" removes it). Contacts learn it through the account DAG.
func (n *Node) SetProfile(ctx context.Context, name, avatar string) error { return errPeopleNotYet }

// Preferences returns the account's preferences.
func (n *Node) Preferences(ctx context.Context) (Preferences, error) {
	return DefaultPreferences(), errPeopleNotYet
}

// SetPreferences stores the account's preferences.
func (n *Node) SetPreferences(ctx context.Context, p Preferences) error { return errPeopleNotYet }

// CreateInvite makes a one-time invite valid for ttl (0 = one week).
func (n *Node) CreateInvite(ctx context.Context, ttl time.Duration) (Invite, error) {
	return Invite{}, errPeopleNotYet
}

// InviteQR renders an invite link as a QR code: format "png" or "svg".
func InviteQR(link, format string) ([]byte, error) { return nil, errPeopleNotYet }

// AcceptInvite sends a contact request to the inviter and, once the inviter
// accepts the token, returns the new contact's account (hex) and the id of
// the 1:1 conversation.
func (n *Node) AcceptInvite(ctx context.Context, link string) (account, conversation string, err error) {
	return "", "", errPeopleNotYet
}

// VerifyContact sets or clears the "verified" mark of a contact (after the
// users compared safety numbers).
func (n *Node) VerifyContact(ctx context.Context, account string, verified bool) error {
	return errPeopleNotYet
}

// AddMember adds a contact to a group conversation (admins only); the epoch
// rotates and the new member receives history from now on.
func (n *Node) AddMember(ctx context.Context, conversation, account string) error {
	return errPeopleNotYet
}

// RemoveMember removes a member (admins only); the epoch rotates so the
// removed member reads nothing sent afterwards.
func (n *Node) RemoveMember(ctx context.Context, conversation, account string) error {
	return errPeopleNotYet
}

// Leave removes this account from a conversation.
func (n *Node) Leave(ctx context.Context, conversation string) error { return errPeopleNotYet }

// SetConversationInfo sets a conversation's title and avatar (data: URL).
func (n *Node) SetConversationInfo(ctx context.Context, conversation, title, avatar string) error {
	return errPeopleNotYet
}
