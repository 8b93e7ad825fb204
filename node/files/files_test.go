package files

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"

	"github.com/glitr-chat/glitr/crdt"
	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/node/attachments"
	"github.com/glitr-chat/glitr/protocol"
	"github.com/glitr-chat/glitr/webui"
)

// world is the conversations as every replica sees them once converged:
// the messages with attachments and who is a member device.
type world struct {
	mu      sync.Mutex
	msgs    map[string]map[crdt.MsgID]*fakeMsg
	members map[string]map[peer.ID]bool
	n       int
}

type fakeMsg struct {
	manifest []byte
	author   crdt.AccountID
	deleted  bool
	client   string
}

func newWorld() *world {
	return &world{msgs: map[string]map[crdt.MsgID]*fakeMsg{}, members: map[string]map[peer.ID]bool{}}
}

func (w *world) join(conv string, ps ...peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.members[conv] == nil {
		w.members[conv], w.msgs[conv] = map[peer.ID]bool{}, map[crdt.MsgID]*fakeMsg{}
	}
	for _, p := range ps {
		w.members[conv][p] = true
	}
}

func (w *world) leave(conv string, p peer.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.members[conv], p)
}

func (w *world) delete(conv string, id crdt.MsgID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs[conv][id].deleted = true
}

// side is one node's view: its Chat.
type side struct {
	w    *world
	self peer.ID
	acct crdt.AccountID
}

func (s side) PostFile(_ context.Context, conv string, msg crdt.Message, clientID string) (crdt.MsgID, bool, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	ms, ok := s.w.msgs[conv]
	if !ok {
		return crdt.MsgID{}, false, fmt.Errorf("%w: no conversation", webui.ErrNotFound)
	}
	for id, m := range ms {
		if clientID != "" && m.client == clientID {
			return id, false, nil
		}
	}
	s.w.n++
	sum := sha256.Sum256(fmt.Appendf(nil, "event %d", s.w.n))
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	id := crdt.MsgID{Event: cid.NewCidV1(cid.DagCBOR, mh)}
	ms[id] = &fakeMsg{manifest: msg.Attachment, author: s.acct, client: clientID}
	return id, true, nil
}

func (s side) Attachment(conv string, id crdt.MsgID) ([]byte, crdt.AccountID, bool, bool) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	m, ok := s.w.msgs[conv][id]
	if !ok {
		return nil, crdt.AccountID{}, false, false
	}
	return m.manifest, m.author, m.deleted, true
}

func (s side) EachAttachment(fn func(conv string, id crdt.MsgID, manifest []byte, deleted bool)) {
	s.w.mu.Lock()
	type item struct {
		conv string
		id   crdt.MsgID
		m    fakeMsg
	}
	var all []item
	for c, ms := range s.w.msgs {
		for id, m := range ms {
			all = append(all, item{c, id, *m})
		}
	}
	s.w.mu.Unlock()
	for _, it := range all {
		fn(it.conv, it.id, it.m.manifest, it.m.deleted)
	}
}

func (s side) IsMemberDevice(conv string, p peer.ID) bool {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.members[conv][p]
}

func (s side) MemberPeers(conv string, _ crdt.AccountID) []peer.ID {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	var out []peer.ID
	for p := range s.w.members[conv] {
		if p != s.self {
			out = append(out, p)
		}
	}
	return out
}

type testNode struct {
	h   host.Host
	d   ds.Batching
	dir string
	svc *Service
	// changed counts Changed calls
	mu      sync.Mutex
	changed int
}

