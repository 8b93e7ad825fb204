package mailbox

// The key schedule and the capabilities (docs/mailbox.md §2–3). Pure: no
// I/O, values in, values out.

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"filippo.io/edwards25519"

	"github.com/glitr-chat/glitr/protocol"
)

// SecretSize is the size of a mailbox secret and of a deposit secret.
const SecretSize = 32

// DepositKeySize is the size of an encoded DepositKey.
const DepositKeySize = 2 * SecretSize

// Labels of the key schedule and of the signatures (domain separation).
var (
	labelDepositSecret = protocol.Label("mailbox-deposit-secret")
	labelDrainScalar   = protocol.Label("mailbox-drain-scalar")
	labelDrainNonce    = protocol.Label("mailbox-drain-nonce")
	labelDepositKey    = protocol.Label("mailbox-deposit-key")
	labelDrainBlind    = protocol.Label("mailbox-drain-blind")
	labelID            = protocol.Label("mailbox-id")
	labelSigDeposit    = protocol.Label("mailbox-deposit")
	labelSigDrain      = protocol.Label("mailbox-drain")
	labelSigAck        = protocol.Label("mailbox-ack")
	labelDigests       = protocol.Label("mailbox-digests")
)

// Errors of the key schedule and of capability checks.
var (
	// ErrBadCapability: keys that do not name the mailbox, or a
	// signature that does not verify.
	ErrBadCapability = errors.New("mailbox: bad capability")
	// ErrBadKey: a deposit key that does not decode.
	ErrBadKey = errors.New("mailbox: malformed key")
)

// Period numbers the mailbox periods: UTC days since 1970-01-01.
type Period uint64

// PeriodOf returns the period t falls in (0 before 1970).
func PeriodOf(t time.Time) Period {
	s := t.Unix()
	if s < 0 {
		return 0
	}
	return Period(s / int64(protocol.MailboxPeriod/time.Second))
}

// Start is the first instant of p.
func (p Period) Start() time.Time {
	return time.Unix(int64(p)*int64(protocol.MailboxPeriod/time.Second), 0).UTC()
}

// End is the first instant after p.
func (p Period) End() time.Time { return (p + 1).Start() }

// ID names one mailbox: one owner's mailbox of one period.
type ID [protocol.MailboxIDSize]byte

// Digest is the SHA-256 of an envelope: how it is deduplicated and acked.
type Digest [protocol.MailboxDigestSize]byte

// DigestOf returns env's digest.
func DigestOf(env []byte) Digest { return sha256.Sum256(env) }

// MailboxID is H("glitr/v1/mailbox-id" 0x00 ‖ period ‖ deposit key ‖ drain
// key): the relay recomputes it from a deposit's public keys, so a mailbox
// can only be named by keys derived for it.
func MailboxID(p Period, depositPub, drainPub []byte) ID {
	h := sha256.New()
	h.Write([]byte(labelID))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(p)))
	h.Write(depositPub)
	h.Write(drainPub)
	var id ID
	h.Sum(id[:0])
	return id
}

// hkdfKey is HKDF-SHA256 with info = label 0x00 ‖ parts.
func hkdfKey(secret []byte, label string, n int, parts ...[]byte) []byte {
	info := append([]byte(label), 0)
	for _, p := range parts {
		info = append(info, p...)
	}
	okm, err := hkdf.Key(sha256.New, secret, nil, string(info), n)
	if err != nil {
		// Only a length beyond 255*32 bytes fails; ours are constants.
		panic(fmt.Sprintf("mailbox: hkdf: %v", err))
	}
	return okm
}

func uniformScalar(b []byte) *edwards25519.Scalar {
	s, err := edwards25519.NewScalar().SetUniformBytes(b)
	if err != nil {
		panic(fmt.Sprintf("mailbox: scalar from %d bytes: %v", len(b), err))
	}
	return s
}

func period8(p Period) []byte { return binary.BigEndian.AppendUint64(nil, uint64(p)) }

