package people

import (
	"bytes"
	"testing"

	"github.com/glitr-chat/glitr/node/card"
)

// FuzzRequests feeds the decoders of what a stranger sends an inviter — a
// token request and, once its box opens, the contact request inside — and
// of the inviter's reply: none may panic, and a request that decodes
// round-trips.
func FuzzRequests(f *testing.F) {
	seed, _ := enc.Marshal(Request{TokenID: bytes.Repeat([]byte{1}, 16), Box: []byte{2}})
	f.Add(seed)
	seed, _ = enc.Marshal(contactRequestBody{Card: card.Card{Cert: []byte{1}}, Name: "Bo", Secret: make([]byte, 32)})
	f.Add(seed)
	seed, _ = enc.Marshal(contactReply{Conversation: make([]byte, 16), Name: "Ada"})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req Request
		if card.Dec.Unmarshal(b, &req) == nil {
			again, err := enc.Marshal(req)
			var back Request
			if err != nil || card.Dec.Unmarshal(again, &back) != nil || !bytes.Equal(back.TokenID, req.TokenID) || !bytes.Equal(back.Box, req.Box) {
				t.Fatalf("a request does not round-trip: %v", err)
			}
		}
		var body contactRequestBody
		_ = card.Dec.Unmarshal(b, &body)
		var reply contactReply
		_ = card.Dec.Unmarshal(b, &reply)
	})
}
