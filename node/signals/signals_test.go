package signals

import (
	"bytes"
	"testing"
)

// FuzzSignalWire feeds arbitrary bytes to what a signal stream's reader
// does with them: decode the frame, open the box, decode the body. None
// of it may panic, and only a box sealed under the key opens.
func FuzzSignalWire(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	body, _ := enc.Marshal(typingBody{Account: bytes.Repeat([]byte{1}, 32), Time: 1})
	nonce, box, _ := seal(key, body)
	good, _ := enc.Marshal(wire{Kind: "typing", Sync: []byte{1, 2}, Nonce: nonce, Box: box})
	presence, _ := enc.Marshal(wire{Kind: "presence"})
	f.Add(good)
	f.Add(presence)
	f.Add([]byte{0xa1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var w wire
		if err := dec.Unmarshal(data, &w); err != nil {
			return
		}
		plain, err := unseal(key, w.Nonce, w.Box)
		if err != nil {
			return
		}
		// Only what was sealed under the key opens. (The seed is sealed
		// anew in each fuzz worker, with its own nonce: compare contents.)
		if !bytes.Equal(plain, body) {
			t.Fatalf("a box not sealed under the key opened: %x", plain)
		}
		var b typingBody
		_ = dec.Unmarshal(plain, &b)
	})
}

func TestSignalSealRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	nonce, box, err := seal(key, []byte("typing"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := unseal(key, nonce, box); err != nil || string(got) != "typing" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	other := bytes.Repeat([]byte{8}, 32)
	if _, err := unseal(other, nonce, box); err == nil {
		t.Fatal("opened under another conversation's key")
	}
	box[0] ^= 1
	if _, err := unseal(key, nonce, box); err == nil {
		t.Fatal("opened a tampered box")
	}
	if _, err := unseal(key, nonce[:5], box); err == nil {
		t.Fatal("accepted a short nonce")
	}
}
