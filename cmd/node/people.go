package main

import (
	"bufio"
	"context"
	"flag"
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

// peopleCommands: account set-up, unlock, invites, groups.
func peopleCommands() []command {
	const g = "People"
	return []command{
		{name: "account setup", synopsis: "account setup --name N [--passphrase-stdin]", summary: "finish setting up a new account (prints the recovery words once)", group: g, api: true, setup: setupAccount},
		{name: "unlock", synopsis: "unlock", summary: "unlock a passphrase-protected node (passphrase on standard input)", group: g, api: true, setup: noFlags(runUnlock)},
		{name: "invite", synopsis: "invite [--ttl D] [--qr FILE.png|FILE.svg]", summary: "print a one-time invite link", group: g, api: true, setup: setupInvite},
		{name: "accept", synopsis: "accept LINK", summary: "accept an invite: the inviter becomes a contact, with a 1:1 chat", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runAccept)},
		{name: "group create", synopsis: "group create [--title T] ACCOUNT...", summary: "start a group with contacts", group: g, minArgs: 1, maxArgs: -1, api: true, setup: setupChatNew},
		{name: "group add", synopsis: "group add CONV ACCOUNT", summary: "add a contact to a group (admins)", group: g, minArgs: 2, maxArgs: 2, api: true, setup: noFlags(groupAction("add"))},
		{name: "group remove", synopsis: "group remove CONV ACCOUNT", summary: "remove a member (admins)", group: g, minArgs: 2, maxArgs: 2, api: true, setup: noFlags(groupAction("remove"))},
		{name: "group leave", synopsis: "group leave CONV", summary: "leave a group", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(groupAction("leave"))},
		{name: "group title", synopsis: "group title CONV TITLE", summary: "rename a group", group: g, minArgs: 2, maxArgs: -1, textFrom: 1, api: true, setup: noFlags(groupAction("title"))},
	}
}

func setupAccount(fs *flag.FlagSet) runFunc {
	name := fs.String("name", "", "display name shown to contacts")
	fromStdin := fs.Bool("passphrase-stdin", false, "read a passphrase for the keyring from the first line of standard input")
	return func(ctx context.Context, x *call) error {
		var pass string
		if *fromStdin {
			var err error
			if pass, err = readLine(x.g); err != nil {
				return err
			}
		}
		var out struct {
			RecoveryWords []string `json:"recoveryWords"`
		}
		if err := x.api.post(ctx, "/api/v1/account", map[string]string{"name": *name, "passphrase": pass}, &out); err != nil {
			return err
		}
		w := x.g.stdout
		fmt.Fprintf(w, "Account ready. Your recovery words (write them down; they are shown only once):\n\n")
		for i, word := range out.RecoveryWords {
			fmt.Fprintf(w, "%2d. %-10s", i+1, word)
			if i%4 == 3 {
				fmt.Fprintln(w)
			}
		}
		fmt.Fprintln(w)
		return nil
	}
}

func readLine(g *globals) (string, error) {
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("no passphrase on standard input: %w", err)
	}
	return line, nil
}

func runUnlock(ctx context.Context, x *call) error {
	pass, err := readLine(x.g)
	if err != nil {
		return err
	}
	if err := x.api.post(ctx, "/api/v1/unlock", map[string]string{"passphrase": pass}, nil); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, "unlocked")
	return nil
}

func setupInvite(fs *flag.FlagSet) runFunc {
	ttl := fs.Duration("ttl", 0, "how long the invite stays valid (default one week)")
	qr := fs.String("qr", "", "also write the invite as a QR code to this .png or .svg file")
	return func(ctx context.Context, x *call) error {
		format := ""
		if *qr != "" {
			switch {
			case strings.HasSuffix(*qr, ".png"):
				format = "png"
			case strings.HasSuffix(*qr, ".svg"):
				format = "svg"
			default:
				return x.usageError("--qr must name a .png or .svg file")
			}
		}
		req := map[string]string{}
		if *ttl != 0 {
			req["ttl"] = ttl.String()
		}
		var inv webui.Invite
		if err := x.api.post(ctx, "/api/v1/invites", req, &inv); err != nil {
			return err
		}
		fmt.Fprintln(x.g.stdout, inv.Link)
		fmt.Fprintf(x.g.stderr, "one-time invite, valid until %s; the other side runs: glitr accept LINK\n", inv.Expires.Local().Format(time.DateTime))
		if format != "" {
			img, err := node.InviteQR(inv.Link, format)
			if err != nil {
				return err
			}
			if err := os.WriteFile(*qr, img, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(x.g.stderr, "QR code written to %s\n", *qr)
		}
		return nil
	}
}

func runAccept(ctx context.Context, x *call) error {
	var out struct{ Account, Conversation string }
	if err := x.api.post(ctx, "/api/v1/invites/accept", map[string]string{"link": x.arg(0)}, &out); err != nil {
		return err
	}
	fmt.Fprintf(x.g.stdout, "contact %s\nconversation %s\n", out.Account, out.Conversation)
	return nil
}

// groupAction runs one of the group changes that print "done".
func groupAction(action string) runFunc {
	return func(ctx context.Context, x *call) error {
		conv := "/api/v1/conversations/" + url.PathEscape(x.arg(0))
		var err error
		switch action {
		case "add":
			err = x.api.post(ctx, conv+"/members", map[string]string{"account": x.arg(1)}, nil)
		case "remove":
			err = x.api.do(ctx, http.MethodDelete, conv+"/members/"+url.PathEscape(x.arg(1)), nil, nil)
		case "leave":
			err = x.api.post(ctx, conv+"/leave", map[string]string{}, nil)
		case "title":
			err = x.api.put(ctx, conv, map[string]string{"title": x.text(1)})
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(x.g.stdout, "done")
		return nil
	}
}
