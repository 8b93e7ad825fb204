package keyring

import (
	"errors"
	"testing"
)

// PeekGap tells how far ahead of the receiver's chain a message is, without
// consuming anything: the message still opens afterwards, in order.
func TestPeekGap(t *testing.T) {
	ms := newMembers(t, 2)
	rotate(t, 100, ms[0], ms)
	var envs []envelope
	for range 5 {
		envs = append(envs, seal(t, ms[0], []byte("m")))
	}
	r := ms[1].cipher
	for i, want := range []uint32{0, 1, 4} {
		idx := []int{0, 1, 4}[i]
		e := envs[idx]
		sender, gap, err := r.PeekGap(e.epoch, e.nonce, e.ct)
		if err != nil || sender != ms[0].dev.ID() || gap != want {
			t.Fatalf("peek of message %d: sender ok=%v gap=%d err=%v, want gap %d", idx, sender == ms[0].dev.ID(), gap, err, want)
		}
	}
	for i, e := range envs { // peeking consumed nothing
		if _, _, err := r.OpenBlock(e.epoch, e.nonce, e.ct); err != nil {
			t.Fatalf("open %d after peeks: %v", i, err)
		}
	}
	if _, gap, err := r.PeekGap(envs[0].epoch, envs[0].nonce, envs[0].ct); err != nil || gap != 0 {
		t.Fatalf("peek of a replay: gap %d, %v", gap, err)
	}
	bad := append([]byte(nil), envs[0].ct...)
	bad[3] ^= 1
	if _, _, err := r.PeekGap(envs[0].epoch, envs[0].nonce, bad); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("peek of a tampered header: %v", err)
	}
	if _, _, err := r.PeekGap(make([]byte, EpochIDSize), envs[0].nonce, envs[0].ct); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("peek under an unknown epoch: %v", err)
	}
}
