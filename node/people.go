package node

// The people side of the node: the account's profile and preferences,
// invites, contact verification and group membership. These are the
// methods the web API and the CLI call; see docs/people.md.
//

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/people"
)

// Errors of the people API.
var (
	ErrAccountLocked = errors.New("account is locked: unlock it with the passphrase")
	ErrAccountExists = errors.New("account already set up")
	ErrRecoveryShown = errors.New("recovery words were already shown once")
	ErrInviteInvalid = card.ErrInviteInvalid
	ErrInviteExpired = card.ErrInviteExpired
	ErrInviteUsed    = people.ErrInviteUsed
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
	Notifications bool   // desktop notifications (off until the user turns them on)
	ShowPresence  bool   // send online / last-seen signals to contacts
	ReadReceipts  bool   // send read receipts
}

// DefaultPreferences are what a new account starts with.
func DefaultPreferences() Preferences {
	return Preferences{Theme: "system", ShowPresence: true, ReadReceipts: true}
}

// Invite is a one-time invite or device-link code (node/people).
type Invite = people.Invite

// Account reports the account state; it works while locked.
func (n *Node) Account(ctx context.Context) (AccountInfo, error) {
	n.chatMu.RLock()
	c, locked := n.Chat, n.locked
	n.chatMu.RUnlock()
	if locked {
		return AccountInfo{State: AccountLocked, HasPassphrase: true}, nil
	}
	if c == nil {
		return AccountInfo{}, errNoChat
	}
	v := c.accountSnapshot()
	info := AccountInfo{
		State:   AccountReady,
		Account: c.id.AccountID().String(),
		Device:  c.id.DeviceID().String(),
		Name:    v.name,
		Avatar:  dataURL(v.mime, v.avatar),
	}
	c.idMu.Lock()
	info.HasPassphrase = c.id.HasPassphrase()
	c.idMu.Unlock()
	switch {
	case c.revokedSelf.Load():
		info.State = AccountRevoked
	case v.name == "":
		info.State = AccountNew
	}
	return info, nil
}

// errNoChat: a relay node has no account.
var errNoChat = errors.New("relay nodes have no account")

// readyChat returns the chat service or why there is none.
func (n *Node) readyChat() (*Chat, error) {
	n.chatMu.RLock()
	defer n.chatMu.RUnlock()
	switch {
	case n.locked:
		return nil, ErrAccountLocked
	case n.Chat == nil:
		return nil, errNoChat
	}
	return n.Chat, nil
}

// CreateAccount finishes onboarding of a new account: it sets the display
// name and, when passphrase is not empty, re-encrypts the keyring under it.
// It returns the 24 recovery words; they are shown this once.
func (n *Node) CreateAccount(ctx context.Context, name, passphrase string) (words []string, err error) {
	c, err := n.readyChat()
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, fmt.Errorf("%w: a display name is required", ErrBadInput)
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	n.unlockMu.Lock()
	defer n.unlockMu.Unlock()
	if v := c.accountSnapshot(); v.name != "" {
		return nil, ErrAccountExists
	}
	rk, err := keyring.NewRecoveryKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	c.idMu.Lock()
	c.id.Keyring.Secrets[recoveryKeyName] = rk[:]
	err = c.id.Save()
	if err == nil && passphrase != "" {
		err = c.id.Protect(keyring.Passphrase(passphrase))
	}
	c.idMu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.commitAccount(ctx, crdt.ProfileName{Name: name}); err != nil {
		return nil, err
	}
	return strings.Fields(rk.Words()), nil
}

// recoveryKeyName is the keyring secret holding the recovery key, so that
// backups can be written without asking for the words again.
const recoveryKeyName = "recovery-key"

// Unlock opens a passphrase-protected keyring and starts the chat service;
// a wrong passphrase fails with keyring.ErrWrongPassphrase.
func (n *Node) Unlock(ctx context.Context, passphrase string) error {
	n.unlockMu.Lock()
	defer n.unlockMu.Unlock()
	n.chatMu.RLock()
	locked := n.locked
	n.chatMu.RUnlock()
	if !locked {
		return nil
	}
	if passphrase == "" {
		return fmt.Errorf("%w: empty passphrase", keyring.ErrWrongPassphrase)
	}
	if err := n.startChat(ctx, []byte(passphrase)); err != nil {
		return err
	}
	n.log.Info("keyring unlocked")
	return nil
}

