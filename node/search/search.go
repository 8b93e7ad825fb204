// Package search is the node's full-text message search: an inverted
// index over every message of every conversation, in memory, fed from
// the conversations' state (which the node keeps in memory anyway), so
// nothing of it ever reaches the disk and the store's encryption at rest
// covers everything (docs/webui.md, search). Queries are words, matched
// after case and accent folding, all of them required, the last one also
// as a prefix (search as you type); results come newest first.
package search

import (
	"math/bits"
	"slices"
	"strings"
	"sync"
	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// Doc is one message as indexed.
type Doc struct {
	Conv string // conversation id
	ID   string // message id
	Time int64  // unix ms, for the order of results
	Text string
}

// Hit is a message that matches.
type Hit struct {
	Doc
	// Snippet is the part of the text around the first match.
	Snippet string
}

// Index is safe for concurrent use.
type Index struct {
	mu    sync.RWMutex
	docs  []Doc              // by doc number; a removed doc has an empty ID
	byKey map[string]int32   // "<conv>\x00<id>" → doc number
	terms map[string][]int32 // term → doc numbers, ascending
	// sorted lists every term, for prefix matches.
	sorted []string
	free   int // removed docs not yet compacted
}

// New returns an empty index.
func New() *Index {
	return &Index{byKey: map[string]int32{}, terms: map[string][]int32{}}
}

// MaxTerms caps the terms taken from one message (a 16 KiB text).
const MaxTerms = 2048

// fold lowercases and strips accents, so that "Éte" finds "été".
var folder = transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)

func fold(s string) string {
	out, _, err := transform.String(folder, s)
	if err != nil {
		out = s
	}
	return strings.ToLower(out)
}

// Terms splits text into folded words: runs of letters and digits.
func Terms(text string) []string {
	f := fold(text)
	words := strings.FieldsFunc(f, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
	if len(words) > MaxTerms {
		words = words[:MaxTerms]
	}
	return words
}

func key(conv, id string) string { return conv + "\x00" + id }

// Put indexes d, replacing what was indexed under the same conversation
// and id (an edit).
func (x *Index) Put(d Doc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(key(d.Conv, d.ID))
	n := int32(len(x.docs))
	x.docs = append(x.docs, d)
	x.byKey[key(d.Conv, d.ID)] = n
	seen := map[string]bool{}
	for _, t := range Terms(d.Text) {
		if seen[t] {
			continue
		}
		seen[t] = true
		if _, ok := x.terms[t]; !ok {
			i, _ := slices.BinarySearch(x.sorted, t)
			x.sorted = slices.Insert(x.sorted, i, t)
		}
		x.terms[t] = append(x.terms[t], n) // n is the largest: stays sorted
	}
}

// Remove drops a message (deleted for everyone).
func (x *Index) Remove(conv, id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(key(conv, id))
}

// RemoveConversation drops every message of a conversation (left, or
// removed from).
func (x *Index) RemoveConversation(conv string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for k := range x.byKey {
		if strings.HasPrefix(k, conv+"\x00") {
			x.removeLocked(k)
		}
	}
}

func (x *Index) removeLocked(k string) {
	n, ok := x.byKey[k]
	if !ok {
		return
	}
	delete(x.byKey, k)
	x.docs[n] = Doc{}
	x.free++
	// Postings of removed docs are skipped at query time and dropped when
	// a quarter of the docs are gone.
	if x.free > 1024 && x.free*4 > len(x.docs) {
		x.compactLocked()
	}
}

// compactLocked renumbers the live docs and rebuilds the postings.
func (x *Index) compactLocked() {
	renum := make([]int32, len(x.docs))
	var docs []Doc
	for i, d := range x.docs {
		renum[i] = -1
		if d.ID != "" {
			renum[i] = int32(len(docs))
			docs = append(docs, d)
		}
	}
	for t, ps := range x.terms {
		out := ps[:0]
		for _, p := range ps {
			if r := renum[p]; r >= 0 {
				out = append(out, r)
			}
		}
		if len(out) == 0 {
			delete(x.terms, t)
		} else {
			x.terms[t] = out
		}
	}
	for k, n := range x.byKey {
		x.byKey[k] = renum[n]
	}
	x.sorted = x.sorted[:0]
	for t := range x.terms {
		x.sorted = append(x.sorted, t)
	}
	slices.Sort(x.sorted)
	x.docs, x.free = docs, 0
}

// Len is the number of messages indexed.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byKey)
}

