package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/node/card"
	"github.com/glitr-chat/glitr/node/discovery"
	"github.com/glitr-chat/glitr/node/people"
	"github.com/glitr-chat/glitr/node/request"
	"github.com/glitr-chat/glitr/protocol"
)

// Linking a device to an account (multi-device, docs/devices.md).
//
// A device of the account shows a one-time link code (the invite format:
// its card, the account name, a 10-minute expiry and a token under a MAC).
// The new node — fresh, its provisional account still unnamed and empty —
// proves the token over LinkProtocol with an HPKE box to the linker's
// prekey holding its device's signed prekey and peer id. The linker
// certifies the new device with the account root key and answers with a
// bundle sealed to the new device's prekey: the account root (every device
// holds it, so any device can link the next one: none is primary), the
// certificate, the recovery key, the account DAG's id, the contacts' cards
// and pair secrets and the account's devices. The new node adopts the
// account (its chat service restarts under the new identity) while the
// linker adds the device to the account DAG and to every conversation — a
// rotation sealed to it, a welcome with the conversation root and the
// history, as for a member added to a group — so it reads everything and
// its contacts' devices seal new epochs to it from then on.

// LinkProtocol carries device-link requests.
const LinkProtocol = "/glitr/link/1.0.0"

const (
	linkTTL           = 10 * time.Minute
	purposeLinkReq    = "link-request"
	purposeLinkBundle = "link-bundle"
	maxLinkReply      = keyring.MaxBoxPlaintext + 8192
)

var ownDevicePrefix = ds.NewKey("/own-device")

// Errors of device linking.
var (
	ErrLinkInvalid = card.ErrLinkInvalid
	ErrLinkExpired = card.ErrLinkExpired
	ErrLinkUsed    = errors.New("link code was already used")
	ErrNotFresh    = errors.New("this node already has an account in use: link a fresh node (glitr init on a new data directory)")
)

// ownDevice is a device of this account, as the other devices know it.
type ownDevice struct {
	Device []byte `cbor:"1,keyasint"`
	Peer   []byte `cbor:"2,keyasint"`
	Prekey []byte `cbor:"3,keyasint"` // signed by the device
	Cert   []byte `cbor:"4,keyasint"`
}

type linkRequestBody struct {
	Prekey []byte `cbor:"1,keyasint"`
	Peer   []byte `cbor:"2,keyasint"`
	Proof  []byte `cbor:"3,keyasint"`
}

type linkBundle struct {
	AccountSeed []byte      `cbor:"1,keyasint"`
	Cert        []byte      `cbor:"2,keyasint"`
	Recovery    []byte      `cbor:"3,keyasint,omitempty"`
	AccountConv []byte      `cbor:"4,keyasint"`
	Contacts    []card.Card `cbor:"5,keyasint"`
	Pairs       [][]byte    `cbor:"6,keyasint"` // account (32) ‖ pair secret (32)
	Devices     []ownDevice `cbor:"7,keyasint"`
}

type linkReply struct {
	Err    string `cbor:"1,keyasint,omitempty"` // "expired" or "used"
	Bundle []byte `cbor:"2,keyasint,omitempty"`
}

var linkDec = protocol.MustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	IndefLength:       cbor.IndefLengthForbidden,
	MaxNestedLevels:   6,
	MaxArrayElements:  65536,
	MaxMapPairs:       16,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})

// CreateLinkCode makes a one-time code that links a new device to this
// account; it expires after ten minutes.
func (c *Chat) CreateLinkCode(ctx context.Context) (Invite, error) {
	if c.id.Keyring.Account == nil {
		return Invite{}, errors.New("this device does not hold the account root key")
	}
	return c.people.IssueLink(ctx, card.DeviceLink, linkTTL)
}

// loadOwnDevices reads the account's other devices.
func (c *Chat) loadOwnDevices(ctx context.Context) error {
	return c.each(ctx, ownDevicePrefix, func(k string, v []byte) error {
		var d ownDevice
		if err := linkDec.Unmarshal(v, &d); err != nil || len(d.Device) != 32 {
			c.log.Warn("stored device record does not decode; ignoring it", "key", k)
			return nil
		}
		c.ownDevs[keyring.DeviceID(d.Device)] = d
		return nil
	})
}