func (n *testNode) start(t *testing.T, w *world, auto uint64) {
	t.Helper()
	acct := crdt.AccountID{byte(len(n.h.ID()))}
	copy(acct[:], n.h.ID())
	svc, err := New(context.Background(), n.h, n.d, side{w: w, self: n.h.ID(), acct: acct}, Options{
		Dir: n.dir, AutoDownload: func() uint64 { return auto }, Logger: testsupport.Logger(t),
		Changed: func(string, crdt.MsgID) { n.mu.Lock(); n.changed++; n.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	n.svc = svc
	svc.Start()
	t.Cleanup(func() {
		if n.svc == svc {
			svc.Close()
		}
	})
}

func newNode(t *testing.T, w *world, auto uint64) *testNode {
	n := &testNode{h: testsupport.Host(t), d: dssync.MutexWrap(ds.NewMapDatastore()), dir: t.TempDir()}
	n.start(t, w, auto)
	return n
}

func randomFile(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func post(t *testing.T, n *testNode, conv string, file, thumb []byte) crdt.MsgID {
	t.Helper()
	id, created, err := n.svc.Post(context.Background(), conv, webui.AttachmentUpload{
		Name: "photo.jpg", Type: "image/jpeg", Size: int64(len(file)), Width: 4000, Height: 3000,
		Caption: "the view", Thumb: thumb, ThumbType: "image/jpeg", ThumbWidth: 320, ThumbHeight: 240,
		File: bytes.NewReader(file),
	}, nil)
	if err != nil || !created {
		t.Fatalf("post: %v created=%v", err, created)
	}
	return id
}

func read(t *testing.T, n *testNode, conv string, id crdt.MsgID, thumb bool) ([]byte, error) {
	f, err := n.svc.File(context.Background(), conv, id, thumb)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = f.WriteTo(context.Background(), &buf)
	return buf.Bytes(), err
}

func state(n *testNode, conv string, id crdt.MsgID) webui.AttachmentStatus {
	st, _ := n.svc.Status(context.Background(), conv, id)
	return st
}

// A member receives the thumbnail at once and the file when it asks;
// what it gets is what was sent, byte for byte.
func TestSendFetchOpen(t *testing.T) {
	w := newWorld()
	a, b := newNode(t, w, 0), newNode(t, w, 0)
	testsupport.Connect(t, a.h, b.h)
	w.join("c1", a.h.ID(), b.h.ID())
	file, thumb := randomFile(t, 3<<20+12345), randomFile(t, 20<<10)
	id := post(t, a, "c1", file, thumb)

	if got, err := read(t, a, "c1", id, false); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("sender reads its own file: %v", err)
	}
	b.svc.Arrived("c1", []crdt.MsgID{id})
	testsupport.Eventually(t, 10*time.Second, "the thumbnail", func() bool {
		got, err := read(t, b, "c1", id, true)
		return err == nil && bytes.Equal(got, thumb)
	})
	if st := state(b, "c1", id); st.State != webui.AttachmentMissing {
		t.Fatalf("the file came without asking: %+v", st)
	}
	if _, err := read(t, b, "c1", id, false); webui.ErrorCode(err) != webui.CodeNotDownloaded {
		t.Fatalf("open before download: %v", err)
	}
	if _, err := b.svc.Fetch(context.Background(), "c1", id); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the download", func() bool { return state(b, "c1", id).State == webui.AttachmentComplete })
	if got, err := read(t, b, "c1", id, false); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("receiver's copy differs: %v", err)
	}
	v := b.svc.View(context.Background(), "c1", id, w.msgs["c1"][id].manifest)
	if v == nil || v.Name != "photo.jpg" || v.Size != uint64(len(file)) || v.Width != 4000 || !v.Thumb || !v.ThumbReady || v.State != webui.AttachmentComplete || v.Have != v.Total {
		t.Fatalf("view %+v", v)
	}
}

// Within the user's cap a file arrives without asking; over it, only the
// thumbnail.
func TestAutoDownloadCap(t *testing.T) {
	w := newWorld()
	a, b := newNode(t, w, 0), newNode(t, w, 2<<20)
	testsupport.Connect(t, a.h, b.h)
	w.join("c1", a.h.ID(), b.h.ID())
	small := post(t, a, "c1", randomFile(t, 1<<20), nil)
	big := post(t, a, "c1", randomFile(t, 3<<20), randomFile(t, 1000))
	b.svc.Arrived("c1", []crdt.MsgID{small, big})
	testsupport.Eventually(t, 20*time.Second, "the small file", func() bool { return state(b, "c1", small).State == webui.AttachmentComplete })
	testsupport.Eventually(t, 10*time.Second, "the big file's thumbnail", func() bool { _, err := read(t, b, "c1", big, true); return err == nil })
	if st := state(b, "c1", big); st.State != webui.AttachmentMissing {
		t.Fatalf("a file over the cap came: %+v", st)
	}
}

// Only current member devices are served: a stranger, and a member once
// removed, get nothing.
func TestOnlyMembersAreServed(t *testing.T) {
	w := newWorld()
	a, b, stranger := newNode(t, w, 0), newNode(t, w, 0), newNode(t, w, 0)
	testsupport.Connect(t, a.h, b.h)
	testsupport.Connect(t, a.h, stranger.h)
	w.join("c1", a.h.ID(), b.h.ID())
	w.join("other", stranger.h.ID(), a.h.ID())
	id := post(t, a, "c1", randomFile(t, 1<<20), nil)
	m, _ := attachments.DecodeManifest(w.msgs["c1"][id].manifest)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := stranger.svc.fetcher.Fetch(ctx, m, "x", attachments.StaticProviders(a.h.ID()), nil); !errors.Is(err, attachments.ErrUnavailable) {
		t.Fatalf("stranger's fetch: %v", err)
	}
	if a.svc.mayFetch(stranger.h.ID(), m.Root) {
		t.Fatal("a stranger may fetch")
	}
	w.leave("c1", b.h.ID())
	if _, err := b.svc.fetcher.Fetch(ctx, m, "x", attachments.StaticProviders(a.h.ID()), nil); !errors.Is(err, attachments.ErrUnavailable) {
		t.Fatalf("removed member's fetch: %v", err)
	}
}

// A delete for everyone removes the file and its thumbnail from every
// store that holds them, and a forward of the same file keeps it.
func TestDeleteForEveryoneDropsChunks(t *testing.T) {
	w := newWorld()
	a, b := newNode(t, w, 64<<20), newNode(t, w, 64<<20)
	testsupport.Connect(t, a.h, b.h)
	w.join("c1", a.h.ID(), b.h.ID())
	id := post(t, a, "c1", randomFile(t, 2<<20), randomFile(t, 5000))
	b.svc.Arrived("c1", []crdt.MsgID{id})
	testsupport.Eventually(t, 20*time.Second, "the download", func() bool { return state(b, "c1", id).State == webui.AttachmentComplete })
	w.delete("c1", id)
	a.svc.Deleted("c1", []crdt.MsgID{id})
	b.svc.Deleted("c1", []crdt.MsgID{id})
	for name, n := range map[string]*testNode{"sender": a, "receiver": b} {
		if used := n.svc.Store().Used(); used != 0 {
			t.Errorf("%s still stores %d bytes", name, used)
		}
	}
	if _, err := read(t, b, "c1", id, false); webui.ErrorCode(err) != webui.CodeMessageDeleted {
		t.Fatalf("open after delete: %v", err)
	}
}

// A download cut short by a restart resumes on the next start, keeping
// what had arrived.
func TestDownloadResumesAfterRestart(t *testing.T) {
	w := newWorld()
	a, b := newNode(t, w, 0), newNode(t, w, 0)
	w.join("c1", a.h.ID(), b.h.ID())
	file := randomFile(t, 4<<20)
	id := post(t, a, "c1", file, nil)
	// Not connected yet: the download waits for a member with the file.
	if _, err := b.svc.Fetch(context.Background(), "c1", id); err != nil {
		t.Fatal(err)
	}
	if st := state(b, "c1", id); st.State != webui.AttachmentFetching {
		t.Fatalf("state %+v", st)
	}
	b.svc.Close()
	b.start(t, w, 0)
	testsupport.Connect(t, b.h, a.h)
	testsupport.Eventually(t, 30*time.Second, "the resumed download", func() bool { return state(b, "c1", id).State == webui.AttachmentComplete })
	if got, err := read(t, b, "c1", id, false); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("resumed copy differs: %v", err)
	}
	// Done: nothing left to resume.
	if keys := countPrefix(t, b.d, wantPrefix); keys != 0 {
		t.Fatalf("%d downloads still remembered", keys)
	}
}

func countPrefix(t *testing.T, d ds.Batching, prefix string) int {
	res, err := d.Query(context.Background(), dsQuery(prefix))
	if err != nil {
		t.Fatal(err)
	}
	all, _ := res.Rest()
	return len(all)
}

// A send that crashed between its import and its hold: the next start
// gives the file to its message, so the pending hold's expiry does not
// take it; a hold whose message never came to be is released.
func TestStartHoldsWhatASendLeft(t *testing.T) {
	w := newWorld()
	a := newNode(t, w, 0)
	w.join("c1", a.h.ID())
	ctx := context.Background()
	file := randomFile(t, 1<<20)
	st := a.svc.Store()
	m, err := st.Import(ctx, bytes.NewReader(file), attachments.Meta{Size: int64(len(file)), Name: "f", Type: "application/pdf", Owner: "pending|x", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := attachments.EncodeManifest(m)
	id, _, _ := side{w: w, self: a.h.ID()}.PostFile(ctx, "c1", crdt.Message{Attachment: enc}, "")
	orphan, err := st.Import(ctx, bytes.NewReader(randomFile(t, 1000)), attachments.Meta{Size: 1000, Name: "o", Type: "text/plain", Owner: owner("c1", crdt.MsgID{Event: id.Event, Index: 9})})
	if err != nil {
		t.Fatal(err)
	}
	a.svc.Close()
	a.start(t, w, 0)
	testsupport.Eventually(t, 10*time.Second, "the check at start", func() bool {
		owners, _ := a.svc.Store().Owners(ctx, m.Root)
		return len(owners) == 2
	})
	if _, err := a.svc.Store().Expire(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := read(t, a, "c1", id, false); err != nil || !bytes.Equal(got, file) {
		t.Fatalf("the sent file after the pending hold expired: %v", err)
	}
	if ok, _ := a.svc.Store().HasFile(ctx, orphan.Root); ok {
		t.Fatal("a hold of no message survived the start")
	}
}

// A file over the limit is refused before a byte is read.
func TestPostRefusesOverLimit(t *testing.T) {
	w := newWorld()
	a := newNode(t, w, 0)
	w.join("c1", a.h.ID())
	r := &countingReader{}
	_, _, err := a.svc.Post(context.Background(), "c1", webui.AttachmentUpload{Name: "big", Type: "video/mp4", Size: protocol.MaxFileSize + 1, File: r}, nil)
	if !errors.Is(err, webui.ErrTooLarge) || webui.ErrorCode(err) != webui.CodeFileTooLarge || r.n != 0 {
		t.Fatalf("err %v, read %d", err, r.n)
	}
	if len(w.msgs["c1"]) != 0 {
		t.Fatal("a message was posted")
	}
}

type countingReader struct{ n int }

func (r *countingReader) Read(p []byte) (int, error) { r.n += len(p); return len(p), nil }

var _ io.Reader = (*countingReader)(nil)

func dsQuery(prefix string) query.Query { return query.Query{Prefix: prefix, KeysOnly: true} }
