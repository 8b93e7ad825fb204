package node

import (
	"math"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A penalty decays continuously: a graylisted peer is let back in as soon
// as its penalty drops below the threshold, not up to a minute later at a
// decay tick (issue 14, item 4).
func TestPenaltyDecaysContinuously(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p := newPenalties(func() time.Time { return now })
	id := peer.ID("offender")
	p.add(id, 100)
	if !p.graylisted(id) {
		t.Fatal("a penalty of 100 does not graylist")
	}
	// 100 · 2^(−t/60 s) crosses 80 at t = 60 s · log2(100/80) ≈ 19.3 s.
	cross := time.Duration(float64(penaltyHalfLife) * math.Log2(100.0/-scoreThresholds.GraylistThreshold))
	now = now.Add(cross - 100*time.Millisecond)
	if !p.graylisted(id) {
		t.Fatalf("let back in %v before the penalty crossed the threshold", 100*time.Millisecond)
	}
	now = now.Add(200 * time.Millisecond)
	if p.graylisted(id) {
		t.Fatalf("still graylisted %v after the penalty crossed the threshold", 100*time.Millisecond)
	}
	// A new penalty adds to what is left of the old one.
	if got := p.add(id, 10); math.Abs(got-(-scoreThresholds.GraylistThreshold+10)) > 0.1 {
		t.Fatalf("penalty after a second offence %.2f, want ≈ %.2f", got, -scoreThresholds.GraylistThreshold+10)
	}
	// Pruning forgets what decayed to nothing, and only that.
	p.add(peer.ID("other"), 1)
	now = now.Add(2 * penaltyHalfLife)
	p.prune()
	p.mu.Lock()
	_, keptOffender := p.score[id]
	_, keptOther := p.score[peer.ID("other")]
	p.mu.Unlock()
	if !keptOffender || keptOther {
		t.Fatalf("prune kept offender %v (want true), other %v (want false)", keptOffender, keptOther)
	}
}