// OwnerKey is the mailbox secret. Only the owner's devices hold it (in the
// account DAG); for a conversation mailbox, every member does. It derives
// every period's drain keys and the deposit key its contacts get.
type OwnerKey struct {
	secret [SecretSize]byte
	// derived once
	deposit DepositKey
	drain   *edwards25519.Scalar // base drain scalar a; DrainBase = a·G
}

// NewOwnerKey makes a fresh mailbox secret from rand (crypto/rand.Reader).
func NewOwnerKey(rand io.Reader) (*OwnerKey, error) {
	var s [SecretSize]byte
	if _, err := io.ReadFull(rand, s[:]); err != nil {
		return nil, fmt.Errorf("mailbox: new secret: %w", err)
	}
	return OwnerKeyFromSecret(s), nil
}

// OwnerKeyFromSecret rebuilds an owner key from its stored secret (or from
// a conversation's exported secret, for a conversation mailbox).
func OwnerKeyFromSecret(secret [SecretSize]byte) *OwnerKey {
	k := &OwnerKey{secret: secret}
	copy(k.deposit.Secret[:], hkdfKey(secret[:], labelDepositSecret, SecretSize))
	k.drain = uniformScalar(hkdfKey(secret[:], labelDrainScalar, 64))
	copy(k.deposit.DrainBase[:], edwards25519.NewIdentityPoint().ScalarBaseMult(k.drain).Bytes())
	return k
}

// Secret returns the mailbox secret, for storing it.
func (k *OwnerKey) Secret() [SecretSize]byte { return k.secret }

// DepositKey returns what the owner gives its contacts (or the members of
// a conversation) so that they can deposit: it derives every period's
// deposit capability and mailbox id, and no drain key.
func (k *OwnerKey) DepositKey() DepositKey { return k.deposit }

// Drain returns the owner's keys of period p: its mailbox id and the drain
// key that signs drains and acks.
func (k *OwnerKey) Drain(p Period) *DrainKey {
	c := k.deposit.capability(p)
	h := k.deposit.blind(p)
	a := edwards25519.NewScalar().Multiply(h, k.drain)
	d := &DrainKey{Period: p, ID: c.ID, DrainPub: c.DrainPub, scalar: a}
	copy(d.prefix[:], hkdfKey(k.secret[:], labelDrainNonce, 32, period8(p)))
	return d
}

// DepositKey is the deposit capability's root: the deposit secret (from
// which every period's Ed25519 deposit key follows) and the drain base
// point (from which, blinded per period, every period's drain public key
// follows). Contacts hold it; the relay never does.
type DepositKey struct {
	Secret    [SecretSize]byte
	DrainBase [32]byte // a·G, an Ed25519 point
}

// MarshalBinary encodes k as its 64 bytes.
func (k DepositKey) MarshalBinary() ([]byte, error) {
	return append(append(make([]byte, 0, DepositKeySize), k.Secret[:]...), k.DrainBase[:]...), nil
}

// ParseDepositKey decodes a deposit key received from a contact, checking
// that the drain base is a point of the curve that is not of small order.
func ParseDepositKey(b []byte) (DepositKey, error) {
	var k DepositKey
	if len(b) != DepositKeySize {
		return k, fmt.Errorf("%w: deposit key of %d bytes", ErrBadKey, len(b))
	}
	p, err := edwards25519.NewIdentityPoint().SetBytes(b[SecretSize:])
	if err != nil {
		return k, fmt.Errorf("%w: drain base: %w", ErrBadKey, err)
	}
	if p.MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return k, fmt.Errorf("%w: drain base of small order", ErrBadKey)
	}
	copy(k.Secret[:], b[:SecretSize])
	copy(k.DrainBase[:], b[SecretSize:])
	return k, nil
}

// blind is the period's blinding factor h = H(deposit secret, period,
// drain base): keyed by the deposit secret, so the relay, which sees the
// blinded keys h·B of many periods, cannot relate them to B or to each
// other.
func (k DepositKey) blind(p Period) *edwards25519.Scalar {
	return uniformScalar(hkdfKey(k.Secret[:], labelDrainBlind, 64, period8(p), k.DrainBase[:]))
}