func (c *Chat) putOwnDevice(ctx context.Context, d ownDevice) error {
	if keyring.DeviceID(d.Device) == c.id.DeviceID() {
		return nil
	}
	b, err := canonicalEnc.Marshal(d)
	if err != nil {
		return err
	}
	if err := c.ds.Put(ctx, ownDevicePrefix.ChildString(hex.EncodeToString(d.Device)), b); err != nil {
		return err
	}
	c.mu.Lock()
	c.ownDevs[keyring.DeviceID(d.Device)] = d
	c.mu.Unlock()
	if c.discovery != nil {
		c.discovery.ContactsChanged()
	}
	return nil
}

// ownDevicePeers returns the peers of the account's other devices.
func (c *Chat) ownDevicePeers() []peer.ID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]peer.ID, 0, len(c.ownDevs))
	for _, d := range c.ownDevs {
		if p, err := peer.IDFromBytes(d.Peer); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *Chat) isOwnDevicePeer(p peer.ID) bool {
	for _, q := range c.ownDevicePeers() {
		if q == p {
			return true
		}
	}
	return false
}

// handleLinkRequest is the linker's side. Anything that does not prove a
// code we issued gets the stream reset and nothing else.
func (c *Chat) handleLinkRequest(s network.Stream) {
	from := s.Conn().RemotePeer()
	b, ok := c.requests.Read(s, "link", 30*time.Second)
	if !ok {
		return
	}
	reply, newDev, err := c.acceptLinkRequest(c.ctx, from, b)
	if err != nil {
		c.log.Debug("link request dropped", "peer", from.String(), "err", err)
		s.Reset()
		return
	}
	if !request.Answer(s, reply) || newDev == nil {
		return
	}
	// Only a device that got its bundle becomes one of ours: an
	// interrupted link leaves no half-certified device (the code is spent;
	// the user makes a new one and links again).
	d := newDev.Cert.Device
	if err := c.putOwnDevice(c.ctx, ownDevice{Device: d[:], Peer: newDev.Raw.Peer, Prekey: newDev.Raw.Prekey, Cert: newDev.Raw.Cert}); err != nil {
		c.log.Error("record the linked device", "err", err)
		return
	}
	c.log.Info("device linked", "device", d.String()[:16])
	c.events.publish(Event{Kind: "devices"})
	c.wg.Go(func() { c.addDeviceEverywhere(c.ctx, *newDev) })
}

func (c *Chat) acceptLinkRequest(ctx context.Context, from peer.ID, b []byte) (linkReply, *card.Verified, error) {
	defer c.people.LockTokens()()
	tokenID, pending, body, err := people.OpenRequest[linkRequestBody](ctx, c.people, card.DeviceLink, purposeLinkReq, b)
	if err != nil {
		return linkReply{}, nil, err
	}
	if !hmac.Equal(card.LinkProof(pending.Token, tokenID, body.Prekey, body.Peer), body.Proof) {
		return linkReply{}, nil, people.ErrDropRequest
	}
	if pending.Used {
		return linkReply{Err: "used"}, nil, nil
	}
	if !c.now().Before(time.Unix(pending.Expires, 0)) {
		return linkReply{Err: "expired"}, nil, nil
	}
	spk, err := keyring.VerifyPrekey(body.Prekey)
	if err != nil || spk.ValidAt(c.now()) != nil {
		return linkReply{}, nil, fmt.Errorf("%w: prekey: %v", people.ErrDropRequest, err)
	}
	p, err := peer.IDFromBytes(body.Peer)
	if err != nil || p != from {
		return linkReply{}, nil, fmt.Errorf("%w: the request names another peer", people.ErrDropRequest)
	}
	pending.Used = true
	if err := c.people.PutPending(ctx, card.DeviceLink, tokenID, pending); err != nil {
		return linkReply{}, nil, err
	}
	now := c.now()
	certBytes, err := c.id.Keyring.Account.Certify(spk.Device, "linked device", now, time.Time{})
	if err != nil {
		return linkReply{}, nil, err
	}
	cert, err := keyring.VerifyCertificate(certBytes)
	if err != nil {
		return linkReply{}, nil, err
	}
	bundle, err := c.linkBundle(certBytes)
	if err != nil {
		return linkReply{}, nil, err
	}
	raw, err := canonicalEnc.Marshal(bundle)
	if err != nil {
		return linkReply{}, nil, err
	}
	box, err := keyring.SealBox(spk, purposeLinkBundle, tokenID, raw)
	if err != nil {
		return linkReply{}, nil, fmt.Errorf("seal the link bundle: %w", err)
	}
	vc := card.Verified{Cert: cert, Prekey: spk, Peer: peer.AddrInfo{ID: p}, Raw: card.Card{Cert: certBytes, Prekey: body.Prekey, Peer: body.Peer}}
	return linkReply{Bundle: box}, &vc, nil
}

