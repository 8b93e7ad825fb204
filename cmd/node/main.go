// Command glitr runs a Glitr node: a personal chat node (`glitr run`) or a
// relay/bootstrap node (`glitr relay`), and talks to a running node through
// its local API (`glitr status`, `glitr id`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=..."; without
// it the module's VCS stamp is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return "dev-" + rev
		}
	}
	return "dev"
}

const usage = `glitr — a decentralized, end-to-end encrypted chat node

Usage:
  glitr [global flags] <command> [flags]

Commands:
  init      create a data directory (config, peer key, API token, store)
  run       start the personal chat node and its local web UI
  relay     start a relay/bootstrap node (no chat state)
  status    show the running node's status
  id        print the running node's peer ID and addresses
  version   print the version of this binary and of the running node

Chat (through the running node's local API):
  card                 print this device's contact card (give it to a contact)
  contact add CARD     add a contact from their card
  contacts             list contacts with their safety numbers
  chat new ACCOUNT...  start a conversation with contacts (--title T)
  chats                list conversations
  send CONV TEXT...    send a message (CONV: an id or a unique prefix)
  log CONV             show recent messages (-n N, --follow)
  read CONV            mark a conversation read (sends a read receipt)

People:
  account setup --name N   finish setting up a new account (prints the recovery words once;
                           --passphrase-stdin protects the keyring with a passphrase)
  unlock                   unlock a passphrase-protected node (passphrase on standard input)
  invite                   print a one-time invite link (--ttl D, --qr FILE.png|FILE.svg)
  accept LINK              accept an invite: the inviter becomes a contact, with a 1:1 chat
  group create ACCOUNT...  start a group (--title T); group add|remove CONV ACCOUNT,
                           group leave CONV, group title CONV TITLE

Devices:
  devices                  list this account's devices
  device link-code         print a one-time code that links a new device (10 minutes)
  link CODE                on a fresh node: become a device of the code's account
  device revoke DEVICE     remove a device: it reads nothing new, its messages are refused
  backup FILE              write an encrypted backup (account key, contacts, conversations)
  restore FILE             on a fresh node: bring the account back (24 words on stdin)

Global flags:
  --data DIR          data directory (default $GLITR_DATA or the user config dir)
  --log-level LEVEL   debug, info, warn or error (default info)
  --log-format FMT    text or json (default text)

Run 'glitr <command> -h' for a command's flags.
`

// exitError carries a process exit code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	bridgeLibp2pLogs = true
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "glitr:", err)
		os.Exit(1)
	}
}

type globals struct {
	data      string
	logLevel  string
	logFormat string
	stdin     io.Reader // os.Stdin; tests leave it empty
	stdout    io.Writer
	stderr    io.Writer
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

// bridgeLibp2pLogs sends libp2p's own log records through the node's
// logger, so --log-format applies to every line. Only the real process sets
// it: libp2p binds each of its loggers to the handler once, process-wide,
// which in-process tests running several nodes must not share.
var bridgeLibp2pLogs bool

func (g *globals) dataDir() (string, error) {
	if g.data != "" {
		return g.data, nil
	}
	return defaultDataDir()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var stdin io.Reader = strings.NewReader("")
	if f, ok := stdout.(*os.File); ok && f == os.Stdout {
		stdin = os.Stdin
	}
	return runIO(ctx, args, stdin, stdout, stderr)
}

// runIO is run with an explicit standard input (tests feed passphrases and
// recovery words through it).
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("glitr", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&g.data, "data", "", "data directory")
	fs.StringVar(&g.logLevel, "log-level", "info", "log level")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitError{2}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, *globals, []string) error{
		"init":     cmdInit,
		"run":      cmdRun,
		"relay":    cmdRelay,
		"status":   cmdStatus,
		"id":       cmdID,
		"version":  cmdVersion,
		"card":     cmdCard,
		"contact":  cmdContact,
		"contacts": cmdContacts,
		"chat":     cmdChat,
		"chats":    cmdChats,
		"send":     cmdSend,
		"log":      cmdLog,
		"read":     cmdRead,
		"account":  cmdAccount,
		"unlock":   cmdUnlock,
		"invite":   cmdInvite,
		"accept":   cmdAccept,
		"group":    cmdGroup,
		"devices":  cmdDevices,
		"device":   cmdDevice,
		"link":     cmdLink,
		"backup":   cmdBackup,
		"restore":  cmdRestore,
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "glitr: unknown command %q\n\n%s", cmd, usage)
		return exitError{2}
	}
	return f(ctx, g, rest)
}

// newFlagSet makes a subcommand's flag set that also accepts the global
// flags after the command name (`glitr run --data x`).
func newFlagSet(g *globals, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("glitr "+name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	fs.StringVar(&g.data, "data", g.data, "data directory")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "log level: debug, info, warn, error")
	fs.StringVar(&g.logFormat, "log-format", g.logFormat, "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(g.stderr, "Usage: glitr %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{0}
		}
		return exitError{2}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitError{2}
	}
	return nil
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// shutdownBudget is how long a clean shutdown may take before the process
// exits anyway.
const shutdownBudget = 2 * time.Second
