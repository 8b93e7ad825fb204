package keyring

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Errors of the keyring file.
var (
	// ErrWrongPassphrase reports a passphrase that does not open the file.
	// Nothing was modified.
	ErrWrongPassphrase = errors.New("keyring: wrong passphrase")
	// ErrWrongKeyFile reports a key file that does not open the keyring.
	ErrWrongKeyFile = errors.New("keyring: key file does not open the keyring")
	// ErrWeakKDF reports argon2id parameters below the enforced floor (a
	// downgraded file) or above the sane maximum (a memory bomb).
	ErrWeakKDF = errors.New("keyring: argon2id parameters outside the allowed range")
	// ErrProtectionMismatch reports a passphrase given for a key-file
	// keyring or the reverse.
	ErrProtectionMismatch = errors.New("keyring: file uses the other protection")
	// ErrKeyFilePermissions reports a key file readable by group or others.
	ErrKeyFilePermissions = errors.New("keyring: key file permissions too open (want 0600)")
)

// Argon2Params are argon2id cost parameters.
type Argon2Params struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultArgon2Params returns the parameters new files use: t=3, m=256 MiB,
// p=4, ≈ 0.4–0.5 s on the reference 2-core machine (docs/crypto.md).
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Time: 3, MemoryKiB: 256 << 10, Threads: 4}
}

// MinArgon2Params returns the floor enforced on read: RFC 9106's second
// recommended option (t=3, m=64 MiB). A file below it is rejected as
// downgraded.
func MinArgon2Params() Argon2Params {
	return Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 1}
}

// maxArgon2 bounds what a file may demand, so a crafted file cannot make
// the node allocate without bound.
var maxArgon2 = Argon2Params{Time: 64, MemoryKiB: 1 << 20, Threads: 64}

func (p Argon2Params) atLeast(floor Argon2Params) bool {
	return p.Time >= floor.Time && p.MemoryKiB >= floor.MemoryKiB && p.Threads >= floor.Threads
}

