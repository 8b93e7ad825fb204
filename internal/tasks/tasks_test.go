package tasks

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Go racing with Close must neither trip the race detector nor start work
// after Close has returned.
func TestTasksGoDuringClose(t *testing.T) {
	for range 50 {
		var tk Group
		var ran, afterClose atomic.Int32
		var closed atomic.Bool
		var starters sync.WaitGroup
		for range 8 {
			starters.Go(func() {
				for range 20 {
					tk.Go(func() {
						if closed.Load() {
							afterClose.Add(1)
						}
						ran.Add(1)
					})
				}
			})
		}
		tk.Close()
		closed.Store(true)
		starters.Wait()
		if afterClose.Load() != 0 {
			t.Fatalf("%d tasks ran after Close returned", afterClose.Load())
		}
		if tk.Go(func() {}) {
			t.Fatal("Go accepted work after Close")
		}
	}
}
