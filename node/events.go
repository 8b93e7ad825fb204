package node

import (
	"context"
	"sync"
)

// Event tells API clients that something changed. Events carry ids, never
// message text: clients fetch what they are allowed to see.
type Event struct {
	Seq          uint64 `json:"seq"`
	Kind         string `json:"kind"` // conversation, message, state
	Conversation string `json:"conversation,omitempty"`
	Message      string `json:"message,omitempty"`
}

// eventLog keeps the most recent events with increasing sequence numbers,
// so a client that reconnects with the last sequence it saw gets exactly
// what it missed (or learns that it must refetch, when too much was lost).
type eventLog struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish
	buf     []Event
	next    uint64
	maxKept int
}

func newEventLog(n int) *eventLog {
	return &eventLog{next: 1, maxKept: n, changed: make(chan struct{})}
}

func (l *eventLog) publish(e Event) {
	l.mu.Lock()
	e.Seq = l.next
	l.next++
	l.buf = append(l.buf, e)
	if len(l.buf) > l.maxKept {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-l.maxKept:]...)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// since returns the events after seq; gap is true when some were already
// dropped from the log.
func (l *eventLog) since(seq uint64) (events []Event, gap bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sinceLocked(seq)
}

func (l *eventLog) sinceLocked(seq uint64) ([]Event, bool) {
	if len(l.buf) == 0 {
		return nil, false
	}
	first := l.buf[0].Seq
	if seq+1 < first {
		return append([]Event(nil), l.buf...), true
	}
	i := int(seq + 1 - first)
	if i >= len(l.buf) {
		return nil, false
	}
	return append([]Event(nil), l.buf[i:]...), false
}

// wait blocks until there are events after seq or ctx ends.
func (l *eventLog) wait(ctx context.Context, seq uint64) ([]Event, bool, error) {
	for {
		l.mu.Lock()
		if l.next > seq+1 {
			ev, gap := l.sinceLocked(seq)
			l.mu.Unlock()
			return ev, gap, nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-ch:
		}
	}
}
