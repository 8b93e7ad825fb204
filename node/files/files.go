// Package files is the attachment service of a personal node. It sends a
// file as a message (the file's chunks in the attachment store, its
// manifest in the message), serves a conversation's files to the
// conversation's current member devices, fetches what the user opens and,
// within the user's cap, what arrives, resumes downloads after a restart,
// and drops the file of a message deleted for everyone.
//
// The format, the store and the transfer are package node/attachments;
// this package decides who may fetch what, and when. It reaches the
// conversations only through Chat, which the node implements.
package files

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/tasks"
	"github.com/glitr-chat/glitr/node/attachments"
	"github.com/glitr-chat/glitr/webui"
)

// Chat is what the service needs from the conversation service.
type Chat interface {
	// PostFile commits msg (which carries an attachment manifest) in conv
	// and returns its id. created is false when clientID named an earlier
	// send, whose id is returned.
	PostFile(ctx context.Context, conv string, msg crdt.Message, clientID string) (id crdt.MsgID, created bool, err error)
	// Attachment returns the manifest a message of conv was posted with,
	// its author and whether it was deleted since; ok is false for an
	// unknown conversation or message, or one without an attachment.
	Attachment(conv string, id crdt.MsgID) (manifest []byte, author crdt.AccountID, deleted, ok bool)
	// EachAttachment calls fn for every message with an attachment of
	// every conversation (deleted ones included).
	EachAttachment(fn func(conv string, id crdt.MsgID, manifest []byte, deleted bool))
	// IsMemberDevice reports whether p is a current member device of conv
	// (a removed member's or a revoked device's peer is not).
	IsMemberDevice(conv string, p peer.ID) bool
	// MemberPeers lists the peers of conv's member devices other than
	// this one, the author's devices first, connected ones before others.
	MemberPeers(conv string, author crdt.AccountID) []peer.ID
}

// Options configure a Service.
type Options struct {
	// Dir keeps the chunk bytes in files (docs/attachments.md §6); the
	// bookkeeping goes to the datastore.
	Dir string
	// Quota caps the sealed bytes stored (0: attachments.DefaultQuota).
	Quota uint64
	// AutoDownload returns the user's cap on files fetched without
	// asking (padded bytes; 0: none). Thumbnails are always fetched.
	AutoDownload func() uint64
	// Penalize is the node's penalty box (hostile chunk senders, bad
	// requests).
	Penalize func(p peer.ID, amount float64, reason string)
	// Changed is called when what the API shows of a message's file
	// changed (a download finished or failed), so the UI refetches it.
	Changed func(conv string, id crdt.MsgID)
	// Now is the clock (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// FetchOptions and ServerOptions tune the transfer (tests).
	Fetch  attachments.FetchOptions
	Server attachments.ServerOptions
}

// pendingTTL is how long a file imported for a send stays held before its
// message names it: a crash between the import and the commit leaves no
// file held for ever.
const pendingTTL = 24 * time.Hour

// Service is the attachment service; see the package doc.
type Service struct {
	chat    Chat
	store   *attachments.Store
	server  *attachments.Server
	fetcher *attachments.Fetcher
	d       ds.Batching
	opts    Options
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     tasks.Group

	mu   sync.Mutex
	jobs map[string]*job // running or failed downloads, by owner
}

// job is one download of a file (or thumbnail) for a message.
type job struct {
	cancel context.CancelFunc // nil once it ended
	have   uint64
	total  uint64
	err    error
}