// linkBundle gathers what a newly linked device needs.
func (c *Chat) linkBundle(cert []byte) (linkBundle, error) {
	c.idMu.Lock()
	b := linkBundle{AccountSeed: c.id.Keyring.Account.Seed(), Cert: cert, Recovery: c.id.Keyring.Secrets[recoveryKeyName]}
	c.idMu.Unlock()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.account == nil {
		return b, errors.New("the account DAG is not open")
	}
	b.AccountConv = c.account.id
	for _, vc := range c.contacts {
		b.Contacts = append(b.Contacts, vc.Raw)
	}
	for a, s := range c.pairs {
		b.Pairs = append(b.Pairs, append(append([]byte{}, a[:]...), s[:]...))
	}
	self, err := c.id.Keyring.Device.SignPrekey(c.id.Keyring.Prekeys.Current())
	if err != nil {
		return b, err
	}
	b.Devices = append(b.Devices, ownDevice{Device: func() []byte { d := c.id.DeviceID(); return d[:] }(), Peer: []byte(c.n.Host.ID()), Prekey: self, Cert: c.id.Cert})
	for _, d := range c.ownDevs {
		b.Devices = append(b.Devices, d)
	}
	return b, nil
}

// addDeviceEverywhere adds a newly linked device to the account DAG and to
// every conversation: a new epoch sealed to it and the other devices, a
// welcome and the history.
func (c *Chat) addDeviceEverywhere(ctx context.Context, vc card.Verified) {
	c.mu.RLock()
	acct := c.account
	convs := make([]*conversation, 0, len(c.convs))
	for _, conv := range c.convs {
		convs = append(convs, conv)
	}
	c.mu.RUnlock()
	if acct != nil {
		parts, err := c.rotateAccount(ctx, acct, []crdt.Op{crdt.DeviceAdd{Device: crdt.DeviceID(vc.Cert.Device), Name: vc.Cert.Name, Cert: vc.Raw.Cert}})
		if err != nil {
			c.log.Error("add the linked device to the account DAG", "err", err)
		} else {
			c.sendWelcome(ctx, acct, vc, parts, true)
		}
	}
	for _, conv := range convs {
		parts, err := c.rotate(ctx, conv, []crdt.Op{announceOf(vc)}, []card.Verified{vc}, nil)
		if err != nil {
			c.log.Error("add the linked device to a conversation", "conv", conv.hexID, "err", err)
			continue
		}
		c.wg.Go(func() { c.sendWelcome(c.ctx, conv, vc, parts, true) })
	}
}

