package crdt

import (
	"fmt"
	"unicode/utf8"
)

// OpKind tags an op on the wire. Values are part of the protocol: never
// renumber, only add. Kinds a replica does not know are kept (so the body
// re-encodes byte for byte) and ignored when applied.
type OpKind uint64

// Conversation op kinds.
const (
	KindMessage        OpKind = 1
	KindEdit           OpKind = 2
	KindDelete         OpKind = 3
	KindReactionAdd    OpKind = 4
	KindReactionRemove OpKind = 5
	KindReceipt        OpKind = 6
	KindTitle          OpKind = 7
	KindAvatar         OpKind = 8
	KindAddMember      OpKind = 9
	KindRemoveMember   OpKind = 10
	KindSetAdmin       OpKind = 11
	KindRotation       OpKind = 12
	KindDeviceAnnounce OpKind = 13
	KindDeviceRevoked  OpKind = 14
	KindMemberProfile  OpKind = 15
)

// Account op kinds.
const (
	KindProfileName   OpKind = 32
	KindProfileAvatar OpKind = 33
	KindPreference    OpKind = 34
	KindContact       OpKind = 35
	KindConversation  OpKind = 36
	KindDeviceAdd     OpKind = 37
	KindDeviceRevoke  OpKind = 38
	KindReadMark      OpKind = 39
	KindContactBlock  OpKind = 40
)

// Op is one operation carried in an event body. The concrete types below
// are the closed set this version understands; Unknown carries the rest.
type Op interface {
	Kind() OpKind
	validate() error
}

// Message posts text, optionally as a reply, optionally with an attachment.
// Its identity is MsgID{event, op index}.
//
// Attachment is an encoded attachment manifest (node/attachments): the
// file's chunk root, its key, name, type, size and thumbnail. The CRDT
// keeps it opaque, like a rotation's payload; the node decodes it for
// display. A message with an attachment may have empty text (a caption is
// optional); one without must have text.
type Message struct {
	Attachment []byte `cbor:"a,omitempty"`
	Text       string `cbor:"t"`
	ReplyTo    *MsgID `cbor:"r,omitempty"`
}

// Edit replaces the text of one of the author account's messages.
type Edit struct {
	Target MsgID  `cbor:"m"`
	Text   string `cbor:"t"`
}

// Delete is delete-for-everyone by the message's author account: a tombstone.
type Delete struct {
	Target MsgID `cbor:"m"`
}

// ReactionAdd adds the author account's reaction Emoji to a message.
type ReactionAdd struct {
	Target MsgID  `cbor:"m"`
	Emoji  string `cbor:"e"`
}

// ReactionRemove removes the author account's reaction Emoji from a message;
// it removes only the adds in its causal past (add wins over a concurrent remove).
type ReactionRemove struct {
	Target MsgID  `cbor:"m"`
	Emoji  string `cbor:"e"`
}

// Receipt says that the author account has received (Read=false) or read
// (Read=true) every event covered by Upto. The node fills Upto with the
// per-device sequence vector of its store (delivered) or of what the user
// has seen (read); the sync protocol keeps that vector anyway. A receipt is
// a claim of the author about itself, so it is not checked against the
// DAG. Receipts merge by pointwise maximum (a max register).
type Receipt struct {
	Read bool     `cbor:"d,omitempty"`
	Upto Position `cbor:"u"`
}

// SetTitle sets the conversation title (LWW). Empty clears it.
type SetTitle struct {
	Title string `cbor:"t"`
}

// SetAvatar sets the conversation avatar (LWW). Empty Data clears it.
type SetAvatar struct {
	Mime string `cbor:"m,omitempty"`
	Data []byte `cbor:"d,omitempty"`
}

// AddMember makes Account a member. Admins only.
type AddMember struct {
	Account AccountID `cbor:"a"`
}

// RemoveMember removes Account. Admins, or the account itself (leave).
// Remove wins over a concurrent add, and is strong (see package doc).
type RemoveMember struct {
	Account AccountID `cbor:"a"`
}

