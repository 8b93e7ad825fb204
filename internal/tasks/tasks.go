// Package tasks tracks the background goroutines of a service so that its
// shutdown can wait for them.
package tasks

import "sync"

// Group tracks background goroutines so that shutdown can wait for them.
// The zero value is ready. Unlike a bare sync.WaitGroup it may be started from any goroutine at any
// time: once Close has begun, Go refuses new work instead of racing with
// Wait (a gossip validator or a stream handler can fire during shutdown).
type Group struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs f in a new goroutine unless Close has been called; it reports
// whether f was started.
func (t *Group) Go(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Go(f)
	return true
}

// Close refuses new work and waits for what is running.
func (t *Group) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