// rotateAccount commits ops to the account DAG with a new epoch sealed to
// every device of the account.
func (c *Chat) rotateAccount(ctx context.Context, conv *conversation, ops []crdt.Op) ([][]byte, error) {
	own, err := c.ownPrekey()
	if err != nil {
		return nil, err
	}
	recips := []keyring.SignedPrekey{own}
	self := crdt.AccountID(c.id.AccountID())
	crdtRecips := []crdt.Recipient{{Account: self, Device: crdt.DeviceID(c.id.DeviceID())}}
	c.mu.RLock()
	for _, d := range c.ownDevs {
		spk, err := keyring.VerifyPrekey(d.Prekey)
		if err != nil || spk.Device != keyring.DeviceID(d.Device) {
			continue
		}
		recips = append(recips, spk)
		crdtRecips = append(crdtRecips, crdt.Recipient{Account: self, Device: crdt.DeviceID(spk.Device)})
	}
	c.mu.RUnlock()
	parts, epoch, err := keyring.NewRotation(rand.Reader, c.id.Keyring.Device, keyring.RotationParams{
		Conversation: conv.id, Recipients: recips, Created: c.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("seal a new account epoch: %w", err)
	}
	for _, p := range parts {
		ops = append(ops, crdt.Rotation{Payload: p, Recipients: crdtRecips})
	}
	// The rotation block is sealed under the current epoch (the other
	// devices learn the new one from it); later blocks under the new one.
	if _, err := c.commitOwn(ctx, conv, ops); err != nil {
		return nil, err
	}
	conv.mu.Lock()
	err = conv.cipher.Install(epoch)
	if err == nil {
		err = conv.cipher.SetSendingEpoch(epoch.ID)
	}
	conv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return parts, c.persistKeys(ctx, conv, true)
}

// noteAccountRotations installs account-DAG epochs sealed to this device
// and sends under the newest one. conv.mu is held.
func (c *Chat) noteAccountRotations(conv *conversation, events []crdt.Event) {
	self := c.id.DeviceID()
	for _, ev := range events {
		for _, op := range ev.Ops {
			rot, ok := op.(crdt.Rotation)
			if !ok {
				continue
			}
			r, err := keyring.VerifyRotation(rot.Payload)
			if err != nil || string(r.Conversation) != string(conv.id) || !r.HasBoxFor(self) || conv.cipher.HasEpoch(r.Epoch) {
				continue
			}
			c.idMu.Lock()
			ep, err := keyring.OpenEpoch(r, self, c.id.Keyring.Prekeys)
			c.idMu.Unlock()
			if err != nil || conv.cipher.Install(ep) != nil {
				continue
			}
			if ev.Lamport >= conv.acctEpochLamport {
				conv.acctEpochLamport = ev.Lamport
				_ = conv.cipher.SetSendingEpoch(r.Epoch)
			}
			if err := c.persistKeys(c.ctx, conv, true); err != nil {
				c.log.Error("persist key state", "err", err)
			}
		}
	}
}

// Link links this (fresh) node to the account of the device that showed
// code: afterwards it is one more device of that account. It implements
// webui.DevicesBackend; errors also match the API's sentinels.
func (n *Node) Link(ctx context.Context, code string) error {
	return devicesErr(n.link(ctx, code))
}

func (n *Node) link(ctx context.Context, code string) error {
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	pl, err := card.DeviceLink.Parse(code, c.now())
	if err != nil {
		return err
	}
	if pl.Card.Cert.Account == c.id.AccountID() {
		return fmt.Errorf("%w: this device already belongs to that account", ErrLinkInvalid)
	}
	v := c.accountSnapshot()
	c.mu.RLock()
	fresh := v.name == "" && len(c.contacts) == 0 && len(c.convs) == 0
	c.mu.RUnlock()
	if !fresh {
		return ErrNotFresh
	}
	tid := card.TokenID(pl.Token)
	if pl.Card, err = c.people.FetchTokenCard(ctx, pl.Card, tid, "the other device", ErrLinkInvalid); err != nil {
		return err
	}
	prekey, err := c.ownPrekeySigned()
	if err != nil {
		return err
	}
	peerID := []byte(n.Host.ID())
	req, err := people.SealRequest(pl.Card.Prekey, purposeLinkReq, tid, linkRequestBody{Prekey: prekey, Peer: peerID, Proof: card.LinkProof(pl.Token, tid, prekey, peerID)})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.people.Reach(rctx, pl.Card.Peer.ID, "the other device"); err != nil {
		return err
	}
	raw, err := request.Exchange(rctx, n.Host, pl.Card.Peer.ID, LinkProtocol, req, maxLinkReply, 30*time.Second)
	switch {
	case errors.Is(err, request.ErrNoAnswer):
		return fmt.Errorf("%w: the other device did not answer (the code is unknown to it)", ErrLinkInvalid)
	case errors.Is(err, request.ErrTooLong):
		return fmt.Errorf("%w: malformed answer: %w", ErrBadPeer, err)
	case err != nil:
		return fmt.Errorf("link request: %w", err)
	}
	var reply linkReply
	if err := linkDec.Unmarshal(raw, &reply); err != nil {
		return fmt.Errorf("%w: malformed answer: %w", ErrBadPeer, err)
	}
	switch reply.Err {
	case "":
	case "expired":
		return ErrLinkExpired
	case "used":
		return ErrLinkUsed
	default:
		return fmt.Errorf("%w: %s", ErrLinkInvalid, reply.Err)
	}
	c.idMu.Lock()
	plain, err := c.id.Keyring.Prekeys.OpenBox(c.id.DeviceID(), purposeLinkBundle, tid, reply.Bundle)
	c.idMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: link bundle: %w", ErrBadPeer, err)
	}
	var bundle linkBundle
	if err := linkDec.Unmarshal(plain, &bundle); err != nil {
		return fmt.Errorf("%w: link bundle: %w", ErrBadPeer, err)
	}
	return n.adoptAccount(ctx, pl.Card.Cert.Account, bundle, nil)
}