// New opens the store on d and registers the chunk protocol on h.
func New(ctx context.Context, h host.Host, d ds.Batching, chat Chat, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AutoDownload == nil {
		opts.AutoDownload = func() uint64 { return 0 }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := attachments.OpenStore(ctx, d, attachments.StoreOptions{Dir: opts.Dir, Quota: opts.Quota, Logger: log})
	if err != nil {
		return nil, err
	}
	s := &Service{chat: chat, store: st, d: d, opts: opts, log: log, jobs: map[string]*job{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	so := opts.Server
	so.Penalize, so.Logger = opts.Penalize, log
	s.server = attachments.NewServer(h, st, attachments.AccessFunc(s.mayFetch), so)
	fo := opts.Fetch
	fo.Penalize, fo.Logger = opts.Penalize, log
	s.fetcher = attachments.NewFetcher(h, st, fo)
	return s, nil
}

// Start checks the store against the conversations (run it once they are
// loaded) and resumes the downloads a restart cut short, in the
// background.
func (s *Service) Start() {
	s.wg.Go(func() {
		if _, err := s.store.Sweep(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("attachments: sweep", "err", err)
		}
		s.reconcile(s.ctx)
		s.resume(s.ctx)
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				if _, err := s.store.Expire(s.ctx, s.opts.Now()); err != nil && s.ctx.Err() == nil {
					s.log.Warn("attachments: expire", "err", err)
				}
			}
		}
	})
}

// Close stops the downloads (what arrived is kept) and the server.
func (s *Service) Close() {
	s.cancel()
	s.wg.Close()
	s.server.Close()
}

// Store is the attachment store (benchmarks, tests).
func (s *Service) Store() *attachments.Store { return s.store }

// owner names the hold of a message on its file: "<conv>|<msg id>".
func owner(conv string, id crdt.MsgID) string { return conv + "|" + id.String() }

// parseOwner reads an owner name back; a pending send's is not a
// message's.
func parseOwner(o string) (conv string, id crdt.MsgID, ok bool) {
	c, m, found := strings.Cut(o, "|")
	if !found || c == "pending" {
		return "", crdt.MsgID{}, false
	}
	id, err := crdt.ParseMsgID(m)
	return c, id, err == nil
}

// mayFetch: a peer may fetch a file when it is a current member device of
// a conversation in which a message names the file.
func (s *Service) mayFetch(p peer.ID, root attachments.Ref) bool {
	owners, err := s.store.Owners(s.ctx, root)
	if err != nil {
		return false
	}
	for _, o := range owners {
		if conv, _, ok := parseOwner(o); ok && s.chat.IsMemberDevice(conv, p) {
			return true
		}
	}
	return false
}

// Post stores up's file (and thumbnail) and posts the message that carries
// it. Nothing larger than a chunk of the file is held in memory.
func (s *Service) Post(ctx context.Context, conv string, up webui.AttachmentUpload, replyTo *crdt.MsgID) (crdt.MsgID, bool, error) {
	if up.File == nil {
		return crdt.MsgID{}, false, fmt.Errorf("%w: no file", webui.ErrBadRequest)
	}
	if len(up.Caption) > crdt.MaxTextLen {
		return crdt.MsgID{}, false, webui.WithCode(webui.CodeMessageTooLong, fmt.Errorf("%w: caption of %d bytes > %d", webui.ErrBadRequest, len(up.Caption), crdt.MaxTextLen))
	}
	pending := "pending|" + rand.Text()
	expires := s.opts.Now().Add(pendingTTL)
	var thumb *attachments.Thumb
	var tm attachments.Manifest
	if len(up.Thumb) > 0 {
		var err error
		tm, err = s.store.Import(ctx, bytes.NewReader(up.Thumb), attachments.Meta{
			Size: int64(len(up.Thumb)), Name: "thumbnail", Type: up.ThumbType, Width: up.ThumbWidth, Height: up.ThumbHeight,
			Owner: pending, Expires: expires,
		})
		if err != nil {
			return crdt.MsgID{}, false, apiError(fmt.Errorf("thumbnail: %w", err))
		}
		if thumb, err = attachments.ThumbOf(tm); err != nil {
			_ = s.store.ReleaseManifest(ctx, tm, pending)
			return crdt.MsgID{}, false, apiError(err)
		}
	}
	m, err := s.store.Import(ctx, up.File, attachments.Meta{
		Size: up.Size, Name: up.Name, Type: up.Type, Width: up.Width, Height: up.Height,
		DurationMS: up.DurationMS, Waveform: up.Waveform, Thumb: thumb, Owner: pending, Expires: expires,
	})
	if err != nil {
		if thumb != nil {
			_ = s.store.ReleaseManifest(context.WithoutCancel(ctx), tm, pending)
		}
		return crdt.MsgID{}, false, apiError(err)
	}
	// Past here ctx may end (the browser closed): finish what was begun.
	bg := context.WithoutCancel(ctx)
	defer func() { _ = s.store.ReleaseManifest(bg, m, pending) }()
	enc, err := attachments.EncodeManifest(m)
	if err != nil {
		return crdt.MsgID{}, false, apiError(err)
	}
	id, created, err := s.chat.PostFile(ctx, conv, crdt.Message{Attachment: enc, Text: up.Caption, ReplyTo: replyTo}, up.ClientID)
	if err != nil {
		return crdt.MsgID{}, false, err
	}
	if created {
		if err := s.hold(bg, conv, id, m); err != nil {
			// The message is out; the next start's check holds the file.
			s.log.Warn("attachments: hold of a sent file", "err", err)
		}
	}
	return id, created, nil
}

// hold makes message id of conv an owner of m's file and thumbnail (the
// parts the store records).
func (s *Service) hold(ctx context.Context, conv string, id crdt.MsgID, m attachments.Manifest) error {
	o := owner(conv, id)
	err := s.store.Hold(ctx, m.Root, o, time.Time{})
	if errors.Is(err, attachments.ErrNotHeld) {
		err = nil
	}
	if m.Thumb != nil {
		if terr := s.store.Hold(ctx, m.Thumb.Root, o, time.Time{}); terr != nil && !errors.Is(terr, attachments.ErrNotHeld) {
			err = errors.Join(err, terr)
		}
	}
	return err
}

// manifest looks up and decodes the attachment of a message that is not
// deleted.
func (s *Service) manifest(conv string, id crdt.MsgID) (attachments.Manifest, crdt.AccountID, error) {
	enc, author, deleted, ok := s.chat.Attachment(conv, id)
	switch {
	case !ok:
		return attachments.Manifest{}, author, webui.WithCode(webui.CodeNoAttachment, fmt.Errorf("%w: message %s has no attachment", webui.ErrNotFound, id))
	case deleted:
		return attachments.Manifest{}, author, webui.WithCode(webui.CodeMessageDeleted, fmt.Errorf("%w: message %s was deleted", webui.ErrNotFound, id))
	}
	m, err := attachments.DecodeManifest(enc)
	if err != nil {
		return m, author, webui.WithCode(webui.CodeNoAttachment, fmt.Errorf("%w: the attachment of %s is unreadable: %w", webui.ErrNotFound, id, err))
	}
	return m, author, nil
}

// Arrived is called when messages with attachments were applied in conv
// (from any device, this one's included): thumbnails are fetched at once,
// files within the auto-download cap too.
func (s *Service) Arrived(conv string, ids []crdt.MsgID) {
	for _, id := range ids {
		m, _, err := s.manifest(conv, id)
		if err != nil {
			continue
		}
		held, _ := s.store.HasFile(s.ctx, m.Root)
		if held {
			// This device sent it, or another message carries it.
			_ = s.hold(s.ctx, conv, id, m)
			continue
		}
		plan := attachments.AutoDownload{MaxBytes: s.opts.AutoDownload()}.Plan(m)
		if plan.File {
			s.start(conv, id, true)
		} else if plan.Thumb {
			s.startThumb(conv, id, m)
		}
	}
}

// Deleted is called when messages of conv were deleted for everyone: their
// files go (unless another message still carries the same file, a
// forward), and so do running downloads.
func (s *Service) Deleted(conv string, ids []crdt.MsgID) {
	for _, id := range ids {
		s.drop(s.ctx, conv, id)
	}
}

func (s *Service) drop(ctx context.Context, conv string, id crdt.MsgID) {
	enc, _, deleted, ok := s.chat.Attachment(conv, id)
	if !ok || !deleted {
		return
	}
	o := owner(conv, id)
	s.mu.Lock()
	if j := s.jobs[o]; j != nil && j.cancel != nil {
		j.cancel()
	}
	delete(s.jobs, o)
	s.mu.Unlock()
	_ = s.d.Delete(ctx, wantKey(o))
	m, err := attachments.DecodeManifest(enc)
	if err != nil {
		return
	}
	if err := s.store.ReleaseManifest(ctx, m, o); err != nil {
		s.log.Warn("attachments: drop of a deleted file", "err", err)
	}
}

// reconcile checks every message with an attachment against the store:
// a deleted one's file goes, a held file gets its message as owner (a
// crash between a send's commit and its hold), and a hold whose message
// is gone (a send that crashed before its commit) is released.
func (s *Service) reconcile(ctx context.Context) {
	live := map[string]bool{}
	s.chat.EachAttachment(func(conv string, id crdt.MsgID, enc []byte, deleted bool) {
		if ctx.Err() != nil {
			return
		}
		if deleted {
			s.drop(ctx, conv, id)
			return
		}
		live[owner(conv, id)] = true
		if m, err := attachments.DecodeManifest(enc); err == nil {
			if ok, _ := s.store.HasFile(ctx, m.Root); ok {
				_ = s.hold(ctx, conv, id, m)
			}
		}
	})
	type hold struct {
		root  attachments.Ref
		owner string
	}
	var stale []hold
	_ = s.store.Held(ctx, func(root attachments.Ref, o string) error {
		if _, _, ok := parseOwner(o); ok && !live[o] {
			stale = append(stale, hold{root, o})
		}
		return nil
	})
	for _, h := range stale {
		if _, err := s.store.Release(ctx, h.root, h.owner); err != nil && !errors.Is(err, attachments.ErrNotHeld) {
			s.log.Warn("attachments: release of a stale hold", "err", err)
		}
	}
}

// Downloads the user asked for are remembered until complete, so that a
// restart resumes them: <wantPrefix><hex owner>.
const wantPrefix = "/files/want/"

func wantKey(o string) ds.Key { return ds.NewKey(wantPrefix + fmt.Sprintf("%x", o)) }

func (s *Service) resume(ctx context.Context) {
	res, err := s.d.Query(ctx, query.Query{Prefix: wantPrefix, KeysOnly: true})
	if err != nil {
		return
	}
	var owners []string
	for r := range res.Next() {
		var b []byte
		if r.Error == nil {
			if _, err := fmt.Sscanf(strings.TrimPrefix(r.Key, wantPrefix), "%x", &b); err == nil {
				owners = append(owners, string(b))
			}
		}
	}
	res.Close()
	for _, o := range owners {
		if conv, id, ok := parseOwner(o); ok {
			s.start(conv, id, false)
		} else {
			_ = s.d.Delete(ctx, wantKey(o))
		}
	}
}

// Fetch starts downloading a message's file unless it is complete or
// already downloading, and returns its status.
func (s *Service) Fetch(ctx context.Context, conv string, id crdt.MsgID) (webui.AttachmentStatus, error) {
	if _, _, err := s.manifest(conv, id); err != nil {
		return webui.AttachmentStatus{}, err
	}
	s.start(conv, id, true)
	return s.Status(ctx, conv, id)
}

// Cancel stops a running download; what arrived stays for a later Fetch.
func (s *Service) Cancel(ctx context.Context, conv string, id crdt.MsgID) (webui.AttachmentStatus, error) {
	if _, _, err := s.manifest(conv, id); err != nil {
		return webui.AttachmentStatus{}, err
	}
	o := owner(conv, id)
	_ = s.d.Delete(ctx, wantKey(o))
	s.mu.Lock()
	if j := s.jobs[o]; j != nil {
		if j.cancel != nil {
			j.cancel()
		}
		delete(s.jobs, o)
	}
	s.mu.Unlock()
	return s.Status(ctx, conv, id)
}

// retry spaces the attempts of a download that found no member with the
// file (nobody online, or nobody has it yet).
var retry = []time.Duration{2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute}

// start runs the download of a message's file in the background unless
// one runs; remember keeps it across restarts.
func (s *Service) start(conv string, id crdt.MsgID, remember bool) {
	o := owner(conv, id)
	m, author, err := s.manifest(conv, id)
	if err != nil {
		_ = s.d.Delete(s.ctx, wantKey(o))
		return
	}
	s.mu.Lock()
	if j := s.jobs[o]; j != nil && j.cancel != nil {
		s.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	j := &job{cancel: cancel, total: m.SealedSize()}
	s.jobs[o] = j
	s.mu.Unlock()
	if remember {
		if err := s.d.Put(s.ctx, wantKey(o), nil); err != nil {
			s.log.Warn("attachments: remember a download", "err", err)
		}
	}
	started := s.wg.Go(func() {
		defer cancel()
		if m.Thumb != nil {
			// The thumbnail first: it shows while the file arrives.
			_, _ = s.fetcher.Fetch(ctx, m.Thumb.Manifest(), o, s.providers(conv, author), nil)
		}
		err := s.fetchRetrying(ctx, conv, author, m, o, func(p attachments.Progress) {
			s.mu.Lock()
			j.have = p.BytesHeld
			s.mu.Unlock()
		})
		s.mu.Lock()
		j.cancel, j.err = nil, err
		if err == nil {
			delete(s.jobs, o)
		}
		s.mu.Unlock()
		if err == nil {
			_ = s.d.Delete(s.ctx, wantKey(o))
		}
		if ctx.Err() == nil && s.opts.Changed != nil {
			s.opts.Changed(conv, id)
		}
	})
	if !started {
		cancel()
	}
}

func (s *Service) fetchRetrying(ctx context.Context, conv string, author crdt.AccountID, m attachments.Manifest, o string, progress func(attachments.Progress)) error {
	for attempt := 0; ; attempt++ {
		_, err := s.fetcher.Fetch(ctx, m, o, s.providers(conv, author), progress)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, attachments.ErrUnavailable) {
			return err // the quota, a bad manifest: retrying will not help
		}
		s.log.Debug("attachments: no member has the file yet", "root", m.Root.String(), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry[min(attempt, len(retry)-1)]):
		}
	}
}

