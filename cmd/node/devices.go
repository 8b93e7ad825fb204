package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/glitr-chat/glitr/webui"
)

// Device commands: the device list, link codes, linking, revocation.

// deviceCommands: the device list, link codes, linking, revocation,
// backup and restore.
func deviceCommands() []command {
	const g = "Devices"
	return []command{
		{name: "devices", synopsis: "devices", summary: "list this account's devices", group: g, api: true, setup: noFlags(runDevices)},
		{name: "device link-code", synopsis: "device link-code", summary: "print a one-time code that links a new device (10 minutes)", group: g, api: true, setup: noFlags(runLinkCode)},
		{name: "link", synopsis: "link CODE", summary: "on a fresh node: become a device of the code's account", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runLink)},
		{name: "device revoke", synopsis: "device revoke DEVICE", summary: "remove a device: it reads nothing new, its messages are refused", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runRevoke)},
		{name: "backup", synopsis: "backup FILE", summary: "write an encrypted backup (account key, contacts, conversations)", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runBackup)},
		{name: "restore", synopsis: "restore FILE", summary: "on a fresh node: bring the account back (24 words on stdin)", group: g, minArgs: 1, maxArgs: 1, api: true, setup: noFlags(runRestore)},
	}
}

func runDevices(ctx context.Context, x *call) error {
	var ds []webui.Device
	if err := x.api.get(ctx, "/api/v1/devices", &ds); err != nil {
		return err
	}
	for _, d := range ds {
		state := "offline"
		switch {
		case d.Revoked:
			state = "revoked"
		case d.Self:
			state = "this device"
		case d.Online:
			state = "online"
		}
		fmt.Fprintf(x.g.stdout, "%s  %-20s added %s  %s\n", d.Device, d.Name, d.Added.Local().Format(time.DateOnly), state)
	}
	return nil
}

func runLinkCode(ctx context.Context, x *call) error {
	var code webui.Invite
	if err := x.api.post(ctx, "/api/v1/devices/link-code", map[string]string{}, &code); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, code.Link)
	fmt.Fprintf(x.g.stderr, "one-time code, valid until %s; on the new device (a fresh node) run: glitr link CODE\n", code.Expires.Local().Format(time.TimeOnly))
	return nil
}

func runRevoke(ctx context.Context, x *call) error {
	if err := x.api.do(ctx, http.MethodDelete, "/api/v1/devices/"+url.PathEscape(x.arg(0)), nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, "revoked: it reads nothing sent from now on, and its new messages are refused")
	return nil
}

func runLink(ctx context.Context, x *call) error {
	if err := x.api.post(ctx, "/api/v1/link", map[string]string{"code": x.arg(0)}, nil); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, "linked: this node is now a device of that account; conversations and their history are arriving")
	return nil
}

func runBackup(ctx context.Context, x *call) error {
	data, err := x.api.raw(ctx, "/api/v1/backup")
	if err != nil {
		return err
	}
	if err := writeFileExclusive(x.arg(0), data); err != nil {
		return err
	}
	fmt.Fprintf(x.g.stdout, "backup written to %s (%d bytes), encrypted under your 24 recovery words\n", x.arg(0), len(data))
	return nil
}

func runRestore(ctx context.Context, x *call) error {
	data, err := os.ReadFile(x.arg(0))
	if err != nil {
		return err
	}
	words, err := readLine(x.g)
	if err != nil {
		return fmt.Errorf("the 24 recovery words go on standard input: %w", err)
	}
	if err := x.api.post(ctx, "/api/v1/restore", map[string]any{"words": words, "backup": data}, nil); err != nil {
		return err
	}
	fmt.Fprintln(x.g.stdout, "restored: same account, contacts and conversations; history is coming back from your contacts (revoke lost devices with `glitr devices` and `glitr device revoke`)")
	return nil
}

// writeFileExclusive writes a new 0600 file and refuses to overwrite one.
func writeFileExclusive(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
