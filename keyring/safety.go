package keyring

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"
)

// safetyIterations is libsignal's iteration count for numeric fingerprints.
const safetyIterations = 5200

// numericFingerprint is libsignal's version-0 numeric fingerprint of one
// side (rust/protocol/src/fingerprint.rs): h = SHA-512(0x0000 ‖ key ‖ id ‖ key),
// then iterations-1 times h = SHA-512(h ‖ key); the first 30 bytes give six
// 5-digit groups, each a 40-bit big-endian integer mod 100000.
func numericFingerprint(iterations int, key, stableID []byte) string {
	h := sha512.New()
	h.Write([]byte{0, 0})
	h.Write(key)
	h.Write(stableID)
	h.Write(key)
	sum := h.Sum(nil)
	for i := 1; i < iterations; i++ {
		h.Reset()
		h.Write(sum)
		h.Write(key)
		sum = h.Sum(sum[:0])
	}
	var b strings.Builder
	for i := range 6 {
		var buf [8]byte
		copy(buf[3:], sum[i*5:i*5+5])
		fmt.Fprintf(&b, "%05d", binary.BigEndian.Uint64(buf[:])%100000)
	}
	return b.String()
}

// displayableFingerprint sorts the two 30-digit halves so both parties see
// the same 60 digits.
func displayableFingerprint(iterations int, localKey, localID, remoteKey, remoteID []byte) string {
	l := numericFingerprint(iterations, localKey, localID)
	r := numericFingerprint(iterations, remoteKey, remoteID)
	if l < r {
		return l + r
	}
	return r + l
}

// SafetyNumber returns the 60-digit safety number of two accounts in
// Signal's numeric format. It is symmetric (both parties compute the same
// digits) and changes whenever either account key changes. The key is
// the 32-byte Ed25519 account key prefixed with a type byte 0xED (Signal
// uses 0x05 for its Curve25519 keys); the stable identifier is the label
// "glitr/v1/safety-number" so our numbers never coincide with Signal's.
func SafetyNumber(a, b AccountID) string {
	ka := append([]byte{0xED}, a[:]...)
	kb := append([]byte{0xED}, b[:]...)
	return displayableFingerprint(safetyIterations, ka, []byte(labelSafetyID), kb, []byte(labelSafetyID))
}

// FormatSafetyNumber splits a 60-digit safety number into twelve groups of
// five for display.
func FormatSafetyNumber(n string) string {
	var groups []string
	for i := 0; i+5 <= len(n); i += 5 {
		groups = append(groups, n[i:i+5])
	}
	return strings.Join(groups, " ")
}
