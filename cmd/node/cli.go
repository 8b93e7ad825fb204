package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// command is one entry of the CLI's command table. The dispatcher gives
// every command the same treatment: a flag set with the global flags,
// flags accepted anywhere among the arguments (`log CONV -n 20`), the
// positional arguments counted, the API client made, and usage errors
// answered with the synopsis and exit code 2.
type command struct {
	name     string // "log", or "group add" for a subcommand
	synopsis string // what follows "glitr " in the usage line
	summary  string // one line for `glitr help`
	group    string // heading in `glitr help`
	// minArgs and maxArgs bound the positional arguments (maxArgs -1:
	// no bound).
	minArgs, maxArgs int
	// textFrom > 0: the arguments from this position on are message text,
	// taken as they are (a word like "-5" in it is not a flag).
	textFrom int
	// api: the command talks to the running node (call.api is set).
	api bool
	// setup declares the command's flags on fs and returns what runs it.
	setup func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, x *call) error

// noFlags is the setup of a command without flags of its own.
func noFlags(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

// call is one invocation of a command.
type call struct {
	g    *globals
	fs   *flag.FlagSet
	args []string // positional arguments
	api  *client  // for commands with api set
}

func (x *call) arg(i int) string { return x.args[i] }

// text joins the positional arguments from i on with spaces.
func (x *call) text(i int) string { return strings.Join(x.args[i:], " ") }

// usageError prints msg and the command's usage, and exits with code 2.
func (x *call) usageError(msg string) error {
	if msg != "" {
		fmt.Fprintln(x.g.stderr, msg)
	}
	x.fs.Usage()
	return exitError{2}
}

// commands is the command table, in the order `glitr help` shows it.
func commands() []command {
	return slices.Concat(nodeCommands(), chatCommands(), peopleCommands(), deviceCommands())
}

// dispatch runs the command args name (one word, or two for a subcommand).
func dispatch(ctx context.Context, g *globals, args []string) error {
	table := commands()
	var cmd *command
	var rest []string
	if len(args) > 1 {
		if i := slices.IndexFunc(table, func(c command) bool { return c.name == args[0]+" "+args[1] }); i >= 0 {
			cmd, rest = &table[i], args[2:]
		}
	}
	if cmd == nil {
		if i := slices.IndexFunc(table, func(c command) bool { return c.name == args[0] }); i >= 0 {
			cmd, rest = &table[i], args[1:]
		}
	}
	if cmd == nil {
		if subs := subcommands(table, args[0]); len(subs) > 0 {
			what := "a subcommand"
			if len(args) > 1 {
				what = fmt.Sprintf("a known subcommand, not %q", args[1])
			}
			fmt.Fprintf(g.stderr, "glitr %s needs %s:\n", args[0], what)
			for _, c := range subs {
				fmt.Fprintf(g.stderr, "  glitr %s\n", c.synopsis)
			}
			return exitError{2}
		}
		fmt.Fprintf(g.stderr, "glitr: unknown command %q\n\n", args[0])
		printUsage(g.stderr, table)
		return exitError{2}
	}
	return cmd.invoke(ctx, g, rest)
}

func subcommands(table []command, name string) []command {
	var out []command
	for _, c := range table {
		if strings.HasPrefix(c.name, name+" ") {
			out = append(out, c)
		}
	}
	return out
}

func (cmd *command) invoke(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, cmd.name, cmd.synopsis)
	run := cmd.setup(fs)
	pos, err := parseArgs(fs, args, cmd.textFrom)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{0}
		}
		return exitError{2} // the flag package has printed the error and the usage
	}
	x := &call{g: g, fs: fs, args: pos}
	switch {
	case len(pos) < cmd.minArgs:
		return x.usageError(fmt.Sprintf("glitr %s: %s", cmd.name, countMessage(cmd, len(pos))))
	case cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs:
		return x.usageError(fmt.Sprintf("glitr %s: unexpected arguments: %s", cmd.name, strings.Join(pos[cmd.maxArgs:], " ")))
	}
	if cmd.api {
		if x.api, err = newClient(g); err != nil {
			return err
		}
	}
	return run(ctx, x)
}

func countMessage(cmd *command, got int) string {
	want := fmt.Sprintf("%d", cmd.minArgs)
	switch {
	case cmd.maxArgs < 0:
		want = "at least " + want
	case cmd.maxArgs != cmd.minArgs:
		want = fmt.Sprintf("%d to %d", cmd.minArgs, cmd.maxArgs)
	}
	noun := "arguments"
	if cmd.minArgs == 1 && cmd.maxArgs == 1 {
		noun = "argument"
	}
	return fmt.Sprintf("needs %s %s, got %d", want, noun, got)
}

// parseArgs parses flags anywhere among args and returns the positional
// arguments in order. After "--", and from positional argument textFrom
// on (when > 0), everything is positional.
func parseArgs(fs *flag.FlagSet, args []string, textFrom int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
		if textFrom > 0 && len(pos) > textFrom {
			return append(pos, args...), nil
		}
	}
}

// printUsage writes the overview of every command, by group.
func printUsage(w io.Writer, table []command) {
	fmt.Fprint(w, "glitr — a decentralized, end-to-end encrypted chat node\n\n")
	fmt.Fprint(w, "Usage:\n  glitr [global flags] <command> [arguments and flags, in any order]\n")
	group := "-"
	for _, c := range table {
		if c.group != group {
			group = c.group
			heading := "Commands"
			if group != "" {
				heading = group + " (through the running node's local API)"
			}
			fmt.Fprintf(w, "\n%s:\n", heading)
		}
		fmt.Fprintf(w, "  %-34s %s\n", c.synopsis, c.summary)
	}
	fmt.Fprint(w, `
Global flags:
  --data DIR          data directory (default $GLITR_DATA or the user config dir)
  --log-level LEVEL   debug, info, warn or error (default info)
  --log-format FMT    text or json (default text)

Run 'glitr <command> -h' for a command's flags. A message text that starts
with "-" goes after "--": glitr send CONV -- -5 degrees outside.
`)
}