// adoptAccount makes this device one of the bundle's account: it checks
// the bundle, rewrites the keyring, replaces the provisional account's
// chat state and restarts the chat service. rejoin (conversation id ‖
// root secret) names conversations to ask members for (a restore).
func (n *Node) adoptAccount(ctx context.Context, want keyring.AccountID, b linkBundle, rejoin [][]byte) error {
	acct, err := keyring.AccountKeyFromSeed(b.AccountSeed)
	if err != nil || acct.ID() != want {
		return fmt.Errorf("%w: the bundle's account key is not the account of the code", ErrBadPeer)
	}
	n.unlockMu.Lock()
	defer n.unlockMu.Unlock()
	old := n.chatService()
	if old == nil {
		return errNoChat
	}
	cert, err := keyring.VerifyCertificate(b.Cert)
	if err != nil || cert.Account != want || cert.Device != old.id.DeviceID() {
		return fmt.Errorf("%w: the bundle's certificate is not for this device", ErrBadPeer)
	}
	if len(b.AccountConv) != 16 && rejoin == nil {
		return fmt.Errorf("%w: the bundle names no account DAG", ErrBadPeer)
	}
	old.close()
	old.catchup.Close()
	n.chatMu.Lock()
	n.Chat = nil
	n.chatMu.Unlock()

	// The adoption is recorded first (synced), then carried out; a crash
	// in between is finished at the next start (startChat), so a device
	// is never left half in one account and half in the other.
	id := old.id
	pa := pendingAdoption{Bundle: b, Rejoin: rejoin}
	raw, err := canonicalEnc.Marshal(pa)
	if err != nil {
		return err
	}
	sealed, err := keyring.SealAtRest(id.Keyring.Secrets[storeKeyName], adoptingKey.String(), raw)
	if err != nil {
		return err
	}
	if err := n.Store.Put(ctx, adoptingKey, sealed); err != nil {
		return err
	}
	if err := n.Store.Sync(ctx, adoptingKey); err != nil {
		return err
	}
	if err := n.applyAdoption(ctx, id, pa); err != nil {
		return err
	}
	if err := n.Store.Sync(ctx, ds.NewKey("/")); err != nil {
		return err
	}
	if err := n.startChat(ctx, passphraseOf(id)); err != nil {
		return fmt.Errorf("restart under the linked account: %w", err)
	}
	n.log.Info("this device is now linked to the account", "account", want.String()[:16])
	return nil
}

func passphraseOf(id *Identity) []byte {
	if p, ok := id.prot.(keyring.Passphrase); ok {
		return p
	}
	return nil
}

