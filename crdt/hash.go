package crdt

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
)

// hasher writes a canonical, unambiguous serialization into SHA-256:
// unsigned integers as uvarints, byte strings length-prefixed, lists
// count-prefixed. Nothing in it depends on apply order or internal indices.
type hasher struct {
	h   hash.Hash
	buf []byte
}

func newHasher(domain string) *hasher {
	w := &hasher{h: sha256.New(), buf: make([]byte, 0, 256)}
	w.bytes([]byte(domain))
	return w
}

func (w *hasher) flush() {
	if len(w.buf) > 0 {
		w.h.Write(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *hasher) uint(v uint64) {
	w.buf = binary.AppendUvarint(w.buf, v)
	if len(w.buf) > 4096 {
		w.flush()
	}
}

func (w *hasher) bool(b bool) {
	if b {
		w.uint(1)
	} else {
		w.uint(0)
	}
}

func (w *hasher) bytes(b []byte) {
	w.uint(uint64(len(b)))
	if len(b) > 1024 {
		w.flush()
		w.h.Write(b)
		return
	}
	w.buf = append(w.buf, b...)
}

func (w *hasher) str(s string) {
	w.uint(uint64(len(s)))
	w.buf = append(w.buf, s...)
	if len(w.buf) > 4096 {
		w.flush()
	}
}

func (w *hasher) position(p Position) {
	w.uint(uint64(len(p)))
	for _, e := range p {
		w.bytes(e.Device[:])
		w.uint(e.Seq)
	}
}

func (w *hasher) sum() (out [32]byte) {
	w.flush()
	w.h.Sum(out[:0])
	return out
}

// StateHash returns SHA-256 over a canonical serialization of the visible
// state: members with admin flags; title; avatar; every message in display
// order (id, author account and device, seq, height, time, deleted flag,
// and unless deleted: current text, edited flag, reply-to, reactions by
// emoji with their accounts); delivered and read positions per account;
// rotations (id, op, tainted) and the current epoch; announced device
// certificates and prekeys; member display names. Replicas that applied the same set of events
// have equal hashes, whatever the order and duplicates of delivery.
func (c *Conversation) StateHash() [32]byte {
	w := newHasher("glitr/v1/crdt/conversation-state")
	members := c.Members()
	w.uint(uint64(len(members)))
	for _, m := range members {
		w.bytes(m.Account[:])
		w.bool(m.Admin)
	}
	w.str(c.Title())
	mime, data := c.Avatar()
	w.str(mime)
	w.bytes(data)

	w.uint(uint64(len(c.display)))
	for _, mi := range c.display {
		v := c.view(mi)
		w.bytes(v.ID.Event.Bytes())
		w.uint(uint64(v.ID.Index))
		w.bytes(v.Author[:])
		w.bytes(v.Device[:])
		w.uint(v.Seq)
		w.uint(v.Height)
		w.uint(uint64(v.Time))
		w.bool(v.Deleted)
		if v.Deleted {
			continue
		}
		w.str(v.Text)
		w.bytes(v.Attachment)
		w.bool(v.Edited)
		w.bool(v.ReplyTo != nil)
		if v.ReplyTo != nil {
			w.bytes(v.ReplyTo.Event.Bytes())
			w.uint(uint64(v.ReplyTo.Index))
		}
		w.uint(uint64(len(v.Reactions)))
		for _, r := range v.Reactions {
			w.str(r.Emoji)
			w.uint(uint64(len(r.Accounts)))
			for _, a := range r.Accounts {
				w.bytes(a[:])
			}
		}
	}

	type rcpt struct {
		acct      AccountID
		del, read Position
	}
	var rs []rcpt
	for a, p := range c.delivered {
		rs = append(rs, rcpt{c.g.accts[a], p, c.read[a]})
	}
	slices.SortFunc(rs, func(x, y rcpt) int { return bytes.Compare(x.acct[:], y.acct[:]) })
	w.uint(uint64(len(rs)))
	for _, r := range rs {
		w.bytes(r.acct[:])
		w.position(r.del)
		w.position(r.read)
	}

	rots := c.Rotations()
	w.uint(uint64(len(rots)))
	for _, r := range rots {
		w.bytes(r.Event.Bytes())
		w.uint(uint64(r.Op))
		w.bool(r.Tainted)
	}
	cur, ok := c.CurrentEpoch()
	w.bool(ok)
	if ok {
		w.bytes(cur.Event.Bytes())
		w.uint(uint64(cur.Op))
	}

	type dc struct {
		acct AccountID
		DeviceCert
	}
	var ds []dc
	for k, r := range c.devices {
		da := c.g.events[r.ev].ops[r.op].(DeviceAnnounce)
		ds = append(ds, dc{c.g.accts[k.acct], DeviceCert{Device: k.dev, Cert: da.Cert, Prekey: da.Prekey, Peer: da.Peer, Mailbox: da.Mailbox}})
	}
	slices.SortFunc(ds, func(x, y dc) int {
		return cmp.Or(bytes.Compare(x.acct[:], y.acct[:]), bytes.Compare(x.Device[:], y.Device[:]))
	})
	w.uint(uint64(len(ds)))
	for _, d := range ds {
		w.bytes(d.acct[:])
		w.bytes(d.Device[:])
		w.bytes(d.Cert)
		w.bytes(d.Prekey)
		w.bytes(d.Peer)
		w.bytes(d.Mailbox)
	}

	type name struct {
		acct AccountID
		name string
	}
	var ns []name
	for a, r := range c.names {
		ns = append(ns, name{c.g.accts[a], c.g.events[r.ev].ops[r.op].(MemberProfile).Name})
	}
	slices.SortFunc(ns, func(x, y name) int { return bytes.Compare(x.acct[:], y.acct[:]) })
	w.uint(uint64(len(ns)))
	for _, n := range ns {
		w.bytes(n.acct[:])
		w.str(n.name)
	}
	return w.sum()
}
