package node

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/glitr-chat/glitr/node/mailbox"
)

// MailboxDirName is the relay's mailbox store inside the data directory
// (a pebble database of its own: deposits are fsynced one by one, which
// the node's store need not pay for).
const MailboxDirName = "mailbox"

// relayMailboxes runs the mailbox service of a relay whose config offers
// it.
type relayMailboxes struct {
	store *mailbox.Store
	svc   *mailbox.Service
}

func (n *Node) startMailboxService() error {
	m := n.Config.Mailbox
	if n.Config.Profile != ProfileRelay || !m.Service {
		return nil
	}
	lim := mailbox.Limits{
		MailboxBytes: m.MaxMailboxMB << 20, MailboxEnvelopes: m.MaxMailboxMessages,
		TotalBytes: m.MaxStorageMB << 20, Mailboxes: m.MaxMailboxes, Retention: time.Duration(m.Retention),
	}
	st, err := mailbox.OpenStore(filepath.Join(n.Dir.Path, MailboxDirName), lim, n.log)
	if err != nil {
		return fmt.Errorf("open mailbox store: %w", err)
	}
	svc, err := mailbox.NewService(n.Host, st, mailbox.Options{
		PeerBytes: m.DepositorMBPerHour << 20, AddrBytes: 4 * m.DepositorMBPerHour << 20,
		Penalize: n.Penalize, Logger: n.log,
	})
	if err != nil {
		st.Close()
		return fmt.Errorf("start mailbox service: %w", err)
	}
	n.mailboxes = &relayMailboxes{store: st, svc: svc}
	u := st.Usage()
	n.log.Info("offering mailboxes", "mailboxes", u.Mailboxes, "stored", u.Bytes, "limit", lim.TotalBytes)
	return nil
}

func (r *relayMailboxes) close() error {
	if r == nil {
		return nil
	}
	_ = r.svc.Close()
	return r.store.Close()
}