// startThumb fetches a thumbnail alone (the file waits for the user).
func (s *Service) startThumb(conv string, id crdt.MsgID, m attachments.Manifest) {
	_, author, _, _ := s.chat.Attachment(conv, id)
	s.wg.Go(func() {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Minute)
		defer cancel()
		tm := m.Thumb.Manifest()
		for attempt := 0; ; attempt++ {
			_, err := s.fetcher.Fetch(ctx, tm, owner(conv, id), s.providers(conv, author), nil)
			if err == nil {
				if s.opts.Changed != nil {
					s.opts.Changed(conv, id)
				}
				return
			}
			if ctx.Err() != nil || !errors.Is(err, attachments.ErrUnavailable) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry[min(attempt, len(retry)-1)]):
			}
		}
	})
}

func (s *Service) providers(conv string, author crdt.AccountID) attachments.Providers {
	return attachments.ProvidersFunc(func(context.Context, attachments.Ref) ([]peer.ID, error) {
		return s.chat.MemberPeers(conv, author), nil
	})
}

// Status reports what this node holds of a message's file.
func (s *Service) Status(ctx context.Context, conv string, id crdt.MsgID) (webui.AttachmentStatus, error) {
	m, _, err := s.manifest(conv, id)
	if err != nil {
		return webui.AttachmentStatus{}, err
	}
	return s.status(ctx, conv, id, m), nil
}

