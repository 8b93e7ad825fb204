package keyring

import (
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// The BIP-39 English word list, unchanged (SHA-256
// 2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda, checked
// by a test).
//
//go:embed bip39_english.txt
var bip39English string

// bip39Words returns the word list and its reverse index. It is rebuilt per
// call rather than held in mutable package state; parsing a recovery key
// is rare.
func bip39Words() ([]string, map[string]int) {
	words := strings.Split(strings.TrimSuffix(bip39English, "\n"), "\n")
	index := make(map[string]int, len(words))
	for i, w := range words {
		index[w] = i
	}
	return words, index
}

// Errors of recovery keys and backups.
var (
	// ErrRecoveryWordCount reports a phrase that is not 24 words.
	ErrRecoveryWordCount = errors.New("keyring: recovery phrase must have 24 words")
	// ErrRecoveryUnknownWord reports a word outside the BIP-39 English list.
	ErrRecoveryUnknownWord = errors.New("keyring: unknown recovery word")
	// ErrRecoveryChecksum reports 24 valid words whose checksum fails (a
	// typo or swapped words).
	ErrRecoveryChecksum = errors.New("keyring: recovery phrase checksum mismatch")
	// ErrWrongRecoveryKey reports a well-formed recovery key that is not the
	// one this backup was made with.
	ErrWrongRecoveryKey = errors.New("keyring: recovery key does not match this backup")
	// ErrBackupTampered reports a backup that the right key does not
	// authenticate: modified after it was made.
	ErrBackupTampered = errors.New("keyring: backup was modified")
)

// RecoveryKey is a 256-bit key shown to the user as 24 BIP-39 words. It
// encrypts the account backup.
type RecoveryKey [KeySize]byte

// NewRecoveryKey draws a recovery key from rand.
func NewRecoveryKey(rand io.Reader) (RecoveryKey, error) {
	b, err := readRand(rand, KeySize)
	if err != nil {
		return RecoveryKey{}, err
	}
	defer wipe(b)
	return RecoveryKey(b), nil
}

// Words returns the key as 24 space-separated BIP-39 English words: the 256
// bits followed by the first 8 bits of their SHA-256, read as 24 groups of
// 11 bits.
func (k RecoveryKey) Words() string {
	words, _ := bip39Words()
	sum := sha256.Sum256(k[:])
	var bitsBuf [KeySize + 1]byte
	copy(bitsBuf[:], k[:])
	bitsBuf[KeySize] = sum[0]
	out := make([]string, 24)
	for i := range out {
		out[i] = words[bits11(bitsBuf[:], i*11)]
	}
	return strings.Join(out, " ")
}

// bits11 reads 11 bits starting at bit offset off (big-endian bit order).
func bits11(b []byte, off int) int {
	v := 0
	for j := range 11 {
		bit := off + j
		v = v<<1 | int(b[bit/8]>>(7-bit%8)&1)
	}
	return v
}

// ParseRecoveryWords parses 24 BIP-39 English words (case and surrounding
// whitespace ignored). It reports ErrRecoveryWordCount,
// ErrRecoveryUnknownWord (naming the position) or ErrRecoveryChecksum.
func ParseRecoveryWords(s string) (RecoveryKey, error) {
	fields := strings.Fields(strings.ToLower(s))
	if len(fields) != 24 {
		return RecoveryKey{}, fmt.Errorf("%w: got %d", ErrRecoveryWordCount, len(fields))
	}
	_, index := bip39Words()
	var buf [KeySize + 1]byte
	for i, w := range fields {
		v, ok := index[w]
		if !ok {
			return RecoveryKey{}, fmt.Errorf("%w: word %d", ErrRecoveryUnknownWord, i+1)
		}
		for j := range 11 {
			if v>>(10-j)&1 == 1 {
				bit := i*11 + j
				buf[bit/8] |= 1 << (7 - bit%8)
			}
		}
	}
	sum := sha256.Sum256(buf[:KeySize])
	if sum[0] != buf[KeySize] {
		return RecoveryKey{}, ErrRecoveryChecksum
	}
	return RecoveryKey(buf[:KeySize]), nil
}

// Backup is what the recovery key protects: the account root key and the
// secrets the devices share.
type Backup struct {
	Account *AccountKey
	Secrets map[string][]byte
	Created time.Time
}

const (
	backupMagic  = "glitr-backup"
	maxBackupLen = 16 << 20
	keyCheckSize = 16
)

type backupHeader struct {
	_        struct{} `cbor:",toarray"`
	Magic    string
	V        uint8
	Account  []byte
	Created  int64
	KeyCheck []byte
	Nonce    []byte
}

type backupPlain struct {
	_       struct{} `cbor:",toarray"`
	Account []byte
	Secrets []secretWire
}

func backupKeys(k RecoveryKey, account []byte) (key, check [KeySize]byte) {
	return kdf(labelBackupKey, k[:], account), kdf(labelBackupCheck, k[:], account)
}

// SealBackup encrypts b under the recovery key. The header names the
// account and carries a 16-byte key check (an independent HKDF output), so
// a wrong key and a modified backup give different errors.
func SealBackup(rand io.Reader, k RecoveryKey, b Backup) ([]byte, error) {
	if b.Account == nil {
		return nil, fmt.Errorf("backup: %w: no account key", ErrMalformed)
	}
	secrets, err := encodeSecrets(b.Secrets)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	plain, err := marshal(backupPlain{Account: b.Account.Seed(), Secrets: secrets})
	if err != nil {
		return nil, err
	}
	defer wipe(plain)
	acct := b.Account.ID()
	key, check := backupKeys(k, acct[:])
	defer wipe(key[:])
	h := backupHeader{Magic: backupMagic, V: 1, Account: acct[:], Created: b.Created.Unix(), KeyCheck: check[:keyCheckSize]}
	if h.Nonce, err = readRand(rand, NonceSize); err != nil {
		return nil, err
	}
	hb, err := marshal(h)
	if err != nil {
		return nil, err
	}
	ct, err := aeadSeal(key[:], h.Nonce, plain, append([]byte(labelBackupAD+"\x00"), hb...))
	if err != nil {
		return nil, err
	}
	return marshal(fileWire{Header: hb, CT: ct})
}

// OpenBackup decrypts a backup. It reports ErrWrongRecoveryKey when the
// key check fails and ErrBackupTampered when the key is right but the
// backup does not authenticate or its content contradicts its header.
func OpenBackup(k RecoveryKey, data []byte) (Backup, error) {
	if len(data) > maxBackupLen {
		return Backup{}, fmt.Errorf("backup: %w: %d bytes", ErrMalformed, len(data))
	}
	var w fileWire
	if err := unmarshalStrict(data, &w); err != nil {
		return Backup{}, fmt.Errorf("backup: %w", err)
	}
	var h backupHeader
	if err := unmarshalStrict(w.Header, &h); err != nil {
		return Backup{}, fmt.Errorf("backup header: %w", err)
	}
	if h.Magic != backupMagic {
		return Backup{}, fmt.Errorf("backup: %w: magic", ErrMalformed)
	}
	if h.V != 1 {
		return Backup{}, fmt.Errorf("backup: %w: %d", ErrUnsupportedVersion, h.V)
	}
	if len(h.Account) != KeySize || len(h.KeyCheck) != keyCheckSize || len(h.Nonce) != NonceSize {
		return Backup{}, fmt.Errorf("backup: %w: header field lengths", ErrMalformed)
	}
	key, check := backupKeys(k, h.Account)
	defer wipe(key[:])
	if subtle.ConstantTimeCompare(check[:keyCheckSize], h.KeyCheck) != 1 {
		return Backup{}, ErrWrongRecoveryKey
	}
	plain, err := aeadOpen(key[:], h.Nonce, w.CT, append([]byte(labelBackupAD+"\x00"), w.Header...))
	if err != nil {
		return Backup{}, ErrBackupTampered
	}
	defer wipe(plain)
	var p backupPlain
	if err := unmarshalStrict(plain, &p); err != nil {
		return Backup{}, fmt.Errorf("backup content: %w", err)
	}
	acct, err := AccountKeyFromSeed(p.Account)
	if err != nil {
		return Backup{}, fmt.Errorf("backup content: %w", err)
	}
	if id := acct.ID(); subtle.ConstantTimeCompare(id[:], h.Account) != 1 {
		return Backup{}, fmt.Errorf("%w: account key does not match header", ErrBackupTampered)
	}
	secrets, err := decodeSecrets(p.Secrets)
	if err != nil {
		return Backup{}, fmt.Errorf("backup content: %w", err)
	}
	return Backup{Account: acct, Secrets: secrets, Created: time.Unix(h.Created, 0).UTC()}, nil
}
