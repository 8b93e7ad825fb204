package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/glitr-chat/glitr/node"
	"github.com/glitr-chat/glitr/webui"
)

// People commands: account set-up, unlock, invites, groups. Like the chat
// commands they talk to the running node through its local API.

func cmdAccount(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 || args[0] != "setup" {
		fmt.Fprintln(g.stderr, "Usage: glitr account setup --name NAME [--passphrase-stdin]")
		return exitError{2}
	}
	fs := newFlagSet(g, "account setup", "account setup --name NAME [--passphrase-stdin]")
	name := fs.String("name", "", "display name shown to contacts")
	fromStdin := fs.Bool("passphrase-stdin", false, "read a passphrase for the keyring from the first line of standard input")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var pass string
	if *fromStdin {
		var err error
		if pass, err = readLine(g); err != nil {
			return err
		}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var out struct {
		RecoveryWords []string `json:"recoveryWords"`
	}
	if err := c.post(ctx, "/api/v1/account", map[string]string{"name": *name, "passphrase": pass}, &out); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Account ready. Your recovery words (write them down; they are shown only once):\n\n")
	for i, w := range out.RecoveryWords {
		fmt.Fprintf(g.stdout, "%2d. %-10s", i+1, w)
		if i%4 == 3 {
			fmt.Fprintln(g.stdout)
		}
	}
	fmt.Fprintln(g.stdout)
	return nil
}

func readLine(g *globals) (string, error) {
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("no passphrase on standard input: %w", err)
	}
	return line, nil
}

func cmdUnlock(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "unlock", "unlock  (reads the passphrase from the first line of standard input)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pass, err := readLine(g)
	if err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	if err := c.post(ctx, "/api/v1/unlock", map[string]string{"passphrase": pass}, nil); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "unlocked")
	return nil
}

func cmdInvite(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "invite", "invite [--ttl 168h] [--qr FILE.png|FILE.svg]")
	ttl := fs.Duration("ttl", 0, "how long the invite stays valid (default one week)")
	qr := fs.String("qr", "", "also write the invite as a QR code to this .png or .svg file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	format := ""
	if *qr != "" {
		switch {
		case strings.HasSuffix(*qr, ".png"):
			format = "png"
		case strings.HasSuffix(*qr, ".svg"):
			format = "svg"
		default:
			fmt.Fprintln(g.stderr, "--qr must name a .png or .svg file")
			return exitError{2}
		}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	req := map[string]string{}
	if *ttl != 0 {
		req["ttl"] = ttl.String()
	}
	var inv webui.Invite
	if err := c.post(ctx, "/api/v1/invites", req, &inv); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, inv.Link)
	fmt.Fprintf(g.stderr, "one-time invite, valid until %s; the other side runs: glitr accept LINK\n", inv.Expires.Local().Format(time.DateTime))
	if format != "" {
		img, err := node.InviteQR(inv.Link, format)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*qr, img, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(g.stderr, "QR code written to %s\n", *qr)
	}
	return nil
}

func cmdAccept(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "accept", "accept LINK")
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var out struct{ Account, Conversation string }
	if err := c.post(ctx, "/api/v1/invites/accept", map[string]string{"link": fs.Arg(0)}, &out); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "contact %s\nconversation %s\n", out.Account, out.Conversation)
	return nil
}

func cmdGroup(ctx context.Context, g *globals, args []string) error {
	const use = "Usage: glitr group create [--title T] ACCOUNT... | add CONV ACCOUNT | remove CONV ACCOUNT | leave CONV | title CONV TITLE"
	if len(args) == 0 {
		fmt.Fprintln(g.stderr, use)
		return exitError{2}
	}
	sub, rest := args[0], args[1:]
	if sub == "create" {
		return cmdChat(ctx, g, append([]string{"new"}, rest...))
	}
	fs := newFlagSet(g, "group "+sub, "group "+sub+" ...")
	if err := fs.Parse(rest); err != nil {
		return exitError{2}
	}
	want := map[string]int{"add": 2, "remove": 2, "leave": 1, "title": 2}[sub]
	if want == 0 || fs.NArg() != want {
		fmt.Fprintln(g.stderr, use)
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	conv := "/api/v1/conversations/" + url.PathEscape(fs.Arg(0))
	switch sub {
	case "add":
		err = c.post(ctx, conv+"/members", map[string]string{"account": fs.Arg(1)}, nil)
	case "remove":
		err = c.do(ctx, http.MethodDelete, conv+"/members/"+url.PathEscape(fs.Arg(1)), nil, nil)
	case "leave":
		err = c.post(ctx, conv+"/leave", map[string]string{}, nil)
	case "title":
		err = c.put(ctx, conv, map[string]string{"title": fs.Arg(1)})
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "done")
	return nil
}
