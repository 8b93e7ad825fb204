package dag

// One file, over 800 lines: range-based set reconciliation (docs/sync.md
// §9) is one algorithm, its set, fingerprints, message codec and both
// sides' state machine, whose bounds are checked against each other.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// Range-based set reconciliation, after Negentropy
// (https://github.com/hoytech/negentropy, protocol version 1), for the
// catch-up fallback: when per-author sequence vectors cannot describe a
// store (blocks held out of sequence order, equivocations, a peer whose
// vector claims more than it holds), two nodes find the exact symmetric
// difference of their block sets in O(log n) round trips.
//
// Items are the committed blocks of one DAG, keyed by (height, CID): the
// display order, which is also a topological order, so the blocks a side
// ships once reconciliation ends go in key order and need no sorting. Both
// sides compute a block's height the same way, so keys agree.
//
// A message is a list of ranges that partition the key space in order
// (a range ends at its upper bound; the first starts at the bottom,
// anything after the last range is skipped), plus two id lists:
//
//   - Skip: nothing to say about the range.
//   - Fingerprint: the sender's fingerprint of its items in the range.
//     The receiver compares it with its own; on a mismatch it splits the
//     range into ReconConfig.Buckets parts of equal item count and sends
//     their fingerprints, or, when it holds few items there, lists them.
//   - IdList: every id the sender holds in the range. The receiver now
//     knows the difference in that range both ways and answers with
//     Have (its ids the sender lacks: it will ship them) and Want (the
//     sender's ids it lacks: the sender will ship them).
//
// A message that holds a Fingerprint or IdList range needs a reply; one
// that does not ends the exchange, after which each side ships what it
// learnt the other lacks. The fingerprint of a range is Negentropy's:
// SHA-256 over the sum modulo 2^256 of the items' 32-byte hashes
// (little-endian) followed by the item count as a uvarint, truncated to 16
// bytes. Items are hashed (SHA-256 of the CID) first, because CIDs are not
// uniformly distributed 32-byte strings.

// Reconciliation limits, shared by both sides (docs/sync.md).
const (
	// ReconFingerprintLen is the length of a range fingerprint.
	ReconFingerprintLen = 16
	// ReconMaxIDLen caps an id (a CID) and a bound's prefix.
	ReconMaxIDLen = 64
	// ReconMaxMessage caps an encoded message, leaving room for the sync
	// frame around it.
	ReconMaxMessage = 1<<20 - 256
	// ReconMaxRanges caps the ranges of one message.
	ReconMaxRanges = 1 << 16
	// ReconMaxIDList caps the ids of one IdList range.
	ReconMaxIDList = 4096
	// ReconMaxMessages caps the messages of one exchange, both directions
	// counted. Message ReconMaxMessages (and any later one) must not need
	// a reply: a side that reaches it ends the exchange with what it
	// knows, and the rest is left for the next session.
	ReconMaxMessages = 64
)

// ErrReconProtocol marks a reconciliation message that breaks the
// protocol: malformed, out of order, or needing a reply past the message
// cap. The peer that sent it misbehaved.
var ErrReconProtocol = errors.New("reconcile: protocol violation")

// ReconMode says what a range of a message carries.
type ReconMode uint8

// Range modes.
const (
	ReconSkip        ReconMode = 0
	ReconFingerprint ReconMode = 1
	ReconIDList      ReconMode = 2
)

// ReconBound is an exclusive upper bound in the (height, id) key order.
// Inf is above every key. An item is below the bound when its height is
// lower, or equal with an id that sorts before Prefix.
type ReconBound struct {
	Height uint64
	Prefix []byte
	Inf    bool
}

// compareBound orders two bounds.
func compareBound(a, b ReconBound) int {
	switch {
	case a.Inf && b.Inf:
		return 0
	case a.Inf:
		return 1
	case b.Inf:
		return -1
	case a.Height != b.Height:
		if a.Height < b.Height {
			return -1
		}
		return 1
	}
	return bytes.Compare(a.Prefix, b.Prefix)
}

// ReconRange is one range of a message.
type ReconRange struct {
	Upper       ReconBound
	Mode        ReconMode
	Fingerprint [ReconFingerprintLen]byte // ReconFingerprint
	IDs         [][]byte                  // ReconIDList
}