// SetAdmin grants (Admin=true) or revokes admin rights of a member. Admins only.
type SetAdmin struct {
	Account AccountID `cbor:"a"`
	Admin   bool      `cbor:"v,omitempty"`
}

// Recipient is one device an epoch secret was sealed to.
type Recipient struct {
	_       struct{} `cbor:",toarray"`
	Account AccountID
	Device  DeviceID
}

// Rotation records a new epoch: an opaque keyring payload and the devices
// it was sealed to.
type Rotation struct {
	Payload    []byte      `cbor:"p"`
	Recipients []Recipient `cbor:"r"`
}

// DeviceAnnounce publishes an account's device certificate in the
// conversation. The certificate is opaque here; keyring verifies it.
type DeviceAnnounce struct {
	Account AccountID `cbor:"a"`
	Device  DeviceID  `cbor:"d"`
	Cert    []byte    `cbor:"c"`
	// Prekey is the device's signed prekey (opaque here), so that any
	// member can seal a new epoch to it; re-announced when it rotates.
	Prekey []byte `cbor:"p,omitempty"`
	// Peer is the device's libp2p peer id (opaque here), so that members
	// who hold no card of the device still know it as a member's: only
	// current member devices may sync a conversation.
	Peer []byte `cbor:"r,omitempty"`
	// Mailbox is where contacts deposit for this device while it is away
	// (an encoded node/mailbox Address: deposit key and relays; opaque
	// here); re-announced when the device changes relays.
	Mailbox []byte `cbor:"b,omitempty"`
}

// DeviceRevoked publishes in a conversation an account root's signed
// revocation of one of its devices (opaque here; keyring.VerifyRevocation
// reads it), so every member refuses that device's later blocks.
type DeviceRevoked struct {
	Revocation []byte `cbor:"r"`
}

// MemberProfile publishes the author account's display name in one
// conversation (LWW per account), so members who are not its contacts see
// a name instead of a key. It is the author's own claim: nobody vouches
// for it, and the UI shows it as not verified.
type MemberProfile struct {
	Name string `cbor:"n"`
}

// ProfileName sets the account's display name (LWW).
type ProfileName struct {
	Name string `cbor:"n"`
}

// ProfileAvatar sets the account's avatar (LWW). Empty Data clears it.
type ProfileAvatar struct {
	Mime string `cbor:"m,omitempty"`
	Data []byte `cbor:"d,omitempty"`
}

// SetPreference sets one preference (LWW per key). Empty Value unsets it.
type SetPreference struct {
	Key   string `cbor:"k"`
	Value string `cbor:"v,omitempty"`
}

// Contact verification states.
const (
	Unverified  uint8 = 0
	Verified    uint8 = 1
	KeyChanged  uint8 = 2
	maxVerified       = KeyChanged
)

// Contact status values.
const (
	ContactAdded   uint8 = 1
	ContactRemoved uint8 = 2
)

// ContactUpdate sets some fields of a contact; each field is its own LWW register.
type ContactUpdate struct {
	Account      AccountID `cbor:"a"`
	Name         *string   `cbor:"n,omitempty"`
	Verification *uint8    `cbor:"v,omitempty"`
	Status       *uint8    `cbor:"s,omitempty"`
}

// ContactBlock blocks (Blocked) or unblocks an account (LWW per account).
// It is an op of its own, not a ContactUpdate field, so that devices that
// do not know it keep and ignore it (unknown fields of a known op are
// refused).
type ContactBlock struct {
	Account AccountID `cbor:"a"`
	Blocked bool      `cbor:"b,omitempty"`
}

// Conversation kinds.
const (
	ConvDirect uint8 = 1
	ConvGroup  uint8 = 2
)

// ConversationUpdate sets some fields of a conversation-list entry; each
// field is its own LWW register. ID is the conversation's opaque id.
type ConversationUpdate struct {
	ID        []byte  `cbor:"i"`
	Type      *uint8  `cbor:"k,omitempty"`
	TitleHint *string `cbor:"t,omitempty"`
	Archived  *bool   `cbor:"a,omitempty"`
	Muted     *bool   `cbor:"m,omitempty"`
	Left      *bool   `cbor:"l,omitempty"`
}

