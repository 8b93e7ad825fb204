package mailbox

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/glitr-chat/glitr/protocol"
)

func TestItemSealOpen(t *testing.T) {
	owner, _ := NewOwnerKey(rand.Reader)
	other, _ := NewOwnerKey(rand.Reader)
	dk := owner.DepositKey()
	for _, n := range []int{0, 1, 500, ItemPadding, 40 << 10, MaxItemPayload} {
		payload := make([]byte, n)
		rand.Read(payload)
		item, err := dk.SealItem(payload)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if len(item) > protocol.MaxMailboxEnvelope || (len(item)-24-16)%ItemPadding != 0 {
			t.Fatalf("%d: sealed %d bytes", n, len(item))
		}
		got, err := owner.OpenItem(item)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%d: open: %v", n, err)
		}
		if _, err := other.OpenItem(item); !errors.Is(err, ErrBadItem) {
			t.Fatalf("another owner opened it: %v", err)
		}
		item[len(item)-1] ^= 1
		if _, err := owner.OpenItem(item); !errors.Is(err, ErrBadItem) {
			t.Fatalf("tampered item opened: %v", err)
		}
	}
	// Sizes within one padding bucket look alike.
	a, _ := dk.SealItem(make([]byte, 10))
	b, _ := dk.SealItem(make([]byte, 400))
	if len(a) != len(b) {
		t.Fatalf("sizes %d and %d differ within a bucket", len(a), len(b))
	}
	if _, err := dk.SealItem(make([]byte, MaxItemPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}
}

func FuzzOpenItem(f *testing.F) {
	owner, _ := NewOwnerKey(rand.Reader)
	item, _ := owner.DepositKey().SealItem([]byte("hello"))
	f.Add(item)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := owner.OpenItem(b); err == nil && len(p) > len(b) {
			t.Fatalf("payload longer than the item")
		}
	})
}
