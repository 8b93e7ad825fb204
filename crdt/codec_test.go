package crdt

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

func testCID(s string) cid.Cid {
	mh, _ := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.DagCBOR, mh)
}

func allOps() []Op {
	c := testCID("x")
	name, v, st := "bob", Verified, ContactAdded
	kind, arch := ConvGroup, true
	pos := Position{{Device: dev(1), Seq: 3}, {Device: dev(2), Seq: 1}}
	return []Op{
		Message{Text: "hi"}, Message{Text: "re", ReplyTo: &MsgID{c, 1}},
		Message{Attachment: []byte{0xa1, 1, 2}}, Message{Attachment: []byte{5}, Text: "caption", ReplyTo: &MsgID{c, 2}},
		Edit{MsgID{c, 0}, "e"}, Delete{MsgID{c, 0}},
		ReactionAdd{MsgID{c, 0}, "👍"}, ReactionRemove{MsgID{c, 0}, "👍"},
		Receipt{Upto: pos}, Receipt{Read: true, Upto: pos},
		SetTitle{"t"}, SetTitle{}, SetAvatar{Mime: "image/png", Data: []byte{1, 2}}, SetAvatar{},
		AddMember{acct(1)}, RemoveMember{acct(2)}, SetAdmin{acct(3), true}, SetAdmin{Account: acct(3)},
		Rotation{Payload: []byte{9}, Recipients: []Recipient{{Account: acct(1), Device: dev(1)}}},
		DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{7}, Prekey: []byte{8}},
		DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{7}, Peer: []byte{9}},
		DeviceAnnounce{Account: acct(1), Device: dev(1), Cert: []byte{7}, Peer: []byte{9}, Mailbox: []byte{0xa2, 1}},
		DeviceRevoked{Revocation: []byte{6, 5}},
		MemberProfile{"Alice"}, MemberProfile{},
		ProfileName{"me"}, ProfileAvatar{Mime: "image/jpeg", Data: []byte{3}},
		SetPreference{"theme", "dark"}, SetPreference{Key: "lang"},
		ContactUpdate{Account: acct(4), Name: &name, Verification: &v, Status: &st},
		ConversationUpdate{ID: []byte{1, 2}, Type: &kind, Archived: &arch},
		DeviceAdd{dev(5), "laptop", []byte{8}}, DeviceRevoke{Device: dev(5), Cutoff: 4},
		ReadMark{[]byte{1}, pos},
		ContactBlock{Account: acct(6), Blocked: true}, ContactBlock{Account: acct(6)},
		Unknown{K: 999, Raw: []byte{0x82, 0x01, 0x02}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	ops := allOps()
	b, err := EncodeOps(ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeOps(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ops) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, ops)
	}
	for _, op := range ops {
		b, err := EncodeOps([]Op{op})
		if err != nil {
			t.Fatalf("%T: %v", op, err)
		}
		if _, err := DecodeOps(b); err != nil {
			t.Fatalf("%T: %v", op, err)
		}
	}
	if b, err := EncodeOps(nil); err != nil || !bytes.Equal(b, []byte{0x82, 0x01, 0x80}) {
		t.Fatalf("empty body %x %v", b, err)
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	long := strings.Repeat("x", MaxTextLen+1)
	bad := []Op{
		Message{}, Message{Text: long}, Message{Text: "\xff"},
		Message{Attachment: make([]byte, MaxAttachmentLen+1)}, Message{Attachment: []byte{1}, Text: "\xff"},
		Edit{Text: "x"}, ReactionAdd{MsgID{testCID("a"), 0}, ""},
		Receipt{}, Receipt{Upto: Position{{Device: dev(2), Seq: 1}, {Device: dev(1), Seq: 1}}},
		Receipt{Upto: Position{{Device: dev(1), Seq: 0}}},
		SetAvatar{Mime: "x"}, SetAvatar{Data: []byte{1}},
		Rotation{}, DeviceAnnounce{}, DeviceAnnounce{Cert: []byte{1}, Peer: make([]byte, MaxPeerLen+1)},
		DeviceAnnounce{Cert: []byte{1}, Mailbox: make([]byte, MaxMailboxLen+1)},
		ContactUpdate{}, ConversationUpdate{ID: []byte{1}},
		Unknown{K: KindMessage, Raw: []byte{0xa0}}, nil,
	}
	for _, op := range bad {
		if _, err := EncodeOps([]Op{op}); !errors.Is(err, ErrMalformedOps) {
			t.Errorf("%T %+v: err %v", op, op, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := EncodeOps([]Op{Message{Text: "hi"}})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformedOps},
		{"version 2", []byte{0x82, 0x02, 0x80}, ErrUnsupported},
		{"trailing", append(append([]byte{}, good...), 0), ErrMalformedOps},
		{"indefinite array", []byte{0x82, 0x01, 0x9f, 0xff}, ErrMalformedOps},
		{"non-shortest int", []byte{0x82, 0x18, 0x01, 0x80}, ErrMalformedOps},
		{"dup key", []byte{0x82, 0x01, 0x81, 0x82, 0x01, 0xa2, 0x61, 0x74, 0x61, 0x61, 0x61, 0x74, 0x61, 0x62}, ErrMalformedOps},
		{"unknown field in known kind", []byte{0x82, 0x01, 0x81, 0x82, 0x01, 0xa2, 0x61, 0x74, 0x61, 0x61, 0x61, 0x7a, 0x01}, ErrMalformedOps},
		{"unsorted keys", []byte{0x82, 0x01, 0x81, 0x82, 0x18, 0x22, 0xa2, 0x61, 0x76, 0x61, 0x61, 0x61, 0x6b, 0x61, 0x62}, ErrMalformedOps},
		{"tag", []byte{0x82, 0x01, 0x81, 0x82, 0x19, 0x03, 0xe7, 0xc1, 0x01}, ErrMalformedOps},
		{"non-canonical unknown payload", []byte{0x82, 0x01, 0x81, 0x82, 0x19, 0x03, 0xe7, 0x18, 0x01}, ErrMalformedOps},
		{"too big", make([]byte, MaxBodySize+1), ErrMalformedOps},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeOps(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Unknown kinds with canonical payloads decode, for forward compatibility.
	if ops, err := DecodeOps([]byte{0x82, 0x01, 0x81, 0x82, 0x19, 0x03, 0xe7, 0x01}); err != nil || ops[0].Kind() != 999 {
		t.Fatalf("unknown kind: %v %v", ops, err)
	}
}

// hotOps are ops of the kinds decodeOpsFast handles, in many shapes.
func hotOps() []Op {
	c, v0 := testCID("x"), cid.NewCidV0(testCID("y").Hash())
	pos := Position{{Device: dev(1), Seq: 3}, {Device: dev(2), Seq: 1 << 40}}
	return []Op{
		Message{Text: "hi"}, Message{Text: "re", ReplyTo: &MsgID{c, 1}},
		Message{Text: strings.Repeat("é", 200), ReplyTo: &MsgID{v0, 300}},
		Message{Text: strings.Repeat("x", MaxTextLen)},
		Edit{MsgID{c, 0}, "e"}, Edit{MsgID{v0, 65535}, strings.Repeat("y", 24)},
		Delete{MsgID{c, 23}}, Delete{MsgID{c, 24}},
		ReactionAdd{MsgID{c, 0}, "👍"}, ReactionRemove{MsgID{c, 256}, "👍"},
		Receipt{Upto: pos}, Receipt{Read: true, Upto: pos},
		Receipt{Upto: Position{{Device: dev(9), Seq: 1<<64 - 1}}},
	}
}

// isHot: the kinds the fast path must decode. A message with an
// attachment is left to the reference decoder (it is rare next to text).
func isHot(op Op) bool {
	switch o := op.(type) {
	case Message:
		return o.Attachment == nil
	case Edit, Delete, ReactionAdd, ReactionRemove, Receipt:
		return true
	}
	return false
}

// checkDecode is the differential oracle: DecodeOps must accept exactly
// what the reference decoder accepts, with the same ops; the fast path
// must only accept what the reference accepts (with the same ops) and must
// accept every valid body made only of hot kinds; accepted input must
// re-encode to itself.
func checkDecode(t *testing.T, in []byte) {
	t.Helper()
	var ref, fast []Op
	var refErr error
	var fastOK bool
	checkAlloc(t, "reference decoder", in, func() { ref, refErr = decodeOpsRef(in) })
	checkAlloc(t, "fast decoder", in, func() { fast, fastOK = decodeOpsFast(in) })
	if fastOK && refErr != nil {
		t.Fatalf("fast path accepted %x, reference rejects: %v", in, refErr)
	}
	if fastOK && !reflect.DeepEqual(fast, ref) {
		t.Fatalf("fast path %x:\n got %#v\nwant %#v", in, fast, ref)
	}
	if refErr == nil && !fastOK && !slices.ContainsFunc(ref, func(op Op) bool { return !isHot(op) }) {
		t.Fatalf("fast path missed a valid hot body %x", in)
	}
	ops, err := DecodeOps(in)
	if (err == nil) != (refErr == nil) || (err != nil && err.Error() != refErr.Error()) {
		t.Fatalf("DecodeOps %x: err %v, reference %v", in, err, refErr)
	}
	if err != nil {
		return
	}
	if !reflect.DeepEqual(ops, ref) {
		t.Fatalf("DecodeOps %x differs from reference", in)
	}
	re, err := EncodeOps(ops)
	if err != nil {
		t.Fatalf("decoded ops do not encode: %v", err)
	}
	if !bytes.Equal(re, in) {
		t.Fatalf("accepted non-canonical input %x", in)
	}
}

// TestDecodeMutations runs the oracle over every single-byte substitution,
// deletion and insertion (of bytes that matter to CBOR heads) of hot bodies.
func TestDecodeMutations(t *testing.T) {
	interesting := []byte{0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x40, 0x58, 0x5f,
		0x60, 0x61, 0x64, 0x65, 0x6d, 0x72, 0x74, 0x75, 0x78, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x9f,
		0xa0, 0xa1, 0xa2, 0xa3, 0xbf, 0xc0, 0xd8, 0xf4, 0xf5, 0xf6, 0xff}
	var bodies [][]byte
	for _, op := range hotOps() {
		if m, ok := op.(Message); ok && len(m.Text) > 300 {
			continue
		}
		b, err := EncodeOps([]Op{op})
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	two, _ := EncodeOps([]Op{Message{Text: "a"}, Receipt{Upto: Position{{Device: dev(1), Seq: 1}}}})
	bodies = append(bodies, two)
	for _, b := range bodies {
		checkDecode(t, b)
		for i := range b {
			m := bytes.Clone(b)
			vals := interesting
			if !testing.Short() && (i < 24 || i >= len(b)-4) { // framing and first heads
				vals = make([]byte, 256)
				for v := range vals {
					vals[v] = byte(v)
				}
			}
			for _, v := range vals {
				m[i] = v
				checkDecode(t, m)
			}
			checkDecode(t, slices.Delete(bytes.Clone(b), i, i+1))
			for _, v := range interesting {
				checkDecode(t, slices.Insert(bytes.Clone(b), i, v))
			}
			checkDecode(t, b[:i])
		}
	}
}

// TestDecodeOpsFastPath pins that the hot kinds actually take the fast
// path and that decoded ops do not alias the input.
func TestDecodeOpsFastPath(t *testing.T) {
	for _, op := range hotOps() {
		b, err := EncodeOps([]Op{op, op})
		if err != nil {
			t.Fatal(err)
		}
		ops, ok := decodeOpsFast(b)
		if !ok || !reflect.DeepEqual(ops, []Op{op, op}) {
			t.Fatalf("%T %+v: fast path ok=%v ops %+v", op, op, ok, ops)
		}
		for i := range b {
			b[i] ^= 0xff
		}
		if !reflect.DeepEqual(ops, []Op{op, op}) {
			t.Fatalf("%T: decoded ops alias the input", op)
		}
	}
	if ops, ok := decodeOpsFast([]byte{0x82, 0x01, 0x80}); !ok || ops == nil || len(ops) != 0 {
		t.Fatalf("empty body: %v %v", ops, ok)
	}
}

// checkAlloc fails when fn, decoding b, allocates beyond a small multiple
// of b: a count or length claimed by untrusted bytes must never size a
// buffer. Decoded ops are Go values (interfaces, strings, slices), hence a
// larger factor than dag's.
func checkAlloc(t *testing.T, what string, b []byte, fn func()) {
	t.Helper()
	alloccheck.Check(t, what, b, 32, fn)
}

// FuzzDecodeOps: untrusted bodies never panic nor allocate beyond a small
// multiple of their size; the fast path agrees with the reference decoder
// and whatever decodes re-encodes to the same bytes (checkDecode).
func FuzzDecodeOps(f *testing.F) {
	for _, op := range allOps() {
		b, _ := EncodeOps([]Op{op})
		f.Add(b)
	}
	for _, op := range hotOps() {
		b, _ := EncodeOps([]Op{op})
		f.Add(b)
	}
	b, _ := EncodeOps(allOps())
	f.Add(b)
	b, _ = EncodeOps(hotOps())
	f.Add(b)
	f.Add([]byte{0x82, 0x01, 0x80})
	f.Add([]byte{0x82, 0x01, 0x9f, 0xff})
	// Heads claiming huge op lists, arrays and strings.
	f.Add([]byte{0x82, 0x01, 0x9b, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x82, 0x01, 0x81, 0x82, 0x01, 0xa1, 0x61, 't', 0x7a, 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{0x82, 0x01, 0x81, 0x82, 0x06, 0xa1, 0x61, 'u', 0x9a, 0x00, 0x0f, 0xff, 0xff})
	f.Fuzz(checkDecode)
}

func TestParseMsgIDRoundTrip(t *testing.T) {
	id := MsgID{Event: testCID("x"), Index: 7}
	if got, err := ParseMsgID(id.String()); err != nil || got != id {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "x/1", id.Event.String(), id.Event.String() + "/", id.Event.String() + "/70000", id.Event.String() + "/1a", id.Event.String() + "/-1"} {
		if _, err := ParseMsgID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
