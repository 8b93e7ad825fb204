package devices

import (
	"bytes"
	"testing"

	"github.com/glitr-chat/glitr/node/card"
)

// FuzzDecoders feeds the decoders of what other devices send — a link
// reply and the bundle inside it, a rejoin request — and of a backup's
// state: none may panic, and whatever decodes re-encodes to bytes that
// decode the same.
func FuzzDecoders(f *testing.F) {
	seed, _ := enc.Marshal(linkReply{Bundle: []byte{1, 2}})
	f.Add(seed)
	seed, _ = enc.Marshal(Bundle{AccountSeed: bytes.Repeat([]byte{1}, 32), Devices: []Record{{Device: []byte{1}}}, Contacts: []card.Card{{Cert: []byte{2}}}})
	f.Add(seed)
	seed, _ = enc.Marshal(rejoinRequest{Conversation: bytes.Repeat([]byte{1}, 16)})
	f.Add(seed)
	seed, _ = enc.Marshal(State{Name: "Ada", Prefs: map[string]string{"a": "b"}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var reply linkReply
		if Dec.Unmarshal(b, &reply) == nil {
			again, err := enc.Marshal(reply)
			var back linkReply
			if err != nil || Dec.Unmarshal(again, &back) != nil || !bytes.Equal(back.Bundle, reply.Bundle) || back.Err != reply.Err {
				t.Fatalf("a link reply does not round-trip: %v", err)
			}
		}
		var bundle Bundle
		if Dec.Unmarshal(b, &bundle) == nil {
			if _, err := enc.Marshal(bundle); err != nil {
				t.Fatal(err)
			}
		}
		var st State
		if Dec.Unmarshal(b, &st) == nil {
			_, _ = st.AccountOps()
		}
		var req rejoinRequest
		_ = card.Dec.Unmarshal(b, &req)
	})
}
