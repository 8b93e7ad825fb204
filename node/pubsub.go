package node

import (
	"context"
	"crypto/sha256"
	"math"
	"net"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxGossipMessage caps a gossiped message: one envelope of at most 64 KiB
// plus its CBOR header.
const MaxGossipMessage = 64<<10 + 1024

// MessageID derives a gossipsub message id from the message bytes alone. We
// gossip without authors or sequence numbers (StrictNoSign), so identical
// bytes are the same message — which is right for content-addressed blocks.
func MessageID(m *pb.Message) string {
	sum := sha256.Sum256(m.Data)
	return string(sum[:])
}

// penalties is the application-specific part of gossipsub peer scoring: the
// sync layer reports peers that send bad blocks, and their score sinks until
// gossipsub stops exchanging with them. A penalty decays continuously (it
// halves every penaltyHalfLife), so a peer is let back in the moment it
// drops below a threshold, not at the next tick of a clock.
type penalties struct {
	now func() time.Time

	mu    sync.Mutex
	score map[peer.ID]penalty
}

// penalty is a peer's penalty as it stood at a time.
type penalty struct {
	amount float64
	at     time.Time
}

// penaltyHalfLife is how long a penalty takes to halve.
const penaltyHalfLife = time.Minute

func newPenalties(now func() time.Time) *penalties {
	if now == nil {
		now = time.Now
	}
	return &penalties{now: now, score: map[peer.ID]penalty{}}
}

// valueLocked is id's penalty at now. p.mu is held.
func (p *penalties) valueLocked(id peer.ID, now time.Time) float64 {
	e, ok := p.score[id]
	if !ok {
		return 0
	}
	return e.amount * math.Exp2(-now.Sub(e.at).Seconds()/penaltyHalfLife.Seconds())
}

// add raises id's penalty by amount and returns the total.
func (p *penalties) add(id peer.ID, amount float64) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	v := p.valueLocked(id, now) + amount
	p.score[id] = penalty{amount: v, at: now}
	return v
}

// get is id's score from penalties (0 or less), what gossipsub adds to its
// own score of the peer.
func (p *penalties) get(id peer.ID) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return -p.valueLocked(id, p.now())
}

// graylisted reports whether id's penalty puts it past the graylist
// threshold, where gossipsub ignores it and the host refuses it.
func (p *penalties) graylisted(id peer.ID) bool {
	return p.get(id) <= scoreThresholds.GraylistThreshold
}

// prune forgets the penalties that have decayed to almost nothing, so the
// table holds only peers that misbehaved lately.
func (p *penalties) prune() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for id := range p.score {
		if p.valueLocked(id, now) < 0.5 {
			delete(p.score, id)
		}
	}
}

// Thresholds: a peer below graylist is ignored entirely.
var scoreThresholds = pubsub.PeerScoreThresholds{
	GossipThreshold:             -10,
	PublishThreshold:            -50,
	GraylistThreshold:           -80,
	AcceptPXThreshold:           10,
	OpportunisticGraftThreshold: 5,
}

func newPubSub(ctx context.Context, h host.Host, pen *penalties) (*pubsub.PubSub, error) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	params := &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:            pen.get,
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    -5,
		IPColocationFactorThreshold: 8,
		IPColocationFactorWhitelist: []*net.IPNet{loopback},
		BehaviourPenaltyWeight:      -1,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:               time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 10 * time.Minute,
	}
	return pubsub.NewGossipSub(ctx, h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMaxMessageSize(MaxGossipMessage),
		pubsub.WithPeerScore(params, &scoreThresholds),
		// Peer exchange would hand our contacts' addresses to whoever
		// prunes us; discovery goes through the DHT instead.
		pubsub.WithPeerExchange(false),
	)
}