// Capability derives the deposit capability of period p, or fails on a
// deposit key whose drain base is not a point (see ParseDepositKey).
func (k DepositKey) Capability(p Period) (*Capability, error) {
	if _, err := edwards25519.NewIdentityPoint().SetBytes(k.DrainBase[:]); err != nil {
		return nil, fmt.Errorf("%w: drain base: %w", ErrBadKey, err)
	}
	return k.capability(p), nil
}

func (k DepositKey) capability(p Period) *Capability {
	seed := hkdfKey(k.Secret[:], labelDepositKey, ed25519.SeedSize, period8(p))
	priv := ed25519.NewKeyFromSeed(seed)
	base, err := edwards25519.NewIdentityPoint().SetBytes(k.DrainBase[:])
	if err != nil {
		panic("mailbox: drain base checked by the caller")
	}
	var c Capability
	c.Period = p
	c.priv = priv
	copy(c.DepositPub[:], priv.Public().(ed25519.PublicKey))
	copy(c.DrainPub[:], edwards25519.NewIdentityPoint().ScalarMult(k.blind(p), base).Bytes())
	c.ID = MailboxID(p, c.DepositPub[:], c.DrainPub[:])
	return &c
}

// Capability is what deposits into one period's mailbox: the period's
// deposit key pair and the public keys that name the mailbox. Every holder
// of the deposit key derives the same one, so a deposit does not tell the
// relay which contact made it.
type Capability struct {
	Period     Period
	ID         ID
	DepositPub [32]byte
	DrainPub   [32]byte
	priv       ed25519.PrivateKey
}

// DrainKey is the owner's key of one period: it names the mailbox and
// signs drains and acks with the blinded scalar h·a, which only the
// mailbox secret yields.
type DrainKey struct {
	Period   Period
	ID       ID
	DrainPub [32]byte
	scalar   *edwards25519.Scalar
	prefix   [32]byte
}

// sign is Ed25519 (RFC 8032 §5.1.6) with an expanded key (scalar, prefix)
// instead of a seed, as Tor's blinded onion keys (rend-spec-v3 A.2): the
// signature verifies with ed25519.Verify under DrainPub = scalar·G.
func (d *DrainKey) sign(msg []byte) []byte {
	h := sha512.New()
	h.Write(d.prefix[:])
	h.Write(msg)
	r := uniformScalar(h.Sum(nil))
	R := edwards25519.NewIdentityPoint().ScalarBaseMult(r).Bytes()
	h.Reset()
	h.Write(R)
	h.Write(d.DrainPub[:])
	h.Write(msg)
	k := uniformScalar(h.Sum(nil))
	S := edwards25519.NewScalar().MultiplyAdd(k, d.scalar, r)
	return append(R, S.Bytes()...)
}