// DeviceAdd records a device of the account with its certificate.
type DeviceAdd struct {
	Device DeviceID `cbor:"d"`
	Name   string   `cbor:"n,omitempty"`
	Cert   []byte   `cbor:"c"`
}

// DeviceRevoke revokes a device permanently. Events of that device with a
// sequence number above Cutoff are ignored; Cutoff 0 means "what the
// revoking event has seen of the device" (its causal past).
type DeviceRevoke struct {
	Device DeviceID `cbor:"d"`
	Cutoff uint64   `cbor:"c,omitempty"`
}

// ReadMark raises the account's read position in a conversation (max register).
type ReadMark struct {
	Conversation []byte   `cbor:"i"`
	Position     Position `cbor:"p"`
}

// Unknown is an op of a kind this version does not understand. Raw is its
// payload, a well-formed canonical CBOR item. It is ignored when applied.
type Unknown struct {
	K   OpKind
	Raw []byte
}

func (Message) Kind() OpKind            { return KindMessage }
func (Edit) Kind() OpKind               { return KindEdit }
func (Delete) Kind() OpKind             { return KindDelete }
func (ReactionAdd) Kind() OpKind        { return KindReactionAdd }
func (ReactionRemove) Kind() OpKind     { return KindReactionRemove }
func (Receipt) Kind() OpKind            { return KindReceipt }
func (SetTitle) Kind() OpKind           { return KindTitle }
func (SetAvatar) Kind() OpKind          { return KindAvatar }
func (AddMember) Kind() OpKind          { return KindAddMember }
func (RemoveMember) Kind() OpKind       { return KindRemoveMember }
func (SetAdmin) Kind() OpKind           { return KindSetAdmin }
func (Rotation) Kind() OpKind           { return KindRotation }
func (DeviceAnnounce) Kind() OpKind     { return KindDeviceAnnounce }
func (DeviceRevoked) Kind() OpKind      { return KindDeviceRevoked }
func (MemberProfile) Kind() OpKind      { return KindMemberProfile }
func (ProfileName) Kind() OpKind        { return KindProfileName }
func (ProfileAvatar) Kind() OpKind      { return KindProfileAvatar }
func (SetPreference) Kind() OpKind      { return KindPreference }
func (ContactUpdate) Kind() OpKind      { return KindContact }
func (ConversationUpdate) Kind() OpKind { return KindConversation }
func (DeviceAdd) Kind() OpKind          { return KindDeviceAdd }
func (DeviceRevoke) Kind() OpKind       { return KindDeviceRevoke }
func (ReadMark) Kind() OpKind           { return KindReadMark }
func (ContactBlock) Kind() OpKind       { return KindContactBlock }

// Kind returns the unknown kind number.
func (u Unknown) Kind() OpKind { return u.K }

func checkText(field, s string, maxLen int, nonEmpty bool) error {
	if len(s) > maxLen {
		return fmt.Errorf("%s: %d bytes > %d", field, len(s), maxLen)
	}
	if nonEmpty && s == "" {
		return fmt.Errorf("%s: empty", field)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: invalid UTF-8", field)
	}
	return nil
}

func checkMsgID(m MsgID) error {
	if !m.Event.Defined() {
		return fmt.Errorf("message id: undefined event")
	}
	return nil
}

func checkBlob(mime string, data []byte) error {
	if len(data) > MaxBlobLen {
		return fmt.Errorf("avatar: %d bytes > %d", len(data), MaxBlobLen)
	}
	if err := checkText("avatar mime", mime, MaxMimeLen, len(data) > 0); err != nil {
		return err
	}
	if len(data) == 0 && mime != "" {
		return fmt.Errorf("avatar: mime without data")
	}
	return nil
}

func (o Message) validate() error {
	if len(o.Attachment) > MaxAttachmentLen {
		return fmt.Errorf("message: attachment manifest %d bytes > %d", len(o.Attachment), MaxAttachmentLen)
	}
	if err := checkText("message", o.Text, MaxTextLen, len(o.Attachment) == 0); err != nil {
		return err
	}
	if o.ReplyTo != nil {
		return checkMsgID(*o.ReplyTo)
	}
	return nil
}

