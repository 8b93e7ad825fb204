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
	fs.Usage = func() { printUsage(stderr, commands()) }
	fs.StringVar(&g.data, "data", "", "data directory")
	fs.StringVar(&g.logLevel, "log-level", "info", "log level")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2}
	}
	if fs.NArg() == 0 || fs.Arg(0) == "help" {
		fs.Usage()
		if fs.NArg() == 0 {
			return exitError{2}
		}
		return nil
	}
	return dispatch(ctx, g, fs.Args())
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

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// shutdownBudget is how long a clean shutdown may take before the process
// exits anyway.
const shutdownBudget = 2 * time.Second