// ReconMessage is one reconciliation message.
type ReconMessage struct {
	Ranges []ReconRange
	// Have lists ids the sender holds and the receiver lacks (learnt from
	// the receiver's IdList ranges): the sender will ship them.
	Have [][]byte
	// Want lists ids the sender lacks from the receiver's IdList ranges:
	// the receiver will ship them.
	Want [][]byte
}

// NeedsReply reports whether m asks the receiver for an answer.
func (m *ReconMessage) NeedsReply() bool {
	for i := range m.Ranges {
		if m.Ranges[i].Mode != ReconSkip {
			return true
		}
	}
	return false
}

// ReconItem is one element of a reconciled set: a block's height and CID
// bytes.
type ReconItem struct {
	Height uint64
	ID     []byte
}

// ReconSet is an immutable set of items in key order with prefix sums of
// their hashes, so that any range's fingerprint costs two binary searches
// and one SHA-256. It is safe for concurrent use.
type ReconSet struct {
	heights []uint64
	offs    []uint32 // item i's id is ids[offs[i]:offs[i+1]]
	ids     []byte
	sums    [][4]uint64 // sums[i] = Σ hash(item j), j < i, mod 2^256
}

// NewReconSet builds a set from items, which it sorts and deduplicates.
// Items with an empty id, or one longer than ReconMaxIDLen, are skipped.
func NewReconSet(items []ReconItem) *ReconSet {
	items = slices.Clone(items)
	slices.SortFunc(items, compareItems)
	var b reconSetBuilder
	for i, it := range items {
		if len(it.ID) == 0 || len(it.ID) > ReconMaxIDLen || (i > 0 && compareItems(items[i-1], it) == 0) {
			continue
		}
		b.add(it.Height, it.ID)
	}
	return b.finish()
}

func compareItems(a, b ReconItem) int {
	if a.Height != b.Height {
		if a.Height < b.Height {
			return -1
		}
		return 1
	}
	return bytes.Compare(a.ID, b.ID)
}

// reconSetBuilder appends items already in strictly increasing key order.
type reconSetBuilder struct {
	s   ReconSet
	acc [4]uint64
}

func (b *reconSetBuilder) add(height uint64, id []byte) {
	if b.s.offs == nil {
		b.s.offs = []uint32{0}
		b.s.sums = [][4]uint64{{}}
	}
	b.s.heights = append(b.s.heights, height)
	b.s.ids = append(b.s.ids, id...)
	b.s.offs = append(b.s.offs, uint32(len(b.s.ids)))
	h := sha256.Sum256(id)
	var c uint64
	for k := range 4 {
		b.acc[k], c = bits.Add64(b.acc[k], binary.LittleEndian.Uint64(h[8*k:]), c)
	}
	b.s.sums = append(b.s.sums, b.acc)
}

func (b *reconSetBuilder) finish() *ReconSet {
	if b.s.offs == nil {
		b.s.offs = []uint32{0}
		b.s.sums = [][4]uint64{{}}
	}
	s := b.s
	return &s
}

// Len returns the number of items.
func (s *ReconSet) Len() int { return len(s.heights) }

// Item returns item i (0 ≤ i < Len); the id aliases the set.
func (s *ReconSet) Item(i int) ReconItem {
	return ReconItem{Height: s.heights[i], ID: s.id(i)}
}

func (s *ReconSet) id(i int) []byte { return s.ids[s.offs[i]:s.offs[i+1]:s.offs[i+1]] }

// MemoryBytes estimates the memory the set holds.
func (s *ReconSet) MemoryBytes() int {
	return 8*cap(s.heights) + 4*cap(s.offs) + cap(s.ids) + 32*cap(s.sums)
}

