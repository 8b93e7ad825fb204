package dag

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// exampleBlocks builds the protocol.md example from fixed seeds: a genesis
// block and a second block by another device that links it.
func exampleBlocks(t tb) (Block, Block) {
	cb := newChainBuilder(t)
	g, err := Build(BuildParams{Signer: testSigner(1), Sealer: cb.cipher, Cert: []byte("device-certificate"),
		Body: []byte("genesis"), Now: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(BuildParams{Signer: testSigner(2), Sealer: cb.cipher, Parents: refs(g),
		Body: []byte("hello"), Now: testEpoch.Add(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	return g, b
}

func exampleText(t tb) string {
	_, b := exampleBlocks(t)
	var sb strings.Builder
	fmt.Fprintf(&sb, "cid: %s\n", b.CID)
	fmt.Fprintf(&sb, "cid-bytes: %s\n", hex.EncodeToString(b.CID.Bytes()))
	fmt.Fprintf(&sb, "envelope: %s\n", hex.EncodeToString(b.envBytes))
	fmt.Fprintf(&sb, "inner: %s\n", hex.EncodeToString(b.innerBytes))
	fmt.Fprintf(&sb, "signing-message: %s\n", mustHex(SigningMessage(b.Inner)))
	return sb.String()
}

func mustHex(b []byte, err error) string {
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// TestGoldenExample pins the example block of docs/protocol.md: its bytes
// in testdata, and every golden line must appear in the doc verbatim.
func TestGoldenExample(t *testing.T) {
	got := exampleText(t)
	path := filepath.Join("testdata", "example_block.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("example block changed; the wire format changed or the golden file is stale:\n%s", got)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The doc wraps long hex lines at 64 characters; compare without
	// whitespace.
	flat := strings.Join(strings.Fields(string(doc)), "")
	for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
		_, v, _ := strings.Cut(line, ": ")
		if !strings.Contains(flat, v) {
			t.Errorf("docs/protocol.md lacks the golden %q", line[:min(len(line), 40)])
		}
	}
}