// SetProfile changes the display name and avatar (a data: URL of a PNG,
// JPEG, WebP or GIF image of at most 32 KiB; "" removes it).
func (n *Node) SetProfile(ctx context.Context, name, avatar string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	mime, data, err := parseDataURL(avatar)
	if err != nil {
		return err
	}
	name = strings.TrimSpace(name)
	v := c.accountSnapshot()
	var ops []crdt.Op
	if name != v.name {
		op := crdt.ProfileName{Name: name}
		if name == "" {
			return fmt.Errorf("%w: a display name is required", ErrBadInput)
		}
		if err := checkName(name); err != nil {
			return err
		}
		ops = append(ops, op)
	}
	if mime != v.mime || !bytes.Equal(data, v.avatar) {
		ops = append(ops, crdt.ProfileAvatar{Mime: mime, Data: data})
	}
	if len(ops) == 0 {
		return nil
	}
	if err := c.commitAccount(ctx, ops...); err != nil {
		return err
	}
	if name != v.name {
		// Members who are not contacts see the new name too.
		c.wg.Go(func() {
			for _, conv := range c.conversationList() {
				if err := c.announcePrekeyIn(c.ctx, conv); err != nil && c.ctx.Err() == nil {
					c.log.Debug("publish the new name", "conv", conv.hexID, "err", err)
				}
			}
		})
	}
	return nil
}

// Preferences returns the account's preferences.
func (n *Node) Preferences(ctx context.Context) (Preferences, error) {
	c, err := n.readyChat()
	if err != nil {
		return DefaultPreferences(), err
	}
	return c.accountSnapshot().preferences(), nil
}

// SetPreferences stores the account's preferences.
func (n *Node) SetPreferences(ctx context.Context, p Preferences) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	snap := c.accountSnapshot()
	ops, err := snap.preferenceOps(p)
	if err != nil || len(ops) == 0 {
		return err
	}
	if err := c.commitAccount(ctx, ops...); err != nil {
		return err
	}
	if p.ShowPresence && !snap.preferences().ShowPresence && c.sig != nil {
		c.sig.Announce() // switched on: contacts see this node online now, not at the next heartbeat
	}
	return nil
}

// checkName accepts a display name or title (card.CheckName), as
// ErrBadInput.
func checkName(s string) error {
	if err := card.CheckName(s); err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	return nil
}

// dataURL and parseDataURL convert avatars between data: URLs and bytes.
func dataURL(mime string, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(b)
}

var avatarTypes = []string{"image/png", "image/jpeg", "image/webp", "image/gif"}

func parseDataURL(s string) (mime string, data []byte, err error) {
	if s == "" {
		return "", nil, nil
	}
	rest, ok := strings.CutPrefix(s, "data:")
	meta, payload, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 {
		return "", nil, fmt.Errorf("%w: avatar is not a data: URL", ErrBadInput)
	}
	mime, ok = strings.CutSuffix(meta, ";base64")
	if !ok || !slices.Contains(avatarTypes, mime) {
		return "", nil, fmt.Errorf("%w: avatar must be a base64 PNG, JPEG, WebP or GIF image", ErrBadInput)
	}
	if base64.StdEncoding.DecodedLen(len(payload)) > crdt.MaxBlobLen+3 {
		return "", nil, fmt.Errorf("%w: avatar is larger than %d KiB", ErrBadInput, crdt.MaxBlobLen>>10)
	}
	data, err = base64.StdEncoding.DecodeString(payload)
	if err != nil || len(data) == 0 {
		return "", nil, fmt.Errorf("%w: avatar data is not valid base64", ErrBadInput)
	}
	if len(data) > crdt.MaxBlobLen {
		return "", nil, fmt.Errorf("%w: avatar is larger than %d KiB", ErrBadInput, crdt.MaxBlobLen>>10)
	}
	return mime, data, nil
}

// CreateInvite makes a one-time invite valid for ttl (0 = one week).
func (n *Node) CreateInvite(ctx context.Context, ttl time.Duration) (Invite, error) {
	c, err := n.readyChat()
	if err != nil {
		return Invite{}, err
	}
	return c.people.CreateInvite(ctx, ttl)
}