// lowerBound returns the index of the first item not below b.
func (s *ReconSet) lowerBound(b ReconBound) int {
	if b.Inf {
		return s.Len()
	}
	lo, hi := 0, s.Len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if h := s.heights[m]; h < b.Height || (h == b.Height && bytes.Compare(s.id(m), b.Prefix) < 0) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Fingerprint returns the fingerprint of items [i, j).
func (s *ReconSet) Fingerprint(i, j int) [ReconFingerprintLen]byte {
	var sum [4]uint64
	var borrow uint64
	for k := range 4 {
		sum[k], borrow = bits.Sub64(s.sums[j][k], s.sums[i][k], borrow)
	}
	var buf [32 + binary.MaxVarintLen64]byte
	for k := range 4 {
		binary.LittleEndian.PutUint64(buf[8*k:], sum[k])
	}
	n := 32 + binary.PutUvarint(buf[32:], uint64(j-i))
	h := sha256.Sum256(buf[:n])
	var fp [ReconFingerprintLen]byte
	copy(fp[:], h[:])
	return fp
}

// boundBefore returns the shortest bound above item i-1 and not above
// item i (0 < i < Len).
func (s *ReconSet) boundBefore(i int) ReconBound {
	if s.heights[i-1] != s.heights[i] {
		return ReconBound{Height: s.heights[i]}
	}
	prev, cur := s.id(i-1), s.id(i)
	n := 0
	for n < len(prev) && prev[n] == cur[n] {
		n++
	}
	return ReconBound{Height: s.heights[i], Prefix: bytes.Clone(cur[:n+1])}
}

// ReconConfig tunes a Reconciler. Zero fields take the defaults noted.
type ReconConfig struct {
	// Buckets is how many parts a mismatched range is split into
	// (default 16).
	Buckets int
	// IDListThreshold: a mismatched range where this side holds at most
	// this many items is listed instead of split (default 2×Buckets,
	// at most ReconMaxIDList).
	IDListThreshold int
	// MaxMessage caps the encoded size of the messages this side builds
	// (default and maximum ReconMaxMessage). When a reply would exceed
	// it, the ranges left over go as one fingerprint, for a later round.
	MaxMessage int
}

func (c *ReconConfig) defaults() {
	if c.Buckets < 2 {
		c.Buckets = 16
	}
	if c.IDListThreshold <= 0 {
		c.IDListThreshold = 2 * c.Buckets
	}
	c.IDListThreshold = min(c.IDListThreshold, ReconMaxIDList)
	if c.MaxMessage <= 0 || c.MaxMessage > ReconMaxMessage {
		c.MaxMessage = ReconMaxMessage
	}
}

// Reconciler runs one side of a reconciliation over a fixed set. It holds
// memory proportional to the set (one bit per item) plus the message being
// built, whatever the peer sends. Not safe for concurrent use.
type Reconciler struct {
	set      *ReconSet
	cfg      ReconConfig
	messages int // messages sent and received so far

	send     []uint64 // bitset: items the peer lacks
	nSend    int
	expected uint64 // ids the peer announced it will ship (saturating)
	// listed maps the ids this side put in IdList ranges to their index:
	// the only ids a peer can Want.
	listed map[string]int
	// Incomplete is set when the exchange ended (message cap) with
	// ranges still unresolved.
	incomplete bool
}

// NewReconciler returns a reconciler over set.
func NewReconciler(set *ReconSet, cfg ReconConfig) *Reconciler {
	cfg.defaults()
	return &Reconciler{set: set, cfg: cfg, send: make([]uint64, (set.Len()+63)/64)}
}

// Initiate returns the first message: the fingerprint of the whole set,
// or its ids when the set is small.
func (r *Reconciler) Initiate() ReconMessage {
	r.messages = 1
	var b msgBuilder
	b.init(r.cfg.MaxMessage)
	r.describe(&b, 0, r.set.Len(), ReconBound{Inf: true}, false)
	return b.m
}

// Receive processes the peer's message and returns the reply. reply is
// false when in needs no reply: the exchange is over and out must not be
// sent. When out itself needs no reply, the exchange is over once it is
// sent. Errors wrap ErrReconProtocol.
func (r *Reconciler) Receive(in ReconMessage) (out ReconMessage, reply bool, err error) {
	r.messages++
	needs := in.NeedsReply()
	if needs && r.messages >= ReconMaxMessages {
		return out, false, fmt.Errorf("%w: message %d needs a reply, the cap is %d", ErrReconProtocol, r.messages, ReconMaxMessages)
	}
	if err := checkRanges(in.Ranges); err != nil {
		return out, false, err
	}
	for _, id := range in.Want {
		if i, ok := r.lookup(id); ok {
			r.mark(i)
		}
	}
	r.expected = satAddU64(r.expected, uint64(len(in.Have)))
	if !needs {
		return out, false, nil
	}
	r.messages++
	final := r.messages >= ReconMaxMessages
	var b msgBuilder
	b.init(r.cfg.MaxMessage)
	i := 0
	for k := range in.Ranges {
		rg := &in.Ranges[k]
		j := r.set.lowerBound(rg.Upper)
		switch rg.Mode {
		case ReconSkip:
			b.skip(rg.Upper)
		case ReconFingerprint:
			if r.set.Fingerprint(i, j) == rg.Fingerprint {
				b.skip(rg.Upper)
				break
			}
			if final {
				r.incomplete = true
				b.skip(rg.Upper)
				break
			}
			if !b.fits(r.describeSize(i, j)) {
				r.deferRest(&b, i)
				return r.sent(b.m), true, nil
			}
			r.describe(&b, i, j, rg.Upper, true)
		case ReconIDList:
			if !b.fits(idsSize(rg.IDs) + idsSize(r.slice(i, j))) {
				if final {
					r.incomplete = true
					return r.sent(b.m), true, nil
				}
				r.deferRest(&b, i)
				return r.sent(b.m), true, nil
			}
			r.diff(&b, i, j, rg.IDs)
			b.skip(rg.Upper)
		}
		i = j
	}
	return r.sent(b.m), true, nil
}

// sent accounts for a reply: the peer will ship what it asks for.
func (r *Reconciler) sent(m ReconMessage) ReconMessage {
	r.expected = satAddU64(r.expected, uint64(len(m.Want)))
	return m
}

// describe adds ranges for items [i, j) ending at upper: their ids when
// few, else Buckets fingerprints (or ids when the split is not worth it).
func (r *Reconciler) describe(b *msgBuilder, i, j int, upper ReconBound, split bool) {
	n := j - i
	buckets := r.cfg.Buckets
	if n <= r.cfg.IDListThreshold {
		b.add(ReconRange{Upper: upper, Mode: ReconIDList, IDs: r.list(i, j)})
		return
	}
	if !split {
		b.add(ReconRange{Upper: upper, Mode: ReconFingerprint, Fingerprint: r.set.Fingerprint(i, j)})
		return
	}
	start := i
	for k := 1; k <= buckets; k++ {
		end := i + n*k/buckets
		ub := upper
		if k < buckets {
			ub = r.set.boundBefore(end)
		}
		b.add(ReconRange{Upper: ub, Mode: ReconFingerprint, Fingerprint: r.set.Fingerprint(start, end)})
		start = end
	}
}

// describeSize is an upper estimate of what describe adds for [i, j).
func (r *Reconciler) describeSize(i, j int) int {
	if j-i <= r.cfg.IDListThreshold {
		return maxBoundSize + 2 + idsSize(r.slice(i, j))
	}
	return r.cfg.Buckets * (maxBoundSize + 1 + ReconFingerprintLen)
}

// deferRest ends the message with one fingerprint over everything from
// the end of the last range up (our items from index i): the peer
// compares it next round.
func (r *Reconciler) deferRest(b *msgBuilder, i int) {
	b.add(ReconRange{Upper: ReconBound{Inf: true}, Mode: ReconFingerprint, Fingerprint: r.set.Fingerprint(i, r.set.Len())})
}

// diff compares the peer's ids with ours in [i, j): ours it lacks are
// marked for shipping and announced as Have, its ids we lack go in Want.
func (r *Reconciler) diff(b *msgBuilder, i, j int, theirs [][]byte) {
	seen := make(map[string]struct{}, len(theirs))
	for _, id := range theirs {
		seen[string(id)] = struct{}{}
	}
	for k := i; k < j; k++ {
		id := r.set.id(k)
		if _, ok := seen[string(id)]; ok {
			delete(seen, string(id))
			continue
		}
		if r.mark(k) {
			b.have(id)
		}
	}
	for _, id := range theirs {
		if _, ok := seen[string(id)]; ok {
			delete(seen, string(id))
			b.want(id)
		}
	}
}

func (r *Reconciler) slice(i, j int) [][]byte {
	out := make([][]byte, 0, j-i)
	for k := i; k < j; k++ {
		out = append(out, r.set.id(k))
	}
	return out
}

// mark adds item i to the items to ship; false if it was already there.
func (r *Reconciler) mark(i int) bool {
	w, bit := i/64, uint64(1)<<(i%64)
	if r.send[w]&bit != 0 {
		return false
	}
	r.send[w] |= bit
	r.nSend++
	return true
}

// list returns the ids of items [i, j) for an IdList range and remembers
// them for the peer's Want.
func (r *Reconciler) list(i, j int) [][]byte {
	if r.listed == nil {
		r.listed = make(map[string]int)
	}
	ids := r.slice(i, j)
	for k, id := range ids {
		r.listed[string(id)] = i + k
	}
	return ids
}

// lookup finds an id this side listed. A Want for anything else is
// ignored: an honest peer only wants what it was shown.
func (r *Reconciler) lookup(id []byte) (int, bool) {
	i, ok := r.listed[string(id)]
	return i, ok
}

// Sending returns the indexes of the items to ship to the peer, in key
// (topological) order.
func (r *Reconciler) Sending() []int {
	out := make([]int, 0, r.nSend)
	for w, word := range r.send {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			out = append(out, w*64+b)
			word &= word - 1
		}
	}
	return out
}

