package keyring

// The tests of cipher.go, over 800 lines as that file is (see its top):
// one per property of the key state, sharing its fixtures.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestSealOpenRoundTrip(t *testing.T) {
	ms := newMembers(t, 3)
	rotate(t, 100, ms[0], ms)
	for _, size := range []int{0, 1, 200, 255, 256, 1000, 4096, MaxInnerSize} {
		inner := bytes.Repeat([]byte{byte(size)}, size)
		env := seal(t, ms[1], inner)
		if len(env.epoch) != EpochIDSize || len(env.nonce) != NonceSize {
			t.Fatal("envelope field sizes")
		}
		for _, r := range []*member{ms[0], ms[2]} {
			got, sender, err := r.cipher.OpenBlock(env.epoch, env.nonce, env.ct)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if sender != ms[1].dev.ID() || !bytes.Equal(got, inner) {
				t.Fatalf("size %d: wrong plaintext or sender", size)
			}
		}
	}
	if _, _, _, err := ms[0].cipher.SealBlock(make([]byte, MaxInnerSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestPaddingHidesLength(t *testing.T) {
	ms := newMembers(t, 2)
	rotate(t, 100, ms[0], ms)
	// Every inner block up to 255 bytes gives the same envelope length.
	want := len(seal(t, ms[0], nil).ct)
	for n := 1; n < MinPaddedSize; n += 17 {
		if got := len(seal(t, ms[0], make([]byte, n)).ct); got != want {
			t.Fatalf("inner %d bytes: ciphertext %d, want %d", n, got, want)
		}
	}
	// Padmé: at most 12 % overhead, and monotonic.
	prev := 0
	for n := 1; n <= MaxInnerSize+1; n += 97 {
		p := padLen(n)
		if p < n || p < prev || (n > MinPaddedSize && float64(p-n) > 0.12*float64(n)) {
			t.Fatalf("padLen(%d) = %d", n, p)
		}
		prev = p
	}
	// Known values, computed by hand from the Padmé definition.
	for n, want := range map[int]int{257: 272, 300: 304, 1000: 1024, 1025: 1088, 65537: 67584} {
		if got := padLen(n); got != want {
			t.Errorf("padLen(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestEnvelopeTampering(t *testing.T) {
	ms := newMembers(t, 2)
	id := rotate(t, 100, ms[0], ms)
	base := seal(t, ms[0], []byte("hello"))
	other := newMembers(t, 2)
	otherConv, _ := NewCipher([]byte("conversation-0002"), ms[1].dev.ID(), detRand(1))
	_ = other

	cases := []struct {
		name   string
		mutate func(e *envelope)
		want   error
	}{
		{"header byte", func(e *envelope) { e.ct[3] ^= 1 }, ErrDecrypt},
		{"header tag", func(e *envelope) { e.ct[headerSealSize-1] ^= 1 }, ErrDecrypt},
		{"body byte", func(e *envelope) { e.ct[headerSealSize+5] ^= 1 }, ErrDecrypt},
		{"padding byte", func(e *envelope) { e.ct[len(e.ct)-TagSize-1] ^= 1 }, ErrDecrypt},
		{"tag", func(e *envelope) { e.ct[len(e.ct)-1] ^= 1 }, ErrDecrypt},
		{"nonce", func(e *envelope) { e.nonce[0] ^= 1 }, ErrDecrypt},
		{"epoch", func(e *envelope) { e.epoch[0] ^= 1 }, ErrUnknownEpoch},
		{"truncated", func(e *envelope) { e.ct = e.ct[:len(e.ct)-16] }, ErrMalformed},
		{"short nonce", func(e *envelope) { e.nonce = e.nonce[:12] }, ErrMalformed},
		{"extended", func(e *envelope) { e.ct = append(e.ct, make([]byte, 16)...) }, ErrDecrypt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := base.clone()
			tc.mutate(&e)
			if _, _, err := ms[1].cipher.OpenBlock(e.epoch, e.nonce, e.ct); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The untouched envelope still opens: failed attempts consumed nothing.
	if _, _, err := ms[1].cipher.OpenBlock(base.epoch, base.nonce, base.ct); err != nil {
		t.Fatalf("original after tampering attempts: %v", err)
	}
	// Transplanted to another conversation: that cipher lacks the epoch, and
	// even with the same keys the conversation id is in the AD.
	if _, _, err := otherConv.OpenBlock(base.epoch, base.nonce, base.ct); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("other conversation: %v", err)
	}
	st := ms[1].cipher.epochs[id]
	otherConv.epochs[id] = st
	e2 := seal(t, ms[0], []byte("again"))
	if _, _, err := otherConv.OpenBlock(e2.epoch, e2.nonce, e2.ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("same keys, other conversation id: %v", err)
	}
}

// sealRaw lets a member build an envelope with any header and padded body,
// as a malicious member could.
func sealRaw(t *testing.T, c *Cipher, id EpochID, sender DeviceID, index uint32, mk [KeySize]byte, padded []byte) envelope {
	t.Helper()
	st := c.epochs[id]
	nonce := bytes.Repeat([]byte{9}, NonceSize)
	ad := c.envelopeAD(nil, id[:], nonce)
	hdr := append(sender[:], byte(index>>24), byte(index>>16), byte(index>>8), byte(index))
	ct := st.header.Seal(nil, nonce, hdr, ad)
	body, _ := aeadSeal(mk[:], nonce, padded, append(ad, ct...))
	return envelope{id[:], nonce, append(ct, body...)}
}

func TestBadPaddingFromMember(t *testing.T) {
	ms := newMembers(t, 2)
	id := rotate(t, 100, ms[0], ms)
	ck := ms[0].cipher.epochs[id].chains[ms[0].dev.ID()].ck
	mk0 := chainStep(&ck)
	for name, padded := range map[string][]byte{
		"no marker":         make([]byte, MinPaddedSize),
		"nonzero after":     append(append([]byte("hi"), 0x80, 1), make([]byte, MinPaddedSize-4)...),
		"non-canonical len": append(append([]byte("hi"), 0x80), make([]byte, 2*MinPaddedSize-3)...),
	} {
		env := sealRaw(t, ms[0].cipher, id, ms[0].dev.ID(), 0, mk0, padded)
		if _, _, err := ms[1].cipher.OpenBlock(env.epoch, env.nonce, env.ct); !errors.Is(err, ErrBadPadding) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReplayAndOutOfOrder(t *testing.T) {
	ms := newMembers(t, 2)
	rotate(t, 100, ms[0], ms)
	var envs []envelope
	for i := range 10 {
		envs = append(envs, seal(t, ms[0], []byte{byte(i)}))
	}
	for _, i := range []int{3, 0, 9, 1, 2, 8, 4, 5, 7, 6} {
		got, _, err := ms[1].cipher.OpenBlock(envs[i].epoch, envs[i].nonce, envs[i].ct)
		if err != nil || got[0] != byte(i) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	for i := range envs {
		if _, _, err := ms[1].cipher.OpenBlock(envs[i].epoch, envs[i].nonce, envs[i].ct); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of %d: %v", i, err)
		}
	}
	if ms[1].cipher.nskip != 0 {
		t.Fatalf("%d skipped keys left", ms[1].cipher.nskip)
	}
}

func TestSkipLimits(t *testing.T) {
	ms := newMembers(t, 2)
	id := rotate(t, 100, ms[0], ms)
	sender := ms[0].dev.ID()
	ck := ms[0].cipher.epochs[id].chains[sender].ck
	keyAt := func(i uint32) [KeySize]byte {
		c := ck
		var mk [KeySize]byte
		for range i + 1 {
			mk = chainStep(&c)
		}
		return mk
	}
	inner := pad([]byte("x"))
	// Beyond MaxForwardJump: rejected before any work is committed.
	far := sealRaw(t, ms[0].cipher, id, sender, MaxForwardJump+1, keyAt(MaxForwardJump+1), inner)
	if _, _, err := ms[1].cipher.OpenBlock(far.epoch, far.nonce, far.ct); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("jump %d: %v", MaxForwardJump+1, err)
	}
	// Exactly MaxForwardJump: accepted, only MaxSkippedKeys kept.
	edge := sealRaw(t, ms[0].cipher, id, sender, MaxForwardJump, keyAt(MaxForwardJump), inner)
	if _, _, err := ms[1].cipher.OpenBlock(edge.epoch, edge.nonce, edge.ct); err != nil {
		t.Fatalf("jump %d: %v", MaxForwardJump, err)
	}
	if n := ms[1].cipher.nskip; n != MaxSkippedKeys {
		t.Fatalf("%d skipped keys stored", n)
	}
	old := sealRaw(t, ms[0].cipher, id, sender, 5, keyAt(5), inner)
	if _, _, err := ms[1].cipher.OpenBlock(old.epoch, old.nonce, old.ct); !errors.Is(err, ErrKeyEvicted) {
		t.Fatalf("evicted index: %v", err)
	}
	kept := sealRaw(t, ms[0].cipher, id, sender, MaxForwardJump-1, keyAt(MaxForwardJump-1), inner)
	if _, _, err := ms[1].cipher.OpenBlock(kept.epoch, kept.nonce, kept.ct); err != nil {
		t.Fatalf("kept skipped key: %v", err)
	}
}

// TestImpersonation: member A holds B's chain keys (every member does) and
// the header key, so it can seal an envelope naming B. The cipher accepts
// it as from B; the block signature check is what stops it, and with
// OpenBlockFunc the forgery does not burn B's real message key.
func TestImpersonation(t *testing.T) {
	ms := newMembers(t, 3)
	a, b, c := ms[0], ms[1], ms[2]
	id := rotate(t, 100, a, ms)
	ck := a.cipher.epochs[id].chains[b.dev.ID()].ck
	mk0 := chainStep(&ck)
	innerMsg := []byte("inner block claiming author B")
	sigByA, _ := a.dev.Sign(innerMsg)
	forged := sealRaw(t, a.cipher, id, b.dev.ID(), 0, mk0, pad(append(slices.Clone(innerMsg), sigByA...)))

	verifyAsNode := func(inner []byte, sender DeviceID) error {
		msg, sig := inner[:len(inner)-ed25519.SignatureSize], inner[len(inner)-ed25519.SignatureSize:]
		return VerifyBlockSignature(sender[:], msg, sig)
	}
	if _, _, err := c.cipher.OpenBlockFunc(forged.epoch, forged.nonce, forged.ct, verifyAsNode); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged authorship: %v", err)
	}
	// B's genuine message 0 still opens for C.
	sigByB, _ := b.dev.Sign(innerMsg)
	genuine := seal(t, b, append(slices.Clone(innerMsg), sigByB...))
	if _, sender, err := c.cipher.OpenBlockFunc(genuine.epoch, genuine.nonce, genuine.ct, verifyAsNode); err != nil || sender != b.dev.ID() {
		t.Fatalf("genuine message after forgery: %v", err)
	}
	// Splicing: A's genuine envelope's header cannot be moved onto another
	// body or re-labelled without the AEAD failing.
	ea := seal(t, a, []byte("a's block"))
	spliced := ea.clone()
	copy(spliced.ct[:headerSealSize], forged.ct[:headerSealSize])
	if _, _, err := c.cipher.OpenBlock(spliced.epoch, spliced.nonce, spliced.ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("spliced header: %v", err)
	}
}

func TestRemovedMemberAndPCS(t *testing.T) {
	ms := newMembers(t, 3)
	a, b, removed := ms[0], ms[1], ms[2]
	e0 := rotate(t, 100, a, ms)
	stolen, err := removed.cipher.MarshalBinary() // thief's copy at epoch 0
	if err != nil {
		t.Fatal(err)
	}
	stolenPrekeys := removed.prekeys

	// Removal: A rotates to {A, B}.
	var recips []SignedPrekey
	for _, m := range []*member{a, b} {
		recips = append(recips, m.signed)
	}
	parts, ep, err := NewRotation(detRand(200), a.dev, RotationParams{Conversation: testConv, Prev: []EpochID{e0}, Recipients: recips, Created: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	e1 := ep.ID
	a.cipher.Install(ep)
	rot, _ := VerifyRotation(parts[0])
	if _, err := OpenEpoch(rot, removed.dev.ID(), stolenPrekeys); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("removed member opening the new epoch: %v", err)
	}
	eb, err := OpenEpoch(rot, b.dev.ID(), b.prekeys)
	if err != nil {
		t.Fatal(err)
	}
	b.cipher.Install(eb)
	a.cipher.SetSendingEpoch(e1)

	// PCS: the thief's state cannot open epoch 1 traffic.
	thief, err := UnmarshalCipher(stolen, detRand(5))
	if err != nil {
		t.Fatal(err)
	}
	env := seal(t, a, []byte("after removal"))
	if _, _, err := thief.OpenBlock(env.epoch, env.nonce, env.ct); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("stolen state on the new epoch: %v", err)
	}
	if _, _, err := b.cipher.OpenBlock(env.epoch, env.nonce, env.ct); err != nil {
		t.Fatal(err)
	}

	// The removed member keeps writing under epoch 0 after seeing its
	// removal: it still seals fine, and B can even decrypt it, but the
	// policy rejects it because the rotation is in the block's causal past.
	late := seal(t, removed, []byte("still here"))
	if _, _, err := b.cipher.OpenBlock(late.epoch, late.nonce, late.ct); err != nil {
		t.Fatal(err)
	}
	past := []RotationRef{{Epoch: e0}, {Epoch: e1, Prev: []EpochID{e0}}}
	if err := CheckBlockEpoch(EpochID(late.epoch), past); !errors.Is(err, ErrEpochSuperseded) {
		t.Fatalf("block under removed epoch: %v", err)
	}
	if err := CheckBlockEpoch(EpochID(env.epoch), past); err != nil {
		t.Fatalf("block under the new epoch: %v", err)
	}

	// A device that kept only its prekey ring from before a prekey rotation
	// (a thief of an old backup) cannot open epochs sealed to the new prekey.
	now := t0.Add(PrekeyRotationPeriod)
	newPK, _ := b.prekeys.Rotate(detRand(300), now)
	ann, _ := b.dev.SignPrekey(newPK)
	spNew, _ := VerifyPrekey(ann)
	oldRing := NewPrekeyRing(b.prekeys.keys[0])
	a2 := a.signed
	parts2, _, err := NewRotation(detRand(301), a.dev, RotationParams{Conversation: testConv, Prev: []EpochID{e1}, Recipients: []SignedPrekey{a2, spNew}, Created: now})
	if err != nil {
		t.Fatal(err)
	}
	rot2, _ := VerifyRotation(parts2[0])
	if _, err := OpenEpoch(rot2, b.dev.ID(), oldRing); !errors.Is(err, ErrNoPrekey) {
		t.Fatalf("old prekey ring on new epoch: %v", err)
	}
	if _, err := OpenEpoch(rot2, b.dev.ID(), b.prekeys); err != nil {
		t.Fatal(err)
	}
}

// TestForwardSecrecyOfSerializedState: after a message is opened, the
// persisted state neither reopens it nor contains its key or earlier chain
// keys.
func TestForwardSecrecyOfSerializedState(t *testing.T) {
	ms := newMembers(t, 2)
	id := rotate(t, 100, ms[0], ms)
	ck0 := ms[1].cipher.epochs[id].chains[ms[0].dev.ID()].ck
	c := ck0
	mk0 := chainStep(&c)
	mk1 := chainStep(&c)
	e0 := seal(t, ms[0], []byte("zero"))
	e1 := seal(t, ms[0], []byte("one"))
	e2 := seal(t, ms[0], []byte("two"))
	if _, _, err := ms[1].cipher.OpenBlock(e2.epoch, e2.nonce, e2.ct); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ms[1].cipher.OpenBlock(e0.epoch, e0.nonce, e0.ct); err != nil {
		t.Fatal(err)
	}
	state, err := ms[1].cipher.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string][]byte{"mk0": mk0[:], "ck0": ck0[:]} {
		if bytes.Contains(state, secret) {
			t.Fatalf("serialized state still holds %s", name)
		}
	}
	if !bytes.Contains(state, mk1[:]) {
		t.Fatal("skipped key mk1 missing from state")
	}
	restored, err := UnmarshalCipher(state, detRand(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []envelope{e0, e2} {
		if _, _, err := restored.OpenBlock(e.epoch, e.nonce, e.ct); !errors.Is(err, ErrReplay) {
			t.Fatalf("restored state reopened a used message: %v", err)
		}
	}
	if got, _, err := restored.OpenBlock(e1.epoch, e1.nonce, e1.ct); err != nil || string(got) != "one" {
		t.Fatalf("skipped message after restore: %v", err)
	}
	again, _ := restored.MarshalBinary()
	if bytes.Contains(again, mk1[:]) {
		t.Fatal("used skipped key still serialized")
	}
}

func TestForwardedEpochBox(t *testing.T) {
	ms := newMembers(t, 3)
	a, b, c := ms[0], ms[1], ms[2]
	parts, _, err := NewRotation(detRand(1), a.dev, RotationParams{Conversation: testConv, Recipients: []SignedPrekey{a.signed, b.signed, c.signed}, Created: t0})
	if err != nil {
		t.Fatal(err)
	}
	var body rotationBody
	if _, _, err := openSigned(parts[0], maxRotationPart, &body); err != nil {
		t.Fatal(err)
	}
	idx := func(d DeviceID) int {
		for i, bx := range body.Boxes {
			if bytes.Equal(bx.Device, d[:]) {
				return i
			}
		}
		t.Fatal("no box")
		return -1
	}
	resign := func(mut func(b *rotationBody)) Rotation {
		var cp rotationBody
		openSigned(parts[0], maxRotationPart, &cp)
		mut(&cp)
		raw, err := sealSigned(a.dev.priv, labelRotation, cp)
		if err != nil {
			t.Fatal(err)
		}
		r, err := VerifyRotation(raw)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// B's box placed in C's slot (C's prekey id kept): C cannot open it.
	r := resign(func(x *rotationBody) { x.Boxes[idx(c.dev.ID())].Box = body.Boxes[idx(b.dev.ID())].Box })
	if _, err := OpenEpoch(r, c.dev.ID(), c.prekeys); !errors.Is(err, ErrEpochBox) {
		t.Fatalf("box forwarded to another device: %v", err)
	}
	// Same rotation relabelled to another conversation.
	r = resign(func(x *rotationBody) { x.Conversation = []byte("conversation-0002") })
	if _, err := OpenEpoch(r, b.dev.ID(), b.prekeys); !errors.Is(err, ErrEpochBox) {
		t.Fatalf("box forwarded to another conversation: %v", err)
	}
	// Epoch id that does not derive from the secret: the box is bound to
	// the id, so it fails there.
	r = resign(func(x *rotationBody) { x.Epoch = bytes.Repeat([]byte{1}, 16) })
	if _, err := OpenEpoch(r, b.dev.ID(), b.prekeys); !errors.Is(err, ErrEpochBox) {
		t.Fatalf("relabelled epoch id: %v", err)
	}
	// A rotator that seals a secret under a mismatching id (equivocation).
	bad := Rotation{Conversation: testConv, Epoch: EpochID{1}, Rotator: a.dev.ID(), Recipients: r.Recipients}
	secret := bytes.Repeat([]byte{5}, 32)
	box, _ := hpkeSeal(b.signed.Public, boxInfo(testConv, bad.Epoch, b.dev.ID(), b.signed.ID, a.dev.ID()), nil, secret)
	bid := b.dev.ID()
	bad.boxes = []boxWire{{Device: bid[:], Prekey: b.signed.ID[:], Box: box}}
	if _, err := OpenEpoch(bad, b.dev.ID(), b.prekeys); !errors.Is(err, ErrEpochMismatch) {
		t.Fatalf("equivocating rotator: %v", err)
	}
	// Forged rotation signature.
	other, _ := NewDeviceKey(detRand(77))
	forged, _ := sealSigned(other.priv, labelRotation, body)
	if _, err := VerifyRotation(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged rotation: %v", err)
	}
}

func TestRotationParts(t *testing.T) {
	const n = 80
	ms := make([]*member, n)
	var recips []SignedPrekey
	for i := range ms {
		ms[i] = newMember(t, uint64(i+1))
		recips = append(recips, ms[i].signed)
	}
	parts, ep, err := NewRotation(detRand(1), ms[0].dev, RotationParams{Conversation: testConv, Recipients: recips, Created: t0})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	for _, p := range parts {
		if len(p) > 64<<10 {
			t.Fatalf("part of %d bytes exceeds a block", len(p))
		}
	}
	for _, m := range ms[1:] {
		e := openFromParts(t, parts, m)
		if e.ID != ep.ID || len(e.Members) != n {
			t.Fatal("members disagree on the epoch")
		}
	}
	if _, _, err := NewRotation(detRand(1), ms[0].dev, RotationParams{Conversation: testConv, Recipients: recips[1:], Created: t0}); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("rotator outside recipients: %v", err)
	}
	if _, _, err := NewRotation(detRand(1), ms[0].dev, RotationParams{Conversation: testConv, Recipients: append(recips, recips[3]), Created: t0}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("duplicate recipient: %v", err)
	}
	if _, _, err := NewRotation(detRand(1), ms[0].dev, RotationParams{Conversation: testConv, Recipients: recips, Created: t0.Add(30 * 24 * time.Hour)}); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired prekey: %v", err)
	}
}

func TestSelectSendingEpoch(t *testing.T) {
	a, b, c := EpochID{1}, EpochID{2}, EpochID{3}
	cases := []struct {
		name  string
		cands []EpochCandidate
		want  EpochID
		err   error
	}{
		{"highest lamport", []EpochCandidate{{a, 5, false}, {b, 7, false}, {c, 6, false}}, b, nil},
		{"tie broken by id", []EpochCandidate{{c, 7, false}, {a, 7, false}, {b, 7, false}}, c, nil},
		{"tainted skipped", []EpochCandidate{{a, 5, false}, {b, 9, true}}, a, nil},
		{"all tainted", []EpochCandidate{{a, 5, true}}, EpochID{}, ErrNoUsableEpoch},
		{"empty", nil, EpochID{}, ErrNoUsableEpoch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelectSendingEpoch(tc.cands)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %v %v", got, err)
			}
		})
	}
	// Order independence.
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 8).Draw(t, "n")
		cands := make([]EpochCandidate, n)
		for i := range cands {
			cands[i] = EpochCandidate{ID: EpochID{byte(i)}, Lamport: rapid.Uint64Range(0, 4).Draw(t, "l"), Tainted: rapid.Bool().Draw(t, "t")}
		}
		want, werr := SelectSendingEpoch(cands)
		perm := rapid.Permutation(cands).Draw(t, "perm")
		got, gerr := SelectSendingEpoch(perm)
		if got != want || !errors.Is(gerr, werr) {
			t.Fatalf("order-dependent choice")
		}
	})
}

func TestCheckBlockEpoch(t *testing.T) {
	e0, e1, e2, e3 := EpochID{0}, EpochID{1}, EpochID{2}, EpochID{3}
	past := []RotationRef{{Epoch: e0}, {Epoch: e1, Prev: []EpochID{e0}}, {Epoch: e2, Prev: []EpochID{e0}}, {Epoch: e3, Tainted: true}}
	for _, tc := range []struct {
		epoch EpochID
		past  []RotationRef
		want  error
	}{
		{e0, past[:1], nil},
		{e0, past, ErrEpochSuperseded},
		{e1, past, nil}, // concurrent rotations both stay usable
		{e2, past, nil},
		{e3, past, ErrEpochTainted},
		{EpochID{9}, past, ErrEpochNotInPast},
	} {
		if err := CheckBlockEpoch(tc.epoch, tc.past); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("epoch %v: %v, want %v", tc.epoch[0], err, tc.want)
		}
	}
}