func (s *Service) status(ctx context.Context, conv string, id crdt.MsgID, m attachments.Manifest) webui.AttachmentStatus {
	st := webui.AttachmentStatus{State: webui.AttachmentMissing, Total: m.SealedSize()}
	p, err := s.store.Status(ctx, m)
	if err == nil {
		st.Have = p.BytesHeld
		if p.Complete() {
			st.State, st.Have = webui.AttachmentComplete, st.Total
			return st
		}
		if p.BytesHeld > 0 {
			st.State = webui.AttachmentPartial
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[owner(conv, id)]; j != nil {
		switch {
		case j.cancel != nil:
			st.State = webui.AttachmentFetching
			st.Have = max(st.Have, j.have)
		case j.err != nil:
			st.State, st.Error = webui.AttachmentFailed, j.err.Error()
		}
	}
	return st
}

// View is what the API shows of a message's attachment; nil when the
// manifest does not decode (a message from a newer or broken client).
func (s *Service) View(ctx context.Context, conv string, id crdt.MsgID, enc []byte) *webui.Attachment {
	m, err := attachments.DecodeManifest(enc)
	if err != nil {
		return nil
	}
	a := &webui.Attachment{
		Name: m.Name, Type: m.Type, Size: m.Size, Width: m.Width, Height: m.Height, DurationMS: m.DurationMS,
		Thumb: m.Thumb != nil, AttachmentStatus: s.status(ctx, conv, id, m),
	}
	for _, v := range m.Waveform {
		a.Waveform = append(a.Waveform, int(v))
	}
	if m.Thumb != nil {
		if p, err := s.store.Status(ctx, m.Thumb.Manifest()); err == nil {
			a.ThumbReady = p.Complete()
		}
	}
	return a
}

// File opens a message's file (thumb=false) or thumbnail for serving.
func (s *Service) File(ctx context.Context, conv string, id crdt.MsgID, thumb bool) (webui.AttachmentFile, error) {
	m, _, err := s.manifest(conv, id)
	if err != nil {
		return webui.AttachmentFile{}, err
	}
	name := m.Name
	if thumb {
		if m.Thumb == nil {
			return webui.AttachmentFile{}, webui.WithCode(webui.CodeNoAttachment, fmt.Errorf("%w: no thumbnail", webui.ErrNotFound))
		}
		m = m.Thumb.Manifest()
		name = "thumbnail"
	}
	p, err := s.store.Status(ctx, m)
	if err != nil {
		return webui.AttachmentFile{}, err
	}
	if !p.Complete() {
		return webui.AttachmentFile{}, webui.WithCode(webui.CodeNotDownloaded, fmt.Errorf("%w: the file is not downloaded yet (%d of %d chunks)", webui.ErrConflict, p.ChunksHeld, p.Chunks))
	}
	return webui.AttachmentFile{Name: name, Type: m.Type, Size: int64(m.Size), WriteTo: func(ctx context.Context, w io.Writer) error {
		return s.store.Open(ctx, m, w, nil)
	}}, nil
}

// apiError gives the store's errors the API's statuses and codes.
func apiError(err error) error {
	switch {
	case errors.Is(err, attachments.ErrTooLarge):
		return webui.WithCode(webui.CodeFileTooLarge, fmt.Errorf("%w: %w", webui.ErrTooLarge, err))
	case errors.Is(err, attachments.ErrQuota):
		return webui.WithCode(webui.CodeStorageFull, fmt.Errorf("%w: %w", webui.ErrConflict, err))
	case errors.Is(err, attachments.ErrSizeMismatch), errors.Is(err, attachments.ErrBadManifest):
		return fmt.Errorf("%w: %w", webui.ErrBadRequest, err)
	}
	return err
}