// Expected returns how many items the peer announced it will ship.
func (r *Reconciler) Expected() uint64 { return r.expected }

// Messages returns how many messages were sent and received.
func (r *Reconciler) Messages() int { return r.messages }

// Incomplete reports whether the exchange ended at the message cap with
// differences left unresolved; another session finds them.
func (r *Reconciler) Incomplete() bool { return r.incomplete }

// checkRanges checks that bounds increase strictly and ids are sane.
func checkRanges(rs []ReconRange) error {
	if len(rs) > ReconMaxRanges {
		return fmt.Errorf("%w: %d ranges", ErrReconProtocol, len(rs))
	}
	prev := ReconBound{}
	for k := range rs {
		rg := &rs[k]
		if compareBound(rg.Upper, prev) <= 0 || len(rg.Upper.Prefix) > ReconMaxIDLen {
			return fmt.Errorf("%w: range %d bound out of order", ErrReconProtocol, k)
		}
		switch rg.Mode {
		case ReconSkip, ReconFingerprint:
		case ReconIDList:
			if len(rg.IDs) > ReconMaxIDList {
				return fmt.Errorf("%w: %d ids in a range", ErrReconProtocol, len(rg.IDs))
			}
		default:
			return fmt.Errorf("%w: mode %d", ErrReconProtocol, rg.Mode)
		}
		prev = rg.Upper
	}
	return nil
}

