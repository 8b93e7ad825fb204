package node

import (
	"context"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/webui"
)

var _ webui.AttachmentBackend = (*Node)(nil)

// filesTarget is messageTarget for the attachment API, which a node
// without the attachment service does not offer.
func (n *Node) filesTarget(id, msg string) (*Chat, *conversation, crdt.MsgID, error) {
	c, conv, mid, err := n.messageTarget(id, msg)
	if err == nil && c.files == nil {
		err = webui.ErrUnavailable
	}
	return c, conv, mid, err
}

// PostAttachment implements webui.AttachmentBackend.
func (n *Node) PostAttachment(ctx context.Context, id string, up webui.AttachmentUpload) (webui.Message, bool, error) {
	c, err := n.chat()
	if err != nil {
		return webui.Message{}, false, err
	}
	conv, err := c.resolve(id)
	if err != nil {
		return webui.Message{}, false, apiErr(err)
	}
	if c.files == nil {
		return webui.Message{}, false, webui.ErrUnavailable
	}
	var reply *crdt.MsgID
	if up.ReplyTo != "" {
		m, err := parseMsgID(up.ReplyTo)
		if err != nil {
			return webui.Message{}, false, err
		}
		reply = &m
	}
	mid, created, err := c.files.Post(ctx, conv.hexID, up, reply)
	if err != nil {
		return webui.Message{}, false, apiErr(err)
	}
	conv.mu.Lock()
	defer conv.mu.Unlock()
	pos, _ := conv.state.Position(mid)
	v, _ := conv.state.Message(mid)
	return c.messageView(conv, v, pos), created, nil
}

// AttachmentFile implements webui.AttachmentBackend.
func (n *Node) AttachmentFile(ctx context.Context, id, msg string, thumb bool) (webui.AttachmentFile, error) {
	c, conv, mid, err := n.filesTarget(id, msg)
	if err != nil {
		return webui.AttachmentFile{}, err
	}
	return c.files.File(ctx, conv.hexID, mid, thumb)
}

// FetchAttachment implements webui.AttachmentBackend.
func (n *Node) FetchAttachment(ctx context.Context, id, msg string) (webui.AttachmentStatus, error) {
	c, conv, mid, err := n.filesTarget(id, msg)
	if err != nil {
		return webui.AttachmentStatus{}, err
	}
	return c.files.Fetch(ctx, conv.hexID, mid)
}

// CancelFetch implements webui.AttachmentBackend.
func (n *Node) CancelFetch(ctx context.Context, id, msg string) (webui.AttachmentStatus, error) {
	c, conv, mid, err := n.filesTarget(id, msg)
	if err != nil {
		return webui.AttachmentStatus{}, err
	}
	return c.files.Cancel(ctx, conv.hexID, mid)
}

// AttachmentStatus implements webui.AttachmentBackend.
func (n *Node) AttachmentStatus(ctx context.Context, id, msg string) (webui.AttachmentStatus, error) {
	c, conv, mid, err := n.filesTarget(id, msg)
	if err != nil {
		return webui.AttachmentStatus{}, err
	}
	return c.files.Status(ctx, conv.hexID, mid)
}