func (p Argon2Params) check(floor Argon2Params) error {
	if !p.atLeast(floor) || !maxArgon2.atLeast(p) || p.Threads == 0 || p.MemoryKiB < 8*uint32(p.Threads) {
		return fmt.Errorf("%w: t=%d m=%dKiB p=%d", ErrWeakKDF, p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

// argon2idKey is the single argon2id entry point (the PHC vector runs
// through it).
func argon2idKey(pass, salt []byte, p Argon2Params, n uint32) []byte {
	return argon2.IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, n)
}

// Protection is how the keyring file is encrypted: a Passphrase or a
// KeyFile.
type Protection interface{ protection() }

// Passphrase protects the keyring with argon2id(passphrase).
type Passphrase []byte

// KeyFile protects the keyring with a random 32-byte key kept in the named
// file with mode 0600, for users who choose no passphrase. WriteFile
// creates the key file if it does not exist.
type KeyFile string

func (Passphrase) protection() {}
func (KeyFile) protection()    {}

// Keyring is the content of the keyring file.
type Keyring struct {
	// Account is the account root key; nil on non-admin devices.
	Account *AccountKey
	Device  *DeviceKey
	Prekeys *PrekeyRing
	// Secrets holds named secrets the node keeps here (cipher states,
	// contact tokens). Names are UTF-8, at most 128 bytes; values at most
	// 1 MiB; at most 4,096 entries.
	Secrets map[string][]byte
}

const (
	maxSecretName  = 128
	maxSecretValue = 1 << 20
	maxSecrets     = 4096
	maxKeyringFile = 16 << 20
	fileMagic      = "glitr-keyring"
	kdfArgon2id    = 1
	kdfKeyFile     = 2
	saltSize       = 16
)

type fileHeader struct {
	_       struct{} `cbor:",toarray"`
	Magic   string
	V       uint8
	KDF     uint8
	Salt    []byte
	Time    uint32
	Memory  uint32
	Threads uint8
	Nonce   []byte
}

type fileWire struct {
	_      struct{} `cbor:",toarray"`
	Header []byte   // canonical fileHeader, the AEAD's associated data
	CT     []byte
}

type prekeyWire struct {
	_       struct{} `cbor:",toarray"`
	Seed    []byte
	Created int64
}

type secretWire struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value []byte
}

type keyringPlain struct {
	_       struct{} `cbor:",toarray"`
	Account []byte   // empty or a 32-byte seed
	Device  []byte
	Prekeys []prekeyWire
	Secrets []secretWire
}

type fileOptions struct {
	params Argon2Params
	floor  Argon2Params
	rand   io.Reader
}

// FileOption adjusts WriteFile, ReadFile and ChangeProtection.
type FileOption func(*fileOptions)

// WithArgon2Params sets the parameters for files written (default
// DefaultArgon2Params).
func WithArgon2Params(p Argon2Params) FileOption { return func(o *fileOptions) { o.params = p } }

// WithArgon2Floor lowers or raises the floor enforced on read and write
// (default MinArgon2Params). Lowering it accepts downgraded files; it exists
// for tests and for very constrained devices.
func WithArgon2Floor(p Argon2Params) FileOption { return func(o *fileOptions) { o.floor = p } }

// WithRand sets the randomness for salts, nonces and new key files
// (default crypto/rand).
func WithRand(r io.Reader) FileOption { return func(o *fileOptions) { o.rand = r } }

func buildOptions(opts []FileOption) fileOptions {
	o := fileOptions{params: DefaultArgon2Params(), floor: MinArgon2Params(), rand: rand.Reader}
	for _, f := range opts {
		f(&o)
	}
	return o
}

func encodeSecrets(m map[string][]byte) ([]secretWire, error) {
	if len(m) > maxSecrets {
		return nil, fmt.Errorf("%w: %d secrets", ErrMalformed, len(m))
	}
	out := make([]secretWire, 0, len(m))
	for k, v := range m {
		if len(k) == 0 || len(k) > maxSecretName || !utf8.ValidString(k) || len(v) > maxSecretValue {
			return nil, fmt.Errorf("%w: secret %q", ErrMalformed, k)
		}
		out = append(out, secretWire{Name: k, Value: v})
	}
	slices.SortFunc(out, func(a, b secretWire) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func decodeSecrets(ws []secretWire) (map[string][]byte, error) {
	if len(ws) > maxSecrets {
		return nil, fmt.Errorf("%w: %d secrets", ErrMalformed, len(ws))
	}
	m := make(map[string][]byte, len(ws))
	for i, w := range ws {
		if len(w.Name) == 0 || len(w.Name) > maxSecretName || len(w.Value) > maxSecretValue {
			return nil, fmt.Errorf("%w: secret %d", ErrMalformed, i)
		}
		if i > 0 && ws[i-1].Name >= w.Name {
			return nil, fmt.Errorf("%w: secrets not sorted", ErrMalformed)
		}
		m[w.Name] = w.Value
	}
	return m, nil
}

func (kr *Keyring) encode() ([]byte, error) {
	if kr.Device == nil || kr.Prekeys == nil || kr.Prekeys.Len() == 0 {
		return nil, fmt.Errorf("%w: keyring needs a device key and a prekey", ErrMalformed)
	}
	p := keyringPlain{Account: []byte{}, Device: kr.Device.Seed()}
	if kr.Account != nil {
		p.Account = kr.Account.Seed()
	}
	for _, pk := range kr.Prekeys.keys {
		p.Prekeys = append(p.Prekeys, prekeyWire{Seed: pk.seed, Created: pk.created.Unix()})
	}
	var err error
	if p.Secrets, err = encodeSecrets(kr.Secrets); err != nil {
		return nil, err
	}
	return marshal(p)
}

func decodeKeyring(b []byte) (*Keyring, error) {
	var p keyringPlain
	if err := unmarshalStrict(b, &p); err != nil {
		return nil, err
	}
	kr := &Keyring{}
	var err error
	if len(p.Account) != 0 {
		if kr.Account, err = AccountKeyFromSeed(p.Account); err != nil {
			return nil, err
		}
	}
	if kr.Device, err = DeviceKeyFromSeed(p.Device); err != nil {
		return nil, err
	}
	if len(p.Prekeys) == 0 || len(p.Prekeys) > maxPrekeys {
		return nil, fmt.Errorf("%w: %d prekeys", ErrMalformed, len(p.Prekeys))
	}
	kr.Prekeys = &PrekeyRing{}
	for _, w := range p.Prekeys {
		pk, err := prekeyFromSeed(w.Seed, time.Unix(w.Created, 0))
		if err != nil {
			return nil, err
		}
		kr.Prekeys.keys = append(kr.Prekeys.keys, pk)
	}
	if kr.Secrets, err = decodeSecrets(p.Secrets); err != nil {
		return nil, err
	}
	return kr, nil
}

// fileKey derives the AEAD key from the protection and the header.
func fileKey(prot Protection, h *fileHeader) ([]byte, error) {
	switch p := prot.(type) {
	case Passphrase:
		if h.KDF != kdfArgon2id {
			return nil, ErrProtectionMismatch
		}
		kek := argon2idKey(p, h.Salt, Argon2Params{h.Time, h.Memory, h.Threads}, KeySize)
		k := kdf(labelKeyringFile, kek, h.Salt)
		wipe(kek)
		return k[:], nil
	case KeyFile:
		if h.KDF != kdfKeyFile {
			return nil, ErrProtectionMismatch
		}
		raw, err := readKeyFile(string(p))
		if err != nil {
			return nil, err
		}
		k := kdf(labelKeyringFile, raw, h.Salt)
		wipe(raw)
		return k[:], nil
	default:
		return nil, fmt.Errorf("keyring: unknown protection %T", prot)
	}
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrKeyFilePermissions)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: key file: %w", err)
	}
	if len(raw) != KeySize {
		return nil, fmt.Errorf("keyring: key file: %w: %d bytes", ErrMalformed, len(raw))
	}
	return raw, nil
}

// SealFile encrypts kr under prot and returns the file bytes. Use WriteFile
// to store them; SealFile is separate so the format can be tested without
// a file system.
func SealFile(kr *Keyring, prot Protection, opts ...FileOption) ([]byte, error) {
	o := buildOptions(opts)
	plain, err := kr.encode()
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	defer wipe(plain)
	h := fileHeader{Magic: fileMagic, V: 1}
	if h.Salt, err = readRand(o.rand, saltSize); err != nil {
		return nil, err
	}
	if h.Nonce, err = readRand(o.rand, NonceSize); err != nil {
		return nil, err
	}
	switch p := prot.(type) {
	case Passphrase:
		if err := o.params.check(o.floor); err != nil {
			return nil, fmt.Errorf("keyring file: %w", err)
		}
		h.KDF, h.Time, h.Memory, h.Threads = kdfArgon2id, o.params.Time, o.params.MemoryKiB, o.params.Threads
	case KeyFile:
		h.KDF = kdfKeyFile
		if _, err := os.Stat(string(p)); errors.Is(err, fs.ErrNotExist) {
			raw, err := readRand(o.rand, KeySize)
			if err != nil {
				return nil, err
			}
			if err := writeFileAtomic(string(p), raw); err != nil {
				return nil, err
			}
		}
	}
	hb, err := marshal(h)
	if err != nil {
		return nil, err
	}
	key, err := fileKey(prot, &h)
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	defer wipe(key)
	ct, err := aeadSeal(key, h.Nonce, plain, hb)
	if err != nil {
		return nil, err
	}
	return marshal(fileWire{Header: hb, CT: ct})
}

// OpenFile decrypts keyring file bytes. A wrong passphrase gives
// ErrWrongPassphrase, a wrong key file ErrWrongKeyFile, parameters below
// the floor ErrWeakKDF (checked before any argon2id work).
func OpenFile(b []byte, prot Protection, opts ...FileOption) (*Keyring, error) {
	o := buildOptions(opts)
	if len(b) > maxKeyringFile {
		return nil, fmt.Errorf("keyring file: %w: %d bytes", ErrMalformed, len(b))
	}
	var w fileWire
	if err := unmarshalStrict(b, &w); err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	var h fileHeader
	if err := unmarshalStrict(w.Header, &h); err != nil {
		return nil, fmt.Errorf("keyring file header: %w", err)
	}
	if h.Magic != fileMagic {
		return nil, fmt.Errorf("keyring file: %w: magic", ErrMalformed)
	}
	if h.V != 1 {
		return nil, fmt.Errorf("keyring file: %w: %d", ErrUnsupportedVersion, h.V)
	}
	if len(h.Salt) != saltSize || len(h.Nonce) != NonceSize {
		return nil, fmt.Errorf("keyring file: %w: salt or nonce", ErrMalformed)
	}
	var wrong error
	switch h.KDF {
	case kdfArgon2id:
		if err := (Argon2Params{h.Time, h.Memory, h.Threads}).check(o.floor); err != nil {
			return nil, fmt.Errorf("keyring file: %w", err)
		}
		wrong = ErrWrongPassphrase
	case kdfKeyFile:
		if h.Time != 0 || h.Memory != 0 || h.Threads != 0 {
			return nil, fmt.Errorf("keyring file: %w: kdf parameters on a key-file keyring", ErrMalformed)
		}
		wrong = ErrWrongKeyFile
	default:
		return nil, fmt.Errorf("keyring file: %w: kdf %d", ErrMalformed, h.KDF)
	}
	key, err := fileKey(prot, &h)
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	defer wipe(key)
	plain, err := aeadOpen(key, h.Nonce, w.CT, w.Header)
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", wrong)
	}
	defer wipe(plain)
	kr, err := decodeKeyring(plain)
	if err != nil {
		return nil, fmt.Errorf("keyring file content: %w", err)
	}
	return kr, nil
}