func TestInstallBoundsAndExport(t *testing.T) {
	ms := newMembers(t, 2)
	var first EpochID
	for i := range MaxEpochs + 3 {
		id := rotate(t, uint64(1000+i), ms[0], ms)
		if i == 0 {
			first = id
		}
	}
	if len(ms[1].cipher.order) != MaxEpochs || ms[1].cipher.HasEpoch(first) {
		t.Fatalf("cipher holds %d epochs", len(ms[1].cipher.order))
	}
	id := ms[1].cipher.order[len(ms[1].cipher.order)-1]
	x0, err := ms[0].cipher.Export(id, "topic", 32)
	if err != nil {
		t.Fatal(err)
	}
	x1, _ := ms[1].cipher.Export(id, "topic", 32)
	y, _ := ms[1].cipher.Export(id, "rendezvous", 32)
	if !bytes.Equal(x0, x1) || bytes.Equal(x0, y) {
		t.Fatal("exports must agree across members and differ across labels")
	}
}

// TestCipherProperty: any delivery order of any senders' messages, with
// duplicates and state persistence in between, opens every message exactly
// once and reports replays.
func TestCipherProperty(t *testing.T) {
	ms := newMembers(t, 3)
	rotate(t, 100, ms[0], ms)
	base := make([][]byte, 3)
	for i, m := range ms {
		base[i], _ = m.cipher.MarshalBinary()
	}
	rapid.Check(t, func(t *rapid.T) {
		cs := make([]*Cipher, 3)
		for i := range cs {
			cs[i], _ = UnmarshalCipher(base[i], detRand(uint64(i)))
		}
		n := rapid.IntRange(1, 40).Draw(t, "n")
		type sent struct {
			env  envelope
			from int
			body string
		}
		var all []sent
		for i := range n {
			from := rapid.IntRange(0, 1).Draw(t, "from")
			body := fmt.Sprint(i)
			e, nn, c, err := cs[from].SealBlock([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, sent{envelope{e, nn, c}, from, body})
		}
		order := rapid.Permutation(all).Draw(t, "order")
		dups := rapid.SliceOfN(rapid.IntRange(0, len(all)-1), 0, 5).Draw(t, "dups")
		for _, d := range dups {
			order = append(order, order[d])
		}
		opened := map[string]bool{}
		rcv := cs[2]
		for _, s := range order {
			if rapid.Bool().Draw(t, "persist") {
				b, err := rcv.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if rcv, err = UnmarshalCipher(b, detRand(9)); err != nil {
					t.Fatal(err)
				}
			}
			got, sender, err := rcv.OpenBlock(s.env.epoch, s.env.nonce, s.env.ct)
			if opened[s.body] {
				if !errors.Is(err, ErrReplay) {
					t.Fatalf("duplicate %s: %v", s.body, err)
				}
				continue
			}
			if err != nil || string(got) != s.body || sender != ms[s.from].dev.ID() {
				t.Fatalf("message %s: %v", s.body, err)
			}
			opened[s.body] = true
		}
		if len(opened) != n || rcv.nskip != 0 {
			t.Fatalf("opened %d of %d, %d skipped left", len(opened), n, rcv.nskip)
		}
	})
}

// TestChainStepIsHMAC pins the hand-written HMAC of the chain step to
// crypto/hmac for keys of every byte pattern the fuzz of a chain produces.
func TestChainStepIsHMAC(t *testing.T) {
	ck := [KeySize]byte{}
	for i := range 200 {
		want := func(b byte) []byte {
			m := hmac.New(sha256.New, ck[:])
			m.Write([]byte{b})
			return m.Sum(nil)
		}
		wantMK, wantCK := want(1), want(2)
		mk := chainStep(&ck)
		if !bytes.Equal(mk[:], wantMK) || !bytes.Equal(ck[:], wantCK) {
			t.Fatalf("step %d: chain step differs from HMAC-SHA256", i)
		}
	}
}

func TestSentCountsOwnBlocksInSendingEpoch(t *testing.T) {
	ms := newMembers(t, 2)
	if _, _, ok := ms[0].cipher.Sent(); ok {
		t.Fatal("Sent reports an epoch before any is selected")
	}
	id := rotate(t, 100, ms[0], ms)
	for i := range 3 {
		got, n, ok := ms[0].cipher.Sent()
		if !ok || got != id || n != uint32(i) {
			t.Fatalf("after %d seals: Sent = %s, %d, %v", i, got, n, ok)
		}
		seal(t, ms[0], []byte("hello"))
	}
}

// SealBlockTo reuses a dirty buffer: the envelopes open to what was sealed
// (no byte of an earlier, longer block leaks into the padding), and the
// ciphertext lives in the caller's buffer.
func TestSealBlockToReusesBuffer(t *testing.T) {
	ms := newMembers(t, 2)
	rotate(t, 100, ms[0], ms)
	buf := bytes.Repeat([]byte{0xee}, 8<<10)
	for _, msg := range [][]byte{bytes.Repeat([]byte("long "), 1000), []byte("short"), {}} {
		e, n, ct, err := ms[0].cipher.SealBlockTo(buf, msg)
		if err != nil {
			t.Fatal(err)
		}
		if &ct[0] != &buf[0] {
			t.Fatal("the ciphertext is not in the caller's buffer")
		}
		got, _, err := ms[1].cipher.OpenBlock(e, n, slices.Clone(ct))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("opened %d bytes, sealed %d", len(got), len(msg))
		}
	}
	_, _, ct, err := ms[0].cipher.SealBlockTo(make([]byte, 0, 10), []byte("x"))
	if err != nil || len(ct) < MinPaddedSize {
		t.Fatalf("a too small buffer: %d bytes, %v", len(ct), err)
	}
}