// digestsHash commits to a list of digests, in order.
func digestsHash(digests []Digest) [32]byte {
	h := sha256.New()
	h.Write([]byte(labelDigests))
	h.Write([]byte{0})
	for _, d := range digests {
		h.Write(d[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func sigHeader(label string, relay []byte, id []byte) []byte {
	b := make([]byte, 0, len(label)+2+len(relay)+len(id)+64)
	b = append(b, label...)
	b = append(b, 0, byte(len(relay)))
	b = append(b, relay...)
	return append(b, id...)
}

// DepositMessage is what a deposit's signature covers: the relay's peer
// id (a deposit cannot be replayed at another relay), the mailbox and its
// period, the time, and the envelopes' digests.
func DepositMessage(relay []byte, id []byte, p Period, timeMs int64, digests []Digest) []byte {
	b := sigHeader(labelSigDeposit, relay, id)
	b = binary.BigEndian.AppendUint64(b, uint64(p))
	b = binary.BigEndian.AppendUint64(b, uint64(timeMs))
	h := digestsHash(digests)
	return append(b, h[:]...)
}

// DrainMessage is what a drain request's signature covers.
func DrainMessage(relay []byte, id []byte, after uint64, timeMs int64) []byte {
	b := sigHeader(labelSigDrain, relay, id)
	b = binary.BigEndian.AppendUint64(b, after)
	return binary.BigEndian.AppendUint64(b, uint64(timeMs))
}

// AckMessage is what an ack's signature covers.
func AckMessage(relay []byte, id []byte, timeMs int64, digests []Digest) []byte {
	b := sigHeader(labelSigAck, relay, id)
	b = binary.BigEndian.AppendUint64(b, uint64(timeMs))
	h := digestsHash(digests)
	return append(b, h[:]...)
}

// Deposit builds the signed request storing envs at relay.
func (c *Capability) Deposit(relay []byte, now time.Time, envs [][]byte) *protocol.MailboxDeposit {
	digests := make([]Digest, len(envs))
	for i, e := range envs {
		digests[i] = DigestOf(e)
	}
	ms := now.UnixMilli()
	return &protocol.MailboxDeposit{
		ID: c.ID[:], Period: uint64(c.Period), DepositKey: c.DepositPub[:], DrainKey: c.DrainPub[:],
		Time: ms, Sig: ed25519.Sign(c.priv, DepositMessage(relay, c.ID[:], c.Period, ms, digests)),
		Envelopes: envs,
	}
}

// DrainRequest builds the signed request for the envelopes after cursor.
func (d *DrainKey) DrainRequest(relay []byte, now time.Time, after uint64) protocol.MailboxDrainReq {
	ms := now.UnixMilli()
	return protocol.MailboxDrainReq{ID: d.ID[:], After: after, Time: ms, Sig: d.sign(DrainMessage(relay, d.ID[:], after, ms))}
}

// Ack builds the signed request deleting the envelopes with digests.
func (d *DrainKey) Ack(relay []byte, now time.Time, digests []Digest) *protocol.MailboxAck {
	ms := now.UnixMilli()
	raw := make([][]byte, len(digests))
	for i := range digests {
		raw[i] = digests[i][:]
	}
	return &protocol.MailboxAck{ID: d.ID[:], Time: ms, Digests: raw, Sig: d.sign(AckMessage(relay, d.ID[:], ms, digests))}
}

// VerifyDeposit checks a deposit's capability: its public keys name its
// mailbox and its deposit key signed it for this relay. It returns the
// envelopes' digests.
func VerifyDeposit(relay []byte, d *protocol.MailboxDeposit) ([]Digest, error) {
	id := MailboxID(Period(d.Period), d.DepositKey, d.DrainKey)
	if subtle.ConstantTimeCompare(id[:], d.ID) != 1 {
		return nil, fmt.Errorf("%w: keys do not name the mailbox", ErrBadCapability)
	}
	digests := make([]Digest, len(d.Envelopes))
	for i, e := range d.Envelopes {
		digests[i] = DigestOf(e)
	}
	if len(d.DepositKey) != ed25519.PublicKeySize ||
		!ed25519.Verify(d.DepositKey, DepositMessage(relay, d.ID, Period(d.Period), d.Time, digests), d.Sig) {
		return nil, fmt.Errorf("%w: deposit signature", ErrBadCapability)
	}
	return digests, nil
}

// VerifyDrain checks a drain request against the mailbox's drain key.
func VerifyDrain(relay []byte, drainPub []byte, r protocol.MailboxDrainReq) error {
	if len(drainPub) != ed25519.PublicKeySize || !ed25519.Verify(drainPub, DrainMessage(relay, r.ID, r.After, r.Time), r.Sig) {
		return fmt.Errorf("%w: drain signature", ErrBadCapability)
	}
	return nil
}

// VerifyAck checks an ack against the mailbox's drain key and returns its
// digests.
func VerifyAck(relay []byte, drainPub []byte, a *protocol.MailboxAck) ([]Digest, error) {
	digests := make([]Digest, len(a.Digests))
	for i, d := range a.Digests {
		if len(d) != len(digests[i]) {
			return nil, fmt.Errorf("%w: digest of %d bytes", ErrBadCapability, len(d))
		}
		copy(digests[i][:], d)
	}
	if len(drainPub) != ed25519.PublicKeySize || !ed25519.Verify(drainPub, AckMessage(relay, a.ID, a.Time, digests), a.Sig) {
		return nil, fmt.Errorf("%w: ack signature", ErrBadCapability)
	}
	return digests, nil
}