// WriteFile seals kr and replaces path atomically (temp file, fsync,
// rename, fsync of the directory), mode 0600.
func WriteFile(path string, kr *Keyring, prot Protection, opts ...FileOption) error {
	b, err := SealFile(kr, prot, opts...)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

// ReadFile reads and opens the keyring file at path. It never writes.
func ReadFile(path string, prot Protection, opts ...FileOption) (*Keyring, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	if fi.Size() > maxKeyringFile {
		return nil, fmt.Errorf("keyring file: %w: %d bytes", ErrMalformed, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	return OpenFile(b, prot, opts...)
}

// ChangeProtection re-encrypts the keyring at path from old to new (change
// of passphrase, or switching between passphrase and key file). If old
// does not open the file, nothing is modified.
func ChangeProtection(path string, old, new Protection, opts ...FileOption) error {
	kr, err := ReadFile(path, old, opts...)
	if err != nil {
		return err
	}
	return WriteFile(path, kr, new, opts...)
}

// writeFileAtomic writes data to path so that a crash leaves either the old
// or the new file, never a torn one.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("keyring: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("keyring: write %s: %w", path, err)
	}
	if _, err = io.Copy(f, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("keyring: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("keyring: sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keyring: close %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("keyring: rename %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyring: sync dir of %s: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("keyring: sync dir of %s: %w", path, err)
	}
	return nil
}