// msgBuilder assembles a message, merging adjacent skips and tracking its
// encoded size.
type msgBuilder struct {
	m      ReconMessage
	size   int
	limit  int
	prevH  uint64 // height of the last bound written
	skipTo *ReconBound
}

// maxBoundSize bounds the encoding of one bound.
const maxBoundSize = 2*binary.MaxVarintLen64 + ReconMaxIDLen

func (b *msgBuilder) init(limit int) {
	b.limit = limit
	b.size = 3 // three list counts
}

func (b *msgBuilder) fits(n int) bool { return b.size+maxBoundSize+n <= b.limit }

func (b *msgBuilder) skip(upper ReconBound) { u := upper; b.skipTo = &u }

func (b *msgBuilder) add(rg ReconRange) {
	if b.skipTo != nil {
		s := *b.skipTo
		b.skipTo = nil
		b.add(ReconRange{Upper: s, Mode: ReconSkip})
	}
	b.size += rangeSize(b.prevH, &rg)
	if !rg.Upper.Inf {
		b.prevH = rg.Upper.Height
	}
	b.m.Ranges = append(b.m.Ranges, rg)
}

func (b *msgBuilder) have(id []byte) {
	b.size += idSize(id)
	b.m.Have = append(b.m.Have, id)
}

func (b *msgBuilder) want(id []byte) {
	b.size += idSize(id)
	b.m.Want = append(b.m.Want, bytes.Clone(id))
}