func deletePrefix(ctx context.Context, d ds.Batching, prefix ds.Key) error {
	res, err := d.Query(ctx, query.Query{Prefix: prefix.String(), KeysOnly: true})
	if err != nil {
		return err
	}
	var keys []ds.Key
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		keys = append(keys, ds.NewKey(r.Key))
	}
	res.Close()
	if err := d.Delete(ctx, prefix); err != nil && !errors.Is(err, ds.ErrNotFound) {
		return err
	}
	for _, k := range keys {
		if err := d.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// pendingAdoption is an adoption recorded before it is carried out.
type pendingAdoption struct {
	Bundle linkBundle `cbor:"1,keyasint"`
	Rejoin [][]byte   `cbor:"2,keyasint,omitempty"`
}

var adoptingKey = ds.NewKey("/adopting")

// finishAdoption completes an adoption a crash interrupted. It runs at
// start, with the keyring as it is on disk.
func (n *Node) finishAdoption(ctx context.Context, id *Identity) error {
	sealed, err := n.Store.Get(ctx, adoptingKey)
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	raw, err := keyring.OpenAtRest(id.Keyring.Secrets[storeKeyName], adoptingKey.String(), sealed)
	if err != nil {
		return fmt.Errorf("interrupted link: %w", err)
	}
	var pa pendingAdoption
	if err := linkDec.Unmarshal(raw, &pa); err != nil {
		return fmt.Errorf("interrupted link: %w", err)
	}
	n.log.Info("finishing a link or restore that was interrupted")
	return n.applyAdoption(ctx, id, pa)
}

// applyAdoption replaces the provisional account with the adopted one:
// chat state cleared, keyring rewritten, contacts, pair secrets, devices
// and conversations to rejoin stored, then the record removed. It is
// idempotent.
func (n *Node) applyAdoption(ctx context.Context, id *Identity, pa pendingAdoption) error {
	b, rejoin := pa.Bundle, pa.Rejoin
	acct, err := keyring.AccountKeyFromSeed(b.AccountSeed)
	if err != nil {
		return err
	}
	want := acct.ID()
	// The provisional account's chat state goes; the store key stays.
	for _, prefix := range append([]ds.Key{convPrefix, keysPrefix, contactPrefix, pairPrefix, ownDevicePrefix, rejoinPrefix, accountKey}, people.StorePrefixes...) {
		if err := deletePrefix(ctx, n.Store, prefix); err != nil {
			return fmt.Errorf("clear the provisional account: %w", err)
		}
	}
	id.Keyring.Account = acct
	id.Keyring.Secrets["device-cert"] = b.Cert
	if len(b.Recovery) > 0 {
		id.Keyring.Secrets[recoveryKeyName] = b.Recovery
	}
	if err := id.save(); err != nil {
		return err
	}
	storeKey := id.Keyring.Secrets[storeKeyName]
	if len(b.AccountConv) == 16 {
		if err := n.Store.Put(ctx, accountKey, []byte(hex.EncodeToString(b.AccountConv))); err != nil {
			return err
		}
	}
	for _, r := range rejoin {
		if len(r) != 16+32 {
			continue
		}
		k := rejoinPrefix.ChildString(hex.EncodeToString(r[:16]))
		sealed, err := keyring.SealAtRest(storeKey, k.String(), r[16:])
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, k, sealed); err != nil {
			return err
		}
	}
	for _, cd := range b.Contacts {
		vc, err := card.Verify(cd, time.Time{})
		if err != nil || vc.Cert.Account == want {
			continue
		}
		raw, err := canonicalEnc.Marshal(cd)
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, contactPrefix.ChildString(hex.EncodeToString(vc.Cert.Account[:])), raw); err != nil {
			return err
		}
	}
	for _, p := range b.Pairs {
		if len(p) != 32+discovery.PairSecretSize {
			continue
		}
		k := pairPrefix.ChildString(hex.EncodeToString(p[:32]))
		sealed, err := keyring.SealAtRest(storeKey, k.String(), p[32:])
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, k, sealed); err != nil {
			return err
		}
	}
	for _, d := range b.Devices {
		if len(d.Device) != 32 || keyring.DeviceID(d.Device) == id.DeviceID() {
			continue
		}
		raw, err := canonicalEnc.Marshal(d)
		if err != nil {
			return err
		}
		if err := n.Store.Put(ctx, ownDevicePrefix.ChildString(hex.EncodeToString(d.Device)), raw); err != nil {
			return err
		}
	}
	if err := n.Store.Delete(ctx, adoptingKey); err != nil {
		return err
	}
	return n.Store.Sync(ctx, ds.NewKey("/"))
}
