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

func cmdDevices(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "devices", "devices")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	var ds []webui.Device
	if err := c.get(ctx, "/api/v1/devices", &ds); err != nil {
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
		fmt.Fprintf(g.stdout, "%s  %-20s added %s  %s\n", d.Device, d.Name, d.Added.Local().Format(time.DateOnly), state)
	}
	return nil
}

func cmdDevice(ctx context.Context, g *globals, args []string) error {
	const use = "Usage: glitr device link-code | revoke DEVICE"
	if len(args) == 0 {
		fmt.Fprintln(g.stderr, use)
		return exitError{2}
	}
	fs := newFlagSet(g, "device "+args[0], "device "+args[0])
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{2}
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	switch {
	case args[0] == "link-code" && fs.NArg() == 0:
		var code webui.Invite
		if err := c.post(ctx, "/api/v1/devices/link-code", map[string]string{}, &code); err != nil {
			return err
		}
		fmt.Fprintln(g.stdout, code.Link)
		fmt.Fprintf(g.stderr, "one-time code, valid until %s; on the new device (a fresh node) run: glitr link CODE\n", code.Expires.Local().Format(time.TimeOnly))
		return nil
	case args[0] == "revoke" && fs.NArg() == 1:
		if err := c.do(ctx, http.MethodDelete, "/api/v1/devices/"+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		fmt.Fprintln(g.stdout, "revoked: it reads nothing sent from now on, and its new messages are refused")
		return nil
	}
	fmt.Fprintln(g.stderr, use)
	return exitError{2}
}

func cmdLink(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "link", "link CODE")
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
	if err := c.post(ctx, "/api/v1/link", map[string]string{"code": fs.Arg(0)}, nil); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "linked: this node is now a device of that account; conversations and their history are arriving")
	return nil
}

func cmdBackup(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "backup", "backup FILE")
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
	data, err := c.raw(ctx, "/api/v1/backup")
	if err != nil {
		return err
	}
	if err := writeFileExclusive(fs.Arg(0), data); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "backup written to %s (%d bytes), encrypted under your 24 recovery words\n", fs.Arg(0), len(data))
	return nil
}

func cmdRestore(ctx context.Context, g *globals, args []string) error {
	fs := newFlagSet(g, "restore", "restore FILE  (the 24 recovery words on standard input)")
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError{2}
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	words, err := readLine(g)
	if err != nil {
		return fmt.Errorf("the 24 recovery words go on standard input: %w", err)
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	if err := c.post(ctx, "/api/v1/restore", map[string]any{"words": words, "backup": data}, nil); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "restored: same account, contacts and conversations; history is coming back from your contacts (revoke lost devices with `glitr devices` and `glitr device revoke`)")
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
