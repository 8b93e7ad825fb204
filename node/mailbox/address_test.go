package mailbox

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/glitr-chat/glitr/internal/alloccheck"
)

func testAddress(t testing.TB) Address {
	id, err := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	if err != nil {
		t.Fatal(err)
	}
	return Address{Key: testOwner(1).DepositKey(), Relays: []peer.AddrInfo{{
		ID:    id,
		Addrs: []ma.Multiaddr{ma.StringCast("/ip4/192.0.2.1/udp/4001/quic-v1"), ma.StringCast("/ip6/2001:db8::1/tcp/4001")},
	}}}
}

func TestAddressRoundTrip(t *testing.T) {
	a := testAddress(t)
	b, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseAddress(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != a.Key || len(got.Relays) != 1 || got.Relays[0].ID != a.Relays[0].ID || !got.Relays[0].Addrs[1].Equal(a.Relays[0].Addrs[1]) {
		t.Fatalf("round trip: %+v", got)
	}
	c, err := got.Key.Capability(20000)
	want, _ := a.Key.Capability(20000)
	if err != nil || c.ID != want.ID {
		t.Fatal("the parsed key names another mailbox")
	}
}

func TestAddressRules(t *testing.T) {
	a := testAddress(t)
	none := a
	none.Relays = nil
	many := a
	for range MaxAddressRelays + 1 {
		many.Relays = append(many.Relays, a.Relays[0])
	}
	for name, bad := range map[string]Address{"no relay": none, "too many relays": many} {
		if _, err := bad.MarshalBinary(); !errors.Is(err, ErrBadAddress) {
			t.Errorf("%s: %v", name, err)
		}
	}
	good, _ := a.MarshalBinary()
	for name, b := range map[string][]byte{
		"empty":         nil,
		"truncated":     good[:len(good)-1],
		"trailing byte": append(append([]byte(nil), good...), 0),
		"not a map":     {0x80},
		"version 2":     append([]byte{good[0], good[1], 0x02}, good[3:]...),
	} {
		if _, err := ParseAddress(b); !errors.Is(err, ErrBadAddress) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseAddress: nothing panics or allocates beyond its input, and what
// parses encodes back to the same bytes.
func FuzzParseAddress(f *testing.F) {
	good, _ := testAddress(f).MarshalBinary()
	f.Add(good)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAddress(b)
		alloccheck.Check(t, "ParseAddress", b, 32, func() { _, _ = ParseAddress(b) })
		if err != nil {
			return
		}
		if again, err := a.MarshalBinary(); err != nil || string(again) != string(b) {
			t.Fatalf("a parsed address does not encode back: %v", err)
		}
	})
}
