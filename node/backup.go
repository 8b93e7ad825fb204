package node

import (
	"context"
	"fmt"

	"github.com/glitr-chat/glitr/node/devices"
)

// Backup and restore: the node's side (the format and the rejoin protocol
// are node/devices). Restoring adopts the backup's account like a link and
// then seeds the new account DAG from the backup.

// ErrNoRecoveryKey: the account was never set up on this device.
var ErrNoRecoveryKey = devices.ErrNoRecoveryKey

// Backup implements webui.BackupBackend.
func (n *Node) Backup(ctx context.Context) ([]byte, error) {
	c, err := n.readyChat()
	if err != nil {
		return nil, devicesErr(err)
	}
	b, err := c.devices.Backup(ctx)
	return b, devicesErr(err)
}

// Restore brings an account back on this fresh node from a backup and its
// 24 recovery words. Wrong words or a damaged file give a precise error
// and change nothing. The node then asks contacts to let it back into
// each conversation. It implements webui.BackupBackend.
func (n *Node) Restore(ctx context.Context, words string, data []byte) error {
	return devicesErr(n.restore(ctx, words, data))
}

func (n *Node) restore(ctx context.Context, words string, data []byte) error {
	r, err := devices.OpenBackup(words, data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	c, err := n.readyChat()
	if err != nil {
		return err
	}
	if !(devicesChat{c}).Fresh() {
		return ErrNotFresh
	}
	bundle, rejoin, err := r.RestoreBundle(c.id.DeviceID(), c.now())
	if err != nil {
		return err
	}
	if err := n.adoptAccount(ctx, r.Account.ID(), bundle, rejoin); err != nil {
		return err
	}
	c, err = n.readyChat()
	if err != nil {
		return err
	}
	// The account DAG starts anew, seeded from the backup.
	batches, err := r.State.AccountOps()
	if err != nil {
		return err
	}
	for _, ops := range batches {
		if err := c.commitAccount(ctx, ops...); err != nil {
			return err
		}
	}
	n.log.Info("account restored from a backup", "account", r.Account.ID().String()[:16], "conversations", len(rejoin))
	return nil
}
