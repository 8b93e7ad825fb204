package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

func b32(v byte) []byte { return bytes.Repeat([]byte{v}, 32) }

func testMailboxFrames() []MailboxFrame {
	sig := bytes.Repeat([]byte{9}, 64)
	return []MailboxFrame{
		{Kind: MailboxKindDeposit, Deposit: &MailboxDeposit{ID: b32(1), Period: 20000, DepositKey: b32(2), DrainKey: b32(3),
			Time: 1, Sig: sig, Envelopes: [][]byte{[]byte("env1"), []byte("env2")}}},
		{Kind: MailboxKindDrain, Drain: &MailboxDrain{Mailboxes: []MailboxDrainReq{{ID: b32(1), After: 4, Time: 2, Sig: sig}}, Limit: 10}},
		{Kind: MailboxKindAck, Ack: &MailboxAck{ID: b32(1), Time: 3, Digests: [][]byte{b32(5), b32(6)}, Sig: sig}},
		{Kind: MailboxKindResult, Result: &MailboxResult{Code: MailboxOK, Stored: 2, Duplicate: 1}},
		{Kind: MailboxKindItems, Items: &MailboxItems{ID: b32(1), Items: []MailboxItem{{Seq: 5, Envelope: []byte("env1")}}}},
		{Kind: MailboxKindEnd, End: &MailboxEnd{Sent: 1, More: true, Refused: []uint64{0}}},
	}
}

func TestMailboxFramesRoundTrip(t *testing.T) {
	frames := testMailboxFrames()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	w := NewMailboxWriter(bw)
	for _, f := range frames {
		if _, err := w.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	bw.Flush()
	r := NewMailboxReader(bytes.NewReader(buf.Bytes()))
	for i, want := range frames {
		got, _, err := r.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		a, _ := EncodeMailboxFrame(want)
		b, _ := EncodeMailboxFrame(got)
		if !bytes.Equal(a, b) {
			t.Fatalf("frame %d changed in transit", i)
		}
	}
	if _, _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v", err)
	}
}

// Every shape rule refuses with ErrBadMailboxFrame, both when encoding
// (we never send what a peer must refuse) and when decoding.
func TestMailboxFrameRules(t *testing.T) {
	sig := bytes.Repeat([]byte{9}, 64)
	dep := func(mod func(*MailboxDeposit)) MailboxFrame {
		d := &MailboxDeposit{ID: b32(1), DepositKey: b32(2), DrainKey: b32(3), Sig: sig, Envelopes: [][]byte{{1}}}
		mod(d)
		return MailboxFrame{Kind: MailboxKindDeposit, Deposit: d}
	}
	many := func(n, size int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = make([]byte, size)
			out[i][0] = 1
		}
		return out
	}
	for name, f := range map[string]MailboxFrame{
		"unknown kind":          {Kind: 99, Result: &MailboxResult{Code: "ok"}},
		"no body":               {Kind: MailboxKindDeposit},
		"two bodies":            {Kind: MailboxKindResult, Result: &MailboxResult{Code: "ok"}, End: &MailboxEnd{}},
		"wrong body":            {Kind: MailboxKindDeposit, Result: &MailboxResult{Code: "ok"}},
		"short id":              dep(func(d *MailboxDeposit) { d.ID = d.ID[:31] }),
		"short deposit key":     dep(func(d *MailboxDeposit) { d.DepositKey = nil }),
		"long drain key":        dep(func(d *MailboxDeposit) { d.DrainKey = append(d.DrainKey, 0) }),
		"short signature":       dep(func(d *MailboxDeposit) { d.Sig = d.Sig[:63] }),
		"no envelopes":          dep(func(d *MailboxDeposit) { d.Envelopes = nil }),
		"empty envelope":        dep(func(d *MailboxDeposit) { d.Envelopes = [][]byte{{}} }),
		"too many envelopes":    dep(func(d *MailboxDeposit) { d.Envelopes = many(MaxDepositEnvelopes+1, 1) }),
		"oversized envelope":    dep(func(d *MailboxDeposit) { d.Envelopes = many(1, MaxMailboxEnvelope+1) }),
		"frame over 1 MiB":      dep(func(d *MailboxDeposit) { d.Envelopes = many(16, MaxMailboxEnvelope) }),
		"drain of nothing":      {Kind: MailboxKindDrain, Drain: &MailboxDrain{}},
		"drain of too many":     {Kind: MailboxKindDrain, Drain: &MailboxDrain{Mailboxes: make([]MailboxDrainReq, MaxDrainMailboxes+1)}},
		"drain with bad id":     {Kind: MailboxKindDrain, Drain: &MailboxDrain{Mailboxes: []MailboxDrainReq{{ID: b32(1)[:3], Sig: sig}}}},
		"ack of nothing":        {Kind: MailboxKindAck, Ack: &MailboxAck{ID: b32(1), Sig: sig}},
		"ack with short digest": {Kind: MailboxKindAck, Ack: &MailboxAck{ID: b32(1), Sig: sig, Digests: [][]byte{{1}}}},
		"result without code":   {Kind: MailboxKindResult, Result: &MailboxResult{}},
		"empty items":           {Kind: MailboxKindItems, Items: &MailboxItems{ID: b32(1)}},
		"oversized item":        {Kind: MailboxKindItems, Items: &MailboxItems{ID: b32(1), Items: []MailboxItem{{Envelope: many(1, MaxMailboxEnvelope+1)[0]}}}},
	} {
		if _, err := EncodeMailboxFrame(f); !errors.Is(err, ErrBadMailboxFrame) {
			t.Errorf("%s: encode: %v", name, err)
		}
		raw, err := mailboxEnc.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeMailboxFrame(raw); !errors.Is(err, ErrBadMailboxFrame) {
			t.Errorf("%s: decode: %v", name, err)
		}
	}
}

// The reader refuses an oversized frame on its length prefix.
func TestMailboxReaderRefusesLongFrame(t *testing.T) {
	prefix := []byte{0x81, 0x80, 0x40} // uvarint 1 MiB + 1
	r := NewMailboxReader(io.MultiReader(bytes.NewReader(prefix), bytes.NewReader(make([]byte, 16))))
	if _, _, err := r.Read(); !errors.Is(err, ErrBadMailboxFrame) {
		t.Fatalf("oversized prefix: %v", err)
	}
}

// FuzzDecodeMailboxFrame: no input panics or allocates beyond its size,
// and whatever decodes re-encodes to a frame that decodes the same.
func FuzzDecodeMailboxFrame(f *testing.F) {
	for _, fr := range testMailboxFrames() {
		b, err := EncodeMailboxFrame(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa1, 0x01, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeMailboxFrame(b)
		alloccheck.Check(t, "DecodeMailboxFrame", b, 16, func() { _, _ = DecodeMailboxFrame(b) })
		if err != nil {
			return
		}
		again, err := EncodeMailboxFrame(fr)
		if err != nil {
			t.Fatalf("a decoded frame does not encode: %v", err)
		}
		fr2, err := DecodeMailboxFrame(again)
		if err != nil {
			t.Fatalf("a re-encoded frame does not decode: %v", err)
		}
		if third, _ := EncodeMailboxFrame(fr2); !bytes.Equal(third, again) {
			t.Fatal("encoding is not stable")
		}
	})
}
