package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
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
