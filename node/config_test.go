package node

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultConfigsAreValid(t *testing.T) {
	for _, p := range []string{ProfilePersonal, ProfileRelay} {
		c, err := DefaultConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s defaults invalid: %v", p, err)
		}
		b, _ := c.Marshal()
		back, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("%s round trip: %v", p, err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("%s round trip changed the config", p)
		}
	}
	if _, err := DefaultConfig("server"); !errors.Is(err, ErrConfig) {
		t.Fatal("unknown profile accepted")
	}
}

func TestParseConfigNamesTheBadField(t *testing.T) {
	base, _ := DefaultConfig(ProfilePersonal)
	good, _ := base.Marshal()
	edit := func(f func(map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	net := func(m map[string]any) map[string]any { return m["network"].(map[string]any) }
	cases := []struct {
		name  string
		input []byte
		field string
	}{
		{"unknown top-level field", edit(func(m map[string]any) { m["colour"] = "blue" }), `"colour"`},
		{"unknown nested field", edit(func(m map[string]any) { net(m)["listenAddr"] = []string{} }), `"listenAddr"`},
		{"invalid listen multiaddr", edit(func(m map[string]any) {
			net(m)["listenAddrs"] = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/999.1.1.1/tcp/1"}
		}), "network.listenAddrs[1]"},
		{"listen address no transport serves", edit(func(m map[string]any) {
			net(m)["listenAddrs"] = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/4001/quic"}
		}), "network.listenAddrs[1]"},
		{"listen address with a peer id", edit(func(m map[string]any) {
			net(m)["listenAddrs"] = []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLxrtvAhxBmWp5kxvFvvZxEVUW9GDXgXhbXGZCZHLnqdu"}
		}), "network.listenAddrs[0]"},
		{"bootstrap without peer id", edit(func(m map[string]any) { net(m)["bootstrapPeers"] = []string{"/ip4/127.0.0.1/tcp/4001"} }), "network.bootstrapPeers[0]"},
		{"relay garbage", edit(func(m map[string]any) { net(m)["relays"] = []string{"relay.example"} }), "network.relays[0]"},
		{"wrong type", edit(func(m map[string]any) { net(m)["connHigh"] = "lots" }), "network.connHigh"},
		{"bad duration", edit(func(m map[string]any) { net(m)["connGrace"] = "soon" }), "soon"},
		{"water marks inverted", edit(func(m map[string]any) { net(m)["connLow"] = 500 }), "network.connLow/connHigh"},
		{"reachability", edit(func(m map[string]any) { net(m)["reachability"] = "maybe" }), "network.reachability"},
		{"dht mode", edit(func(m map[string]any) { m["dht"] = map[string]any{"mode": "turbo"} }), "dht.mode"},
		{"profile", edit(func(m map[string]any) { m["profile"] = "server" }), "profile"},
		{"API on the LAN", edit(func(m map[string]any) { m["api"] = map[string]any{"listen": "0.0.0.0:7878"} }), "api.listen"},
		{"API without port", edit(func(m map[string]any) { m["api"] = map[string]any{"listen": "127.0.0.1"} }), "api.listen"},
		{"tiny memory cap", edit(func(m map[string]any) { net(m)["maxMemoryMB"] = 3 }), "network.maxMemoryMB"},
		{"tiny soft memory limit", edit(func(m map[string]any) { m["memory"] = map[string]any{"softLimitMB": 16} }), "memory.softLimitMB"},
		{"negative soft memory limit", edit(func(m map[string]any) { m["memory"] = map[string]any{"softLimitMB": -2} }), "memory.softLimitMB"},
		{"relay service without reservations", edit(func(m map[string]any) {
			m["relay"] = map[string]any{"service": true, "maxCircuits": 1, "reservationTTL": "1h"}
		}), "relay.maxReservations"},
		{"syntax error", []byte(`{"profile": "personal",}`), "syntax"},
		{"trailing data", append(append([]byte(nil), good...), []byte(`{}`)...), "trailing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(c.input)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("ParseConfig = %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %q", err, c.field)
			}
		})
	}
	// Non-loopback API is fine once the user says so.
	ok := edit(func(m map[string]any) { m["api"] = map[string]any{"listen": "0.0.0.0:7878", "allowNonLoopback": true} })
	if _, err := ParseConfig(ok); err != nil {
		t.Fatalf("allowNonLoopback: %v", err)
	}
}

// Every config field is documented in docs/config.md.
func TestEveryConfigFieldIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := strings.Split(f.Tag.Get("json"), ",")[0]
			path := prefix + name
			if f.Type.Kind() == reflect.Struct {
				walk(path+".", f.Type)
				continue
			}
			if !strings.Contains(string(doc), "`"+path+"`") {
				t.Errorf("docs/config.md does not document `%s`", path)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
}

// The example configs in configs/ stay valid.
func TestExampleConfigsLoad(t *testing.T) {
	for _, name := range []string{"personal.json", "relay.json"} {
		if _, err := LoadConfig("../configs/" + name); err != nil {
			t.Errorf("configs/%s: %v", name, err)
		}
	}
}

// Whatever the file holds, ParseConfig returns a config or an error, never
// panics; a config it accepts is valid and survives a round trip.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{ProfilePersonal, ProfileRelay} {
		c, _ := DefaultConfig(p)
		b, _ := c.Marshal()
		f.Add(b)
	}
	for _, name := range []string{"personal.json", "relay.json"} {
		if b, err := os.ReadFile("../configs/" + name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"profile":"personal","network":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v is not ErrConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseConfig(out)
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestMemoryLimitFollowsLiveHeap: the floor holds while the live heap is
// small; above it the limit leaves at least a quarter (and 32 MiB) of room,
// so the collector never runs back to back.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	const mib = 1 << 20
	floor := int64(160 * mib)
	for _, c := range []struct{ live, want int64 }{
		{0, floor},
		{40 * mib, floor},
		{128 * mib, floor},
		{140 * mib, 175 * mib},
		{400 * mib, 500 * mib},
		{100 * mib, floor},
	} {
		if got := memoryLimitFor(floor, c.live); got != c.want {
			t.Errorf("live %d MiB: limit %d MiB, want %d", c.live/mib, got/mib, c.want/mib)
		}
	}
	for live := int64(0); live < 1<<30; live += 7 * mib {
		if got := memoryLimitFor(floor, live); got < live+32*mib || got < live*5/4 {
			t.Fatalf("live %d MiB: limit %d MiB leaves too little room", live/mib, got/mib)
		}
	}
}
