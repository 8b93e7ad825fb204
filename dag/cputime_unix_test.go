//go:build unix

package dag

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) used by the process
// so far, background goroutines included; benchmarks report it next to
// wall time, which on a loaded machine says little.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
