package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	pebbleds "github.com/ipfs/go-ds-pebble"
	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/sys/unix"

	"github.com/glitr-chat/glitr/node/identity"
)

// Files inside a data directory.
const (
	PeerKeyFile  = "peer.key"  // libp2p identity (Ed25519), 0600
	TokenFile    = "api.token" // local API token, 0600
	APIAddrFile  = "api.addr"  // address of the running node's API, written on start
	LockFile     = "repo.lock" // held by the running process
	StoreDirName = "store"     // pebble database
)

// Errors about the data directory that callers act on.
var (
	ErrNotInitialized = errors.New("data directory is not initialized (run `glitr init`)")
	ErrAlreadyInit    = errors.New("data directory is already initialized")
	ErrLocked         = errors.New("data directory is in use by another glitr process")
	ErrBadPeerKey     = errors.New("peer key file is corrupt")
)

// DataDir is an initialized data directory.
type DataDir struct {
	Path string
}

// DefaultDataDir returns $GLITR_DATA, or "glitr" under the user's
// configuration directory.
func DefaultDataDir() (string, error) {
	if d := os.Getenv("GLITR_DATA"); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find a home for the data directory (set --data or GLITR_DATA): %w", err)
	}
	return filepath.Join(base, "glitr"), nil
}

// Init creates a data directory: config, peer key, API token and an empty
// store. It refuses to touch a directory that already holds a config.
func Init(path string, cfg Config) (DataDir, error) {
	if err := cfg.Validate(); err != nil {
		return DataDir{}, err
	}
	if _, err := os.Stat(filepath.Join(path, ConfigFile)); err == nil {
		return DataDir{}, fmt.Errorf("%s: %w", path, ErrAlreadyInit)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return DataDir{}, fmt.Errorf("create data directory: %w", err)
	}
	d := DataDir{Path: path}
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return DataDir{}, fmt.Errorf("generate peer key: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return DataDir{}, fmt.Errorf("encode peer key: %w", err)
	}
	if err := writeFileAtomic(d.file(PeerKeyFile), raw, 0o600); err != nil {
		return DataDir{}, err
	}
	if err := writeFileAtomic(d.file(TokenFile), []byte(rand.Text()+"\n"), 0o600); err != nil {
		return DataDir{}, err
	}
	// An empty store, so the directory is complete before the first run.
	st, err := pebbleds.NewDatastore(d.StorePath())
	if err != nil {
		return DataDir{}, fmt.Errorf("create store %s: %w", d.StorePath(), err)
	}
	if err := st.Close(); err != nil {
		return DataDir{}, fmt.Errorf("create store %s: %w", d.StorePath(), err)
	}
	b, err := cfg.Marshal()
	if err != nil {
		return DataDir{}, err
	}
	// The config is written last: its presence marks a complete init.
	if err := writeFileAtomic(d.file(ConfigFile), b, 0o600); err != nil {
		return DataDir{}, err
	}
	return d, nil
}

// Open returns an initialized data directory without locking it.
func Open(path string) (DataDir, error) {
	if _, err := os.Stat(filepath.Join(path, ConfigFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return DataDir{}, fmt.Errorf("%s: %w", path, ErrNotInitialized)
		}
		return DataDir{}, fmt.Errorf("open data directory: %w", err)
	}
	return DataDir{Path: path}, nil
}

func (d DataDir) file(name string) string { return filepath.Join(d.Path, name) }

// Config loads and validates the directory's config.
func (d DataDir) Config() (Config, error) { return LoadConfig(d.file(ConfigFile)) }

// PeerKey loads the libp2p identity.
func (d DataDir) PeerKey() (crypto.PrivKey, error) {
	path := d.file(PeerKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("peer key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("peer key %s: permissions %v are open to others; run chmod 600", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peer key %s: %w", path, err)
	}
	sk, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrBadPeerKey, err)
	}
	if sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%s: %w: key type %v, want Ed25519", path, ErrBadPeerKey, sk.Type())
	}
	return sk, nil
}

// Token returns the local API token.
func (d DataDir) Token() (string, error) {
	b, err := os.ReadFile(d.file(TokenFile))
	if err != nil {
		return "", fmt.Errorf("API token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("API token in %s is too short; delete it and run `glitr init` again", d.file(TokenFile))
	}
	return t, nil
}

// APIAddr returns the address the running node's API listens on.
func (d DataDir) APIAddr() (string, error) {
	b, err := os.ReadFile(d.file(APIAddrFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no node is running on %s (start one with `glitr run`)", d.Path)
		}
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// StorePath is where the pebble database lives.
func (d DataDir) StorePath() string { return d.file(StoreDirName) }

// Lock is an exclusive lock on a data directory, held for a process's life.
type Lock struct{ f *os.File }

// Lock takes the directory's lock without waiting: a second process gets
// ErrLocked at once instead of corrupting the store.
func (d DataDir) Lock() (*Lock, error) {
	f, err := os.OpenFile(d.file(LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", d.Path, ErrLocked)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	// The pid helps a user find the other process; the lock is the flock.
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
	return &Lock{f: f}, nil
}

// Release lets another process open the directory.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// writeFileAtomic writes through a temporary file, fsync and rename, so a
// crash leaves either the old file or the new one, never half of either.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if df, err := os.Open(dir); err == nil {
		_ = df.Sync()
		df.Close()
	}
	return nil
}

// Files of the personal identity (node/identity).
const (
	KeyringFile    = "keyring"     // account root, device key, prekeys; encrypted
	KeyringKeyFile = "keyring.key" // the key that encrypts it when no passphrase is set (0600)
)

// loadIdentity opens the data directory's keyring, creating a new account
// and device on first use (identity.Load).
func loadIdentity(dir DataDir, now time.Time, passphrase []byte) (*identity.Identity, error) {
	return identity.Load(dir.file(KeyringFile), dir.file(KeyringKeyFile), now, passphrase)
}