func (o Edit) validate() error {
	if err := checkMsgID(o.Target); err != nil {
		return err
	}
	return checkText("edit", o.Text, MaxTextLen, true)
}

func (o Delete) validate() error { return checkMsgID(o.Target) }

func (o ReactionAdd) validate() error {
	if err := checkMsgID(o.Target); err != nil {
		return err
	}
	return checkText("emoji", o.Emoji, MaxEmojiLen, true)
}

func (o ReactionRemove) validate() error {
	if err := checkMsgID(o.Target); err != nil {
		return err
	}
	return checkText("emoji", o.Emoji, MaxEmojiLen, true)
}

func (o Receipt) validate() error {
	if len(o.Upto) == 0 || len(o.Upto) > MaxPositionLen || !o.Upto.valid() {
		return fmt.Errorf("receipt: position not a sorted non-empty vector")
	}
	return nil
}

func (o SetTitle) validate() error  { return checkText("title", o.Title, MaxTitleLen, false) }
func (o SetAvatar) validate() error { return checkBlob(o.Mime, o.Data) }
func (AddMember) validate() error   { return nil }
func (RemoveMember) validate() error {
	return nil
}
func (SetAdmin) validate() error { return nil }

func (o Rotation) validate() error {
	if len(o.Payload) == 0 || len(o.Payload) > MaxPayloadLen {
		return fmt.Errorf("rotation: payload %d bytes, want 1..%d", len(o.Payload), MaxPayloadLen)
	}
	if len(o.Recipients) > MaxRecipients {
		return fmt.Errorf("rotation: %d recipients > %d", len(o.Recipients), MaxRecipients)
	}
	return nil
}

func (o DeviceAnnounce) validate() error {
	if len(o.Cert) == 0 || len(o.Cert) > MaxCertLen {
		return fmt.Errorf("device announce: cert %d bytes, want 1..%d", len(o.Cert), MaxCertLen)
	}
	if len(o.Prekey) > MaxCertLen {
		return fmt.Errorf("device announce: prekey %d bytes > %d", len(o.Prekey), MaxCertLen)
	}
	if len(o.Peer) > MaxPeerLen {
		return fmt.Errorf("device announce: peer id %d bytes > %d", len(o.Peer), MaxPeerLen)
	}
	if len(o.Mailbox) > MaxMailboxLen {
		return fmt.Errorf("device announce: mailbox address %d bytes > %d", len(o.Mailbox), MaxMailboxLen)
	}
	return nil
}

func (o DeviceRevoked) validate() error {
	if len(o.Revocation) == 0 || len(o.Revocation) > MaxCertLen {
		return fmt.Errorf("device revoked: revocation %d bytes, want 1..%d", len(o.Revocation), MaxCertLen)
	}
	return nil
}

func (o MemberProfile) validate() error { return checkText("member name", o.Name, MaxTitleLen, false) }
func (ContactBlock) validate() error    { return nil }
func (o ProfileName) validate() error   { return checkText("profile name", o.Name, MaxTitleLen, false) }
func (o ProfileAvatar) validate() error { return checkBlob(o.Mime, o.Data) }

func (o SetPreference) validate() error {
	if err := checkText("preference key", o.Key, MaxKeyLen, true); err != nil {
		return err
	}
	return checkText("preference value", o.Value, MaxValueLen, false)
}

func (o ContactUpdate) validate() error {
	if o.Name == nil && o.Verification == nil && o.Status == nil {
		return fmt.Errorf("contact: no field set")
	}
	if o.Name != nil {
		if err := checkText("contact name", *o.Name, MaxTitleLen, false); err != nil {
			return err
		}
	}
	if o.Verification != nil && *o.Verification > maxVerified {
		return fmt.Errorf("contact: verification %d unknown", *o.Verification)
	}
	if o.Status != nil && *o.Status != ContactAdded && *o.Status != ContactRemoved {
		return fmt.Errorf("contact: status %d unknown", *o.Status)
	}
	return nil
}

