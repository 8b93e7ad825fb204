package node

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// MemoryConfig bounds the process's heap.
//
// Why a limit at all: the store's pebble memtables are 64 MiB
// (dag.PebbleOptions, chosen for catch-up throughput), and without cgo
// pebble allocates them in the Go heap. After a write burst (20,000 sends)
// the active memtable and the one pebble keeps for reuse hold 128 MiB of
// live, pointer-free heap, and the GC's default goal (twice the live heap)
// let the process grow to 245-383 MB of RSS on garbage it had no reason to
// keep. A soft limit makes the GC collect that garbage; collecting is cheap
// here, since the arenas hold no pointers to scan.
type MemoryConfig struct {
	// SoftLimitMB is the Go runtime's soft memory limit in MiB: 0 picks
	// DefaultSoftLimitMB, -1 turns the limit off (GOGC alone decides).
	// The limit rises with the live heap (never below 1.25 × live plus
	// 32 MiB), so a node whose state outgrows it never spends its CPU on
	// garbage collection. The GOMEMLIMIT environment variable, when set,
	// takes precedence.
	SoftLimitMB int `json:"softLimitMB"`
}

// DefaultSoftLimitMB is the soft memory limit when the config names none.
const DefaultSoftLimitMB = 160

// memoryHeadroom is the least room the limit leaves above the live heap.
const memoryHeadroom = 32 << 20

// memoryGuardEvery is how often the limit follows the live heap.
const memoryGuardEvery = 10 * time.Second

// GuardMemory applies cfg's soft memory limit to the process and keeps it
// above the live heap until ctx ends (then the limit is lifted again). The
// limit is process-wide: the process that runs the node (cmd/node) calls
// this once; tests running several nodes in one process do not.
func GuardMemory(ctx context.Context, cfg MemoryConfig, log *slog.Logger) {
	if cfg.SoftLimitMB < 0 {
		return
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "limit", v)
		return
	}
	floor := int64(cmp.Or(cfg.SoftLimitMB, DefaultSoftLimitMB)) << 20
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() int64 {
		metrics.Read(sample)
		var live int64
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = int64(sample[0].Value.Uint64())
		}
		limit := memoryLimitFor(floor, live)
		debug.SetMemoryLimit(limit)
		return limit
	}
	limit := set()
	log.Debug("soft memory limit", "MiB", limit>>20)
	go func() {
		t := time.NewTicker(memoryGuardEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				debug.SetMemoryLimit(math.MaxInt64) // no limit
				return
			case <-t.C:
				if l := set(); l != limit {
					log.Debug("soft memory limit follows the live heap", "MiB", l>>20)
					limit = l
				}
			}
		}
	}()
}

// memoryLimitFor is the limit for a live heap: the floor, or more when the
// live heap needs room above it.
func memoryLimitFor(floor, live int64) int64 {
	return max(floor, live+max(live/4, memoryHeadroom))
}