func satAddU64(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// Wire format (all integers unsigned varints):
//
//	message := nranges range* nhave id* nwant id*
//	range   := bound mode payload
//	bound   := hdelta plen prefix    hdelta 0: infinity (last range only),
//	                                 else height − previous height + 1
//	mode    := 0 skip | 1 fingerprint (16 bytes) | 2 idlist: nids id*
//	id      := len (1..64) bytes
//
// Heights are delta-coded against the previous bound (the first against
// 0), so bounds cost a byte or two; ranges must increase strictly.

// EncodeReconMessage encodes m.
func EncodeReconMessage(m ReconMessage) []byte {
	out := make([]byte, 0, 256)
	out = binary.AppendUvarint(out, uint64(len(m.Ranges)))
	var prevH uint64
	for k := range m.Ranges {
		rg := &m.Ranges[k]
		if rg.Upper.Inf {
			out = append(out, 0)
		} else {
			out = binary.AppendUvarint(out, rg.Upper.Height-prevH+1)
			prevH = rg.Upper.Height
		}
		out = appendID(out, rg.Upper.Prefix)
		out = append(out, byte(rg.Mode))
		switch rg.Mode {
		case ReconFingerprint:
			out = append(out, rg.Fingerprint[:]...)
		case ReconIDList:
			out = binary.AppendUvarint(out, uint64(len(rg.IDs)))
			for _, id := range rg.IDs {
				out = appendID(out, id)
			}
		}
	}
	for _, l := range [][][]byte{m.Have, m.Want} {
		out = binary.AppendUvarint(out, uint64(len(l)))
		for _, id := range l {
			out = appendID(out, id)
		}
	}
	return out
}

func appendID(dst, id []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	return append(dst, id...)
}

func uvarintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func idSize(id []byte) int { return uvarintSize(uint64(len(id))) + len(id) }

func idsSize(ids [][]byte) int {
	n := uvarintSize(uint64(len(ids)))
	for _, id := range ids {
		n += idSize(id)
	}
	return n
}

func rangeSize(prevH uint64, rg *ReconRange) int {
	n := 1
	if !rg.Upper.Inf {
		n = uvarintSize(rg.Upper.Height - prevH + 1)
	}
	n += idSize(rg.Upper.Prefix) + 1
	switch rg.Mode {
	case ReconFingerprint:
		n += ReconFingerprintLen
	case ReconIDList:
		n += idsSize(rg.IDs)
	}
	return n
}

// DecodeReconMessage parses an untrusted message. It allocates in
// proportion to len(b) and checks every limit of the protocol; errors
// wrap ErrReconProtocol.
func DecodeReconMessage(b []byte) (ReconMessage, error) {
	var m ReconMessage
	if len(b) > ReconMaxMessage {
		return m, fmt.Errorf("%w: message of %d bytes", ErrReconProtocol, len(b))
	}
	d := reconDecoder{b: b}
	n := d.count(3, ReconMaxRanges) // a range takes at least 3 bytes
	if n > 0 {
		m.Ranges = make([]ReconRange, 0, n)
	}
	var prevH uint64
	prev := ReconBound{}
	for range n {
		var rg ReconRange
		hd := d.uvarint()
		if hd == 0 {
			rg.Upper.Inf = true
		} else {
			if hd-1 > ^uint64(0)-prevH {
				d.fail("height overflow")
			}
			rg.Upper.Height = prevH + hd - 1
			prevH = rg.Upper.Height
		}
		rg.Upper.Prefix = d.id(true)
		if d.err == nil && compareBound(rg.Upper, prev) <= 0 {
			d.fail("bounds out of order")
		}
		prev = rg.Upper
		rg.Mode = ReconMode(d.byte())
		switch rg.Mode {
		case ReconSkip:
		case ReconFingerprint:
			copy(rg.Fingerprint[:], d.take(ReconFingerprintLen))
		case ReconIDList:
			rg.IDs = d.ids(ReconMaxIDList)
		default:
			d.fail("unknown mode")
		}
		if d.err != nil {
			return ReconMessage{}, d.err
		}
		m.Ranges = append(m.Ranges, rg)
	}
	m.Have = d.ids(ReconMaxMessage)
	m.Want = d.ids(ReconMaxMessage)
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return ReconMessage{}, d.err
	}
	return m, nil
}

type reconDecoder struct {
	b   []byte
	err error
}

func (d *reconDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrReconProtocol, what)
	}
	d.b = nil
}

func (d *reconDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *reconDecoder) byte() byte {
	if t := d.take(1); len(t) == 1 {
		return t[0]
	}
	return 0
}

func (d *reconDecoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("truncated")
		return nil
	}
	t := d.b[:n:n]
	d.b = d.b[n:]
	return t
}

// count reads a list length, refusing one the remaining bytes cannot hold
// (each element takes at least min bytes) or above max.
func (d *reconDecoder) count(minSize int, max int) int {
	v := d.uvarint()
	if d.err == nil && (v > uint64(max) || v > uint64(len(d.b)/minSize)) {
		d.fail("list too long")
		return 0
	}
	return int(v)
}

// id reads one id (copied); empty is allowed only for prefixes.
func (d *reconDecoder) id(prefix bool) []byte {
	n := d.uvarint()
	if d.err == nil && (n > ReconMaxIDLen || n == 0 && !prefix) {
		d.fail("id length")
	}
	if n == 0 || d.err != nil {
		return nil
	}
	return bytes.Clone(d.take(int(n)))
}

func (d *reconDecoder) ids(max int) [][]byte {
	n := d.count(2, max)
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([][]byte, 0, n)
	for range n {
		id := d.id(false)
		if d.err != nil {
			return nil
		}
		out = append(out, id)
	}
	return out
}