func (o ConversationUpdate) validate() error {
	if len(o.ID) == 0 || len(o.ID) > MaxKeyLen {
		return fmt.Errorf("conversation: id %d bytes, want 1..%d", len(o.ID), MaxKeyLen)
	}
	if o.Type == nil && o.TitleHint == nil && o.Archived == nil && o.Muted == nil && o.Left == nil {
		return fmt.Errorf("conversation: no field set")
	}
	if o.Type != nil && *o.Type != ConvDirect && *o.Type != ConvGroup {
		return fmt.Errorf("conversation: type %d unknown", *o.Type)
	}
	if o.TitleHint != nil {
		return checkText("conversation title", *o.TitleHint, MaxTitleLen, false)
	}
	return nil
}

func (o DeviceAdd) validate() error {
	if err := checkText("device name", o.Name, MaxTitleLen, false); err != nil {
		return err
	}
	if len(o.Cert) == 0 || len(o.Cert) > MaxCertLen {
		return fmt.Errorf("device add: cert %d bytes, want 1..%d", len(o.Cert), MaxCertLen)
	}
	return nil
}

func (DeviceRevoke) validate() error { return nil }

func (o ReadMark) validate() error {
	if len(o.Conversation) == 0 || len(o.Conversation) > MaxKeyLen {
		return fmt.Errorf("read mark: conversation id %d bytes, want 1..%d", len(o.Conversation), MaxKeyLen)
	}
	if len(o.Position) == 0 || len(o.Position) > MaxPositionLen || !o.Position.valid() {
		return fmt.Errorf("read mark: position not a sorted non-empty vector")
	}
	return nil
}

func (u Unknown) validate() error {
	if knownKind(u.K) {
		return fmt.Errorf("unknown op with known kind %d", u.K)
	}
	return nil
}

// decodeKnown decodes the payload of a known kind. ok is false for kinds
// this version does not know.
func decodeKnown(k OpKind, raw []byte) (op Op, ok bool, err error) {
	switch k {
	case KindMessage:
		return decodeAs[Message](raw)
	case KindEdit:
		return decodeAs[Edit](raw)
	case KindDelete:
		return decodeAs[Delete](raw)
	case KindReactionAdd:
		return decodeAs[ReactionAdd](raw)
	case KindReactionRemove:
		return decodeAs[ReactionRemove](raw)
	case KindReceipt:
		return decodeAs[Receipt](raw)
	case KindTitle:
		return decodeAs[SetTitle](raw)
	case KindAvatar:
		return decodeAs[SetAvatar](raw)
	case KindAddMember:
		return decodeAs[AddMember](raw)
	case KindRemoveMember:
		return decodeAs[RemoveMember](raw)
	case KindSetAdmin:
		return decodeAs[SetAdmin](raw)
	case KindRotation:
		return decodeAs[Rotation](raw)
	case KindDeviceAnnounce:
		return decodeAs[DeviceAnnounce](raw)
	case KindDeviceRevoked:
		return decodeAs[DeviceRevoked](raw)
	case KindMemberProfile:
		return decodeAs[MemberProfile](raw)
	case KindProfileName:
		return decodeAs[ProfileName](raw)
	case KindProfileAvatar:
		return decodeAs[ProfileAvatar](raw)
	case KindPreference:
		return decodeAs[SetPreference](raw)
	case KindContact:
		return decodeAs[ContactUpdate](raw)
	case KindConversation:
		return decodeAs[ConversationUpdate](raw)
	case KindDeviceAdd:
		return decodeAs[DeviceAdd](raw)
	case KindDeviceRevoke:
		return decodeAs[DeviceRevoke](raw)
	case KindReadMark:
		return decodeAs[ReadMark](raw)
	case KindContactBlock:
		return decodeAs[ContactBlock](raw)
	}
	return nil, false, nil
}

func knownKind(k OpKind) bool {
	return (k >= KindMessage && k <= KindMemberProfile) || (k >= KindProfileName && k <= KindContactBlock)
}