// InviteQR renders an invite link as a QR code: format "png" (512 px) or
// "svg".
func InviteQR(link, format string) ([]byte, error) {
	q, err := qrcode.New(link, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	switch format {
	case "png":
		return q.PNG(512)
	case "svg":
		return qrSVG(q.Bitmap()), nil
	}
	return nil, fmt.Errorf("%w: QR format %q (want png or svg)", ErrBadInput, format)
}

// qrSVG draws a QR bitmap (quiet zone included) as one SVG path.
func qrSVG(bm [][]bool) []byte {
	var b bytes.Buffer
	size := len(bm)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, size, size)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, size, size)
	for y, row := range bm {
		for x := 0; x < len(row); x++ {
			if !row[x] {
				continue
			}
			run := 1
			for x+run < len(row) && row[x+run] {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x, y, run, run)
			x += run - 1
		}
	}
	b.WriteString(`"/></svg>`)
	return b.Bytes()
}

// AcceptInvite sends a contact request to the inviter and, once the inviter
// accepts the token, returns the new contact's account (hex) and the id of
// the 1:1 conversation.
func (n *Node) AcceptInvite(ctx context.Context, link string) (account, conversation string, err error) {
	c, err := n.readyChat()
	if err != nil {
		return "", "", err
	}
	a, conv, err := c.people.AcceptInvite(ctx, link)
	return a.String(), conv, err
}

// VerifyContact sets or clears the "verified" mark of a contact (after the
// users compared safety numbers).
func (n *Node) VerifyContact(ctx context.Context, account string, verified bool) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	a, err := parseAccountKey(account)
	if err != nil {
		return err
	}
	c.mu.RLock()
	_, ok := c.contacts[a]
	c.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotContact, account)
	}
	v := crdt.Unverified
	if verified {
		v = crdt.Verified
	}
	return c.commitAccount(ctx, crdt.ContactUpdate{Account: crdt.AccountID(a), Verification: &v})
}

// BlockContact blocks (or unblocks) an account. It needs not be a contact:
// a member of a group can be blocked too.
func (n *Node) BlockContact(ctx context.Context, account string, blocked bool) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	a, err := parseAccountKey(account)
	if err != nil {
		return err
	}
	if a == c.id.AccountID() {
		return fmt.Errorf("%w: an account cannot block itself", ErrBadInput)
	}
	if c.isBlocked(a) == blocked {
		return nil
	}
	if err := c.commitAccount(ctx, crdt.ContactBlock{Account: crdt.AccountID(a), Blocked: blocked}); err != nil {
		return err
	}
	c.events.publish(Event{Kind: "contact"})
	for _, conv := range c.conversationList() {
		if _, other, ok := c.directPeer(conv); ok && other == a {
			c.events.publish(Event{Kind: "state", Conversation: conv.hexID})
		}
	}
	return nil
}

func parseAccountKey(s string) (keyring.AccountID, error) {
	var a keyring.AccountID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(a) {
		return a, fmt.Errorf("%w: %q is not an account key (64 hex digits)", ErrBadInput, s)
	}
	copy(a[:], b)
	return a, nil
}

// AddMember adds a contact to a group conversation (admins only); the epoch
// rotates and the new member receives the history.
func (n *Node) AddMember(ctx context.Context, conversation, account string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	a, err := parseAccountKey(account)
	if err != nil {
		return err
	}
	return c.AddMember(ctx, conversation, a)
}

// RemoveMember removes a member (admins only); the epoch rotates so the
// removed member reads nothing sent afterwards.
func (n *Node) RemoveMember(ctx context.Context, conversation, account string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	a, err := parseAccountKey(account)
	if err != nil {
		return err
	}
	return c.RemoveMember(ctx, conversation, a)
}

// Leave removes this account from a conversation.
func (n *Node) Leave(ctx context.Context, conversation string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	return c.RemoveMember(ctx, conversation, c.id.AccountID())
}

// SetConversationInfo sets a conversation's title and avatar (data: URL).
func (n *Node) SetConversationInfo(ctx context.Context, conversation, title, avatar string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	title = strings.TrimSpace(title)
	if err := checkName(title); err != nil {
		return err
	}
	mime, data, err := parseDataURL(avatar)
	if err != nil {
		return err
	}
	return c.SetInfo(ctx, conversation, title, mime, data)
}
