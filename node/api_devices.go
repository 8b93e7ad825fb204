package node

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/glitr-chat/glitr/keyring"
	"github.com/glitr-chat/glitr/webui"
)

// The node answers webui.DevicesBackend: the device list, link codes,
// linking and revocation.

var (
	_ webui.DevicesBackend = (*Node)(nil)
	_ webui.BackupBackend  = (*Node)(nil)
)

// devicesErr is apiErr: one table maps every node error.
func devicesErr(err error) error { return apiErr(err) }

// Devices implements webui.DevicesBackend.
func (n *Node) Devices(ctx context.Context) ([]webui.Device, error) {
	c, err := n.readyChat()
	if err != nil {
		return nil, devicesErr(err)
	}
	out := []webui.Device{}
	for _, d := range c.Devices() {
		out = append(out, webui.Device{Device: d.Device, Name: d.Name, Added: d.Added, Self: d.Self, Online: d.Online, Revoked: d.Revoked})
	}
	return out, nil
}

// CreateLinkCode implements webui.DevicesBackend.
func (n *Node) CreateLinkCode(ctx context.Context) (webui.Invite, error) {
	c, err := n.readyChat()
	if err != nil {
		return webui.Invite{}, devicesErr(err)
	}
	code, err := c.devices.CreateLinkCode(ctx)
	return webui.Invite{Link: code.Link, Token: code.Token, Expires: code.Expires}, devicesErr(err)
}

// RevokeDevice implements webui.DevicesBackend.
func (n *Node) RevokeDevice(ctx context.Context, device string) error {
	c, err := n.readyChat()
	if err != nil {
		return devicesErr(err)
	}
	b, err := hex.DecodeString(device)
	if err != nil || len(b) != 32 {
		return devicesErr(fmt.Errorf("%w: %q is not a device key (64 hex digits)", ErrBadInput, device))
	}
	return devicesErr(c.RevokeDevice(ctx, keyring.DeviceID(b)))
}