// Search returns up to limit messages that hold every word of query (the
// last one possibly as a prefix), newest first; in only one conversation
// when conv is set. An empty query finds nothing.
func (x *Index) Search(query, conv string, limit int) []Hit {
	words := Terms(query)
	if len(words) == 0 || limit <= 0 {
		return nil
	}
	x.mu.RLock()
	defer x.mu.RUnlock()

	var sets [][]int32
	for _, w := range words[:len(words)-1] {
		ps, ok := x.terms[w]
		if !ok {
			return nil
		}
		sets = append(sets, ps)
	}
	sets = append(sets, x.prefixLocked(words[len(words)-1]))
	slices.SortFunc(sets, func(a, b []int32) int { return len(a) - len(b) })
	cand := sets[0]
	for _, s := range sets[1:] {
		cand = intersect(cand, s)
		if len(cand) == 0 {
			return nil
		}
	}
	top := x.newestLocked(cand, conv, limit)
	hits := make([]Hit, len(top))
	for i, n := range top {
		hits[i] = Hit{Doc: x.docs[n]}
	}
	for i := range hits {
		hits[i].Snippet = snippet(hits[i].Text, words)
	}
	return hits
}

// prefixLocked is the union of the postings of every term with prefix p.
func (x *Index) prefixLocked(p string) []int32 {
	i, _ := slices.BinarySearch(x.sorted, p)
	var lists [][]int32
	for ; i < len(x.sorted) && strings.HasPrefix(x.sorted[i], p); i++ {
		lists = append(lists, x.terms[x.sorted[i]])
	}
	if len(lists) == 1 {
		return lists[0]
	}
	// A union of many lists (a short prefix): a bitset, read back in
	// order, costs no sort.
	set := make([]uint64, (len(x.docs)+63)/64)
	total := 0
	for _, l := range lists {
		total += len(l)
		for _, n := range l {
			set[n/64] |= 1 << (n % 64)
		}
	}
	all := make([]int32, 0, total)
	for w, v := range set {
		for v != 0 {
			b := bits.TrailingZeros64(v)
			all = append(all, int32(w*64+b))
			v &= v - 1
		}
	}
	return all
}

// newestLocked picks the limit newest live docs of cand (in conv, when
// set), newest first; of equal times the later indexed first. A bounded
// insertion: no copy or sort of all the candidates.
func (x *Index) newestLocked(cand []int32, conv string, limit int) []int32 {
	top := make([]int32, 0, limit+1)
	before := func(a, b int32) bool { // a ranks before b
		ta, tb := x.docs[a].Time, x.docs[b].Time
		return ta > tb || (ta == tb && a > b)
	}
	for i := len(cand) - 1; i >= 0; i-- {
		n := cand[i]
		d := &x.docs[n]
		if d.ID == "" || (conv != "" && d.Conv != conv) {
			continue
		}
		if len(top) == limit && !before(n, top[limit-1]) {
			continue
		}
		j := len(top)
		for j > 0 && before(n, top[j-1]) {
			j--
		}
		top = slices.Insert(top, j, n)
		if len(top) > limit {
			top = top[:limit]
		}
	}
	return top
}

func intersect(a, b []int32) []int32 {
	var out []int32
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] == b[j]:
			out = append(out, a[i])
			i++
			j++
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return out
}

// snippet is about 120 characters of text around the first word found.
func snippet(text string, words []string) string {
	const width = 120
	r := []rune(text)
	if len(r) <= width {
		return text
	}
	lower := []rune(fold(text))
	at := 0
	if len(lower) == len(r) {
		for _, w := range words {
			if i := indexRunes(lower, []rune(w)); i >= 0 {
				at = i
				break
			}
		}
	}
	start := max(0, min(at-width/3, len(r)-width))
	out := string(r[start : start+width])
	if start > 0 {
		out = "…" + out
	}
	if start+width < len(r) {
		out += "…"
	}
	return out
}

func indexRunes(s, sub []rune) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if slices.Equal(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