// An epoch the cipher dropped (evicted past MaxEpochs, or deleted) is not
// installed again from its rotation, before or after persistence: its
// chains would restart at their first key, and a block whose message key
// was used and deleted would open again (forward secrecy lost).
func TestDroppedEpochNotReinstalled(t *testing.T) {
	ms := newMembers(t, 2)
	parts, ep, err := NewRotation(detRand(7), ms[0].dev, RotationParams{Conversation: testConv, Recipients: []SignedPrekey{ms[0].signed, ms[1].signed}, Created: t0})
	if err != nil {
		t.Fatal(err)
	}
	first := ep.ID
	if err := ms[0].cipher.Install(ep); err != nil {
		t.Fatal(err)
	}
	if err := ms[1].cipher.Install(openFromParts(t, parts, ms[1])); err != nil {
		t.Fatal(err)
	}
	if err := ms[0].cipher.SetSendingEpoch(first); err != nil {
		t.Fatal(err)
	}
	env := seal(t, ms[0], []byte("read once"))
	if _, _, err := ms[1].cipher.OpenBlock(env.epoch, env.nonce, env.ct); err != nil {
		t.Fatal(err)
	}
	for i := range MaxEpochs {
		rotate(t, uint64(300+i), ms[0], ms)
	}
	c := ms[1].cipher
	if c.HasEpoch(first) || !c.WasDropped(first) {
		t.Fatalf("after %d more epochs: held %v, recorded as dropped %v", MaxEpochs, c.HasEpoch(first), c.WasDropped(first))
	}
	reinstall := func(c *Cipher) {
		t.Helper()
		if err := c.Install(openFromParts(t, parts, ms[1])); !errors.Is(err, ErrEpochDropped) {
			t.Fatalf("reinstalling a dropped epoch: %v, want ErrEpochDropped", err)
		}
		if _, _, err := c.OpenBlock(env.epoch, env.nonce, env.ct); !errors.Is(err, ErrUnknownEpoch) {
			t.Fatalf("a block whose key was used opens again after a reinstall: %v", err)
		}
	}
	reinstall(c)
	state, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	restored, err := UnmarshalCipher(state, detRand(1))
	if err != nil {
		t.Fatal(err)
	}
	reinstall(restored)

	// The record is bounded: the oldest drops are forgotten first.
	for i := range MaxDroppedEpochs {
		rotate(t, uint64(400+i), ms[0], ms)
	}
	if len(c.dropped) != MaxDroppedEpochs || c.WasDropped(first) || len(c.order) != MaxEpochs {
		t.Fatalf("record of %d dropped (first still there: %v), %d held", len(c.dropped), c.WasDropped(first), len(c.order))
	}
	// DropEpoch records too.
	last := c.order[len(c.order)-1]
	c.DropEpoch(last)
	if !c.WasDropped(last) || c.dropped[len(c.dropped)-1] != last {
		t.Fatal("DropEpoch left no record")
	}
}

