package keyring

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

func BenchmarkEd25519Verify(b *testing.B) {
	dev, _ := NewDeviceKey(detRand(1))
	msg := make([]byte, 300)
	sig, _ := dev.Sign(msg)
	for b.Loop() {
		if err := VerifyBlockSignature(dev.Public(), msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRawAEAD(b *testing.B, size int) {
	a, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, NonceSize)
	pt := make([]byte, size)
	ct := a.Seal(nil, nonce, pt, nil)
	b.SetBytes(int64(size))
	for b.Loop() {
		if _, err := a.Open(pt[:0], nonce, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawXChaCha20Poly1305Open64KiB(b *testing.B) { benchRawAEAD(b, 64<<10) }
func BenchmarkRawXChaCha20Poly1305Open300B(b *testing.B)  { benchRawAEAD(b, 300) }

// benchRawSeal is the floor for sealing: the primitive alone, into a
// reused buffer (the fair floor for SealBlock, which must return a new one,
// is BenchmarkRawXChaCha20Poly1305SealAlloc).
func benchRawSeal(b *testing.B, size int, alloc bool) {
	a, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, NonceSize)
	pt := make([]byte, size)
	out := make([]byte, 0, size+TagSize)
	b.SetBytes(int64(size))
	for b.Loop() {
		if alloc {
			out = make([]byte, 0, size+TagSize)
		}
		out = a.Seal(out[:0], nonce, pt, nil)
	}
}

func BenchmarkRawXChaCha20Poly1305Seal64KiB(b *testing.B)      { benchRawSeal(b, 64<<10, false) }
func BenchmarkRawXChaCha20Poly1305SealAlloc64KiB(b *testing.B) { benchRawSeal(b, 64<<10, true) }

// benchOpen measures OpenBlock on a stream of envelopes from one sender in
// order: one chain step, two AEADs and the unpadding per envelope.
func benchOpen(b *testing.B, size int) {
	ms := newMembers(b, 2)
	rotate(b, 100, ms[0], ms)
	const batch = 4096
	envs := make([]envelope, batch)
	inner := make([]byte, size)
	state, _ := ms[1].cipher.MarshalBinary()
	rcv, _ := UnmarshalCipher(state, detRand(1))
	i := batch
	b.SetBytes(int64(size))
	for b.Loop() {
		if i == batch {
			b.StopTimer()
			for j := range envs {
				envs[j] = seal(b, ms[0], inner)
			}
			i = 0
			b.StartTimer()
		}
		if _, _, err := rcv.OpenBlock(envs[i].epoch, envs[i].nonce, envs[i].ct); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkOpenBlock300B(b *testing.B)  { benchOpen(b, 300) }
func BenchmarkOpenBlock64KiB(b *testing.B) { benchOpen(b, 64<<10-1) }

// benchSeal measures SealBlock (a new buffer per block) or, with reuse,
// SealBlockTo into one buffer, which is what the node does (dag.Build copies
// the ciphertext into the envelope bytes).
func benchSeal(b *testing.B, size int, reuse bool) {
	ms := newMembers(b, 2)
	rotate(b, 100, ms[0], ms)
	inner := make([]byte, size)
	var buf []byte
	b.SetBytes(int64(size))
	for b.Loop() {
		var err error
		if reuse {
			_, _, buf, err = ms[0].cipher.SealBlockTo(buf, inner)
		} else {
			_, _, _, err = ms[0].cipher.SealBlock(inner)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealBlock300B(b *testing.B)    { benchSeal(b, 300, false) }
func BenchmarkSealBlock64KiB(b *testing.B)   { benchSeal(b, 64<<10-1, false) }
func BenchmarkSealBlockTo300B(b *testing.B)  { benchSeal(b, 300, true) }
func BenchmarkSealBlockTo64KiB(b *testing.B) { benchSeal(b, 64<<10-1, true) }

func BenchmarkRotation100(b *testing.B) {
	n := 100
	if testing.Short() {
		n = 10
	}
	var recips []SignedPrekey
	var rot *member
	for i := range n {
		m := newMember(b, uint64(i+1))
		if i == 0 {
			rot = m
		}
		recips = append(recips, m.signed)
	}
	r := detRand(5)
	for b.Loop() {
		if _, _, err := NewRotation(r, rot.dev, RotationParams{Conversation: testConv, Recipients: recips, Created: t0}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenEpoch(b *testing.B) {
	ms := newMembers(b, 2)
	parts, _, _ := NewRotation(detRand(1), ms[0].dev, RotationParams{Conversation: testConv, Recipients: []SignedPrekey{ms[0].signed, ms[1].signed}, Created: t0})
	r, _ := VerifyRotation(parts[0])
	for b.Loop() {
		if _, err := OpenEpoch(r, ms[1].dev.ID(), ms[1].prekeys); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyringUnlock opens a keyring file with the production argon2id
// parameters.
func BenchmarkKeyringUnlock(b *testing.B) {
	opts := []FileOption{WithRand(detRand(1))}
	if testing.Short() {
		opts = cheapOpts(1)
	}
	raw, err := SealFile(testKeyring(b), Passphrase("pw"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := OpenFile(raw, Passphrase("pw"), opts...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSafetyNumber(b *testing.B) {
	x, y := AccountID(ed25519.PublicKey(make([]byte, 32))), AccountID{1}
	for b.Loop() {
		SafetyNumber(x, y)
	}
}

func BenchmarkCipherMarshal(b *testing.B) {
	ms := newMembers(b, 2)
	rotate(b, 100, ms[0], ms)
	for b.Loop() {
		if _, err := ms[1].cipher.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRotationGroupSize measures one membership change of a group of
// n member devices (up to MaxEpochRecipients, the cap of a group today): the rotation's bytes (every part: the epoch key sealed
// to each device with X-Wing) and the time to make and sign it (issue 15:
// where does a change cost 1 s or 1 MB). -short: 10 devices only.
func BenchmarkRotationGroupSize(b *testing.B) {
	sizes := []int{10, 100, 300, MaxEpochRecipients}
	if testing.Short() {
		sizes = sizes[:1]
	}
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var recips []SignedPrekey
			var rot *member
			for i := range n {
				m := newMember(b, uint64(i+1))
				if i == 0 {
					rot = m
				}
				recips = append(recips, m.signed)
			}
			r := detRand(5)
			var bytes int
			for b.Loop() {
				parts, _, err := NewRotation(r, rot.dev, RotationParams{Conversation: testConv, Recipients: recips, Created: t0})
				if err != nil {
					b.Fatal(err)
				}
				bytes = 0
				for _, p := range parts {
					bytes += len(p)
				}
			}
			b.ReportMetric(float64(bytes), "rotation-bytes")
			b.ReportMetric(float64(bytes)/float64(n), "bytes/device")
		})
	}
}