// A key state written by version 1 (no record of dropped epochs) still
// reads, as a state that has dropped nothing, and is written back as
// version 2; a version 2 state with a malformed record is refused.
func TestCipherStateVersion1(t *testing.T) {
	ms := newMembers(t, 2)
	for i := range MaxEpochs + 2 {
		rotate(t, uint64(500+i), ms[0], ms)
	}
	state, err := ms[1].cipher.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var w cipherWire
	if err := unmarshalStrict(state, &w); err != nil || w.V != 2 || len(w.Dropped) != 2 {
		t.Fatalf("state version %d with %d dropped: %v", w.V, len(w.Dropped), err)
	}
	v1, err := marshal(cipherWireV1{V: 1, Conv: w.Conv, Self: w.Self, Sending: w.Sending, SkipSeq: w.SkipSeq, Epochs: w.Epochs})
	if err != nil {
		t.Fatal(err)
	}
	c, err := UnmarshalCipher(v1, detRand(1))
	if err != nil {
		t.Fatalf("version 1 state: %v", err)
	}
	if len(c.dropped) != 0 || len(c.order) != MaxEpochs {
		t.Fatalf("version 1 state read with %d dropped, %d epochs", len(c.dropped), len(c.order))
	}
	for name, mutate := range map[string]func(w *cipherWire){
		"a held epoch":     func(w *cipherWire) { w.Dropped = append(w.Dropped, w.Epochs[0].ID) },
		"twice":            func(w *cipherWire) { w.Dropped = append(w.Dropped, w.Dropped[0]) },
		"short id":         func(w *cipherWire) { w.Dropped[0] = w.Dropped[0][:8] },
		"null":             func(w *cipherWire) { w.Dropped = nil },
		"too many":         func(w *cipherWire) { w.Dropped = make([][]byte, MaxDroppedEpochs+1) },
		"version 1 with 7": func(w *cipherWire) { w.V = 1 },
	} {
		var m cipherWire
		if err := unmarshalStrict(state, &m); err != nil {
			t.Fatal(err)
		}
		mutate(&m)
		b, err := marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := UnmarshalCipher(b, detRand(1)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
