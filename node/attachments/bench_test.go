package attachments

import (
	"bufio"
	"context"
	"flag"
	"io"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/glitr-chat/glitr/internal/testsupport"
	"github.com/glitr-chat/glitr/protocol"
)

// randReader is a stream of pseudo-random bytes, so that a 256 MiB file
// is never in memory as a whole.
func randReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(mrand.NewChaCha8(s), n)
}

var (
	benchSize  = flag.Int("attachments.mib", 0, "file size in MiB for BenchmarkTransfer (default 256, 8 with -short)")
	benchChunk = flag.Int("attachments.chunk", 0, "chunk size in KiB for BenchmarkTransfer (default protocol.DefaultChunkSize)")
)

const rawProtocol = "/glitr/bench-raw/1.0.0"

// serveRaw writes n bytes on each stream opened to it, 256 KiB at a time
// through a buffered writer: the same hosts' ceiling for one stream.
func serveRaw(h host.Host, n int64) {
	buf := make([]byte, 256<<10)
	h.SetStreamHandler(rawProtocol, func(s network.Stream) {
		bw := bufio.NewWriterSize(s, 256<<10)
		for left := n; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := bw.Write(buf[:k]); err != nil {
				s.Reset()
				return
			}
			left -= k
		}
		if bw.Flush() != nil {
			s.Reset()
			return
		}
		s.Close()
	})
}

func fetchRaw(b *testing.B, h host.Host, p peer.ID, n int64) time.Duration {
	start := time.Now()
	s, err := h.NewStream(context.Background(), p, rawProtocol)
	if err != nil {
		b.Fatal(err)
	}
	got, err := io.Copy(io.Discard, bufio.NewReaderSize(s, 64<<10))
	if err != nil || got != n {
		b.Fatalf("raw stream: %d of %d bytes, %v", got, n, err)
	}
	s.Close()
	return time.Since(start)
}

// memPeak samples the Go runtime's memory (everything it has mapped:
// heap, stacks, GC metadata) every few milliseconds; /proc's VmHWM, reset
// first, adds what the runtime does not see (pebble's cgo-free caches are
// Go memory, so this is little: binaries and libraries).
type memPeak struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func startMemPeak() *memPeak {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
	m := &memPeak{stop: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			m.peak = max(m.peak, sample[0].Value.Uint64()-sample[1].Value.Uint64())
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memPeak) end() (goMB, hwmMB float64) {
	close(m.stop)
	m.wg.Wait()
	return float64(m.peak) / 1e6, vmHWM() / 1e6
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM is the process's peak RSS in bytes (0 where /proc has none).
func vmHWM() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkTransfer moves one file (256 MiB; 8 MiB with -short) between
// two loopback hosts in one process, with a raw stream of as many bytes on
// the same connection in the same run. Both stores are pebble (the node's
// options) with the chunks in pebble too ("pebble") or in files beside it
// ("files"). Reported: both rates (MB/s of file bytes), their ratio, and
// the peak memory of the process during the transfer (sender and
// receiver together).
func BenchmarkTransfer(b *testing.B) {
	b.Run("pebble", func(b *testing.B) { benchTransfer(b, false) })
	b.Run("files", func(b *testing.B) { benchTransfer(b, true) })
}

func benchStore(b *testing.B, files bool) (*Store, func()) {
	d := openPebble(b, b.TempDir())
	opts := StoreOptions{}
	if files {
		opts.Dir = b.TempDir()
	}
	st, err := OpenStore(context.Background(), d, opts)
	if err != nil {
		b.Fatal(err)
	}
	return st, func() { d.Close() }
}

func benchTransfer(b *testing.B, files bool) {
	size := int64(protocol.MaxFileSize)
	if testing.Short() {
		size = 8 << 20
	}
	if *benchSize > 0 {
		size = int64(*benchSize) << 20
	}
	ctx := context.Background()
	a := testsupport.Host(b)
	r := testsupport.Host(b)
	testsupport.Connect(b, r, a)
	serveRaw(a, size)

	sa, closeA := benchStore(b, files)
	defer closeA()
	m, err := sa.Import(ctx, randReader(1, size), Meta{Size: size, Name: "film.mkv", Type: "video/x-matroska", Owner: "msg", ChunkSize: uint32(*benchChunk) << 10})
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(a, sa, allowAll, ServerOptions{Rate: 1e12})
	defer srv.Close()

	var raw, chunked, rawCPU, chunkCPU time.Duration
	var goMB, hwmMB float64
	for b.Loop() {
		c0 := cpuTime()
		raw += fetchRaw(b, r, a.ID(), size)
		rawCPU += cpuTime() - c0

		b.StopTimer()
		sr, closeR := benchStore(b, files)
		f := NewFetcher(r, sr, FetchOptions{})
		peak := startMemPeak()
		b.StartTimer()

		start, c0 := time.Now(), cpuTime()
		st, err := f.Fetch(ctx, m, "msg", StaticProviders(a.ID()), nil)
		if err != nil {
			b.Fatal(err)
		}
		chunked += time.Since(start)
		chunkCPU += cpuTime() - c0

		b.StopTimer()
		g, h := peak.end()
		goMB, hwmMB = max(goMB, g), max(hwmMB, h)
		if st.Chunks != m.Chunks()+1 {
			b.Fatalf("fetched %d chunks of %d", st.Chunks, m.Chunks()+1)
		}
		closeR()
		b.StartTimer()
	}
	n := float64(b.N)
	rawMBs := float64(size) * n / raw.Seconds() / 1e6
	chunkMBs := float64(size) * n / chunked.Seconds() / 1e6
	b.ReportMetric(rawMBs, "raw-MB/s")
	b.ReportMetric(chunkMBs, "file-MB/s")
	b.ReportMetric(chunkMBs/rawMBs, "ratio")
	// CPU per byte tells a busy machine (both slow, same CPU) from a
	// protocol that waits (slower, less CPU).
	b.ReportMetric(rawCPU.Seconds()*1e9/float64(size)/n, "raw-cpu-ns/B")
	b.ReportMetric(chunkCPU.Seconds()*1e9/float64(size)/n, "file-cpu-ns/B")
	b.ReportMetric(goMB, "peak-go-MB")
	b.ReportMetric(hwmMB, "peak-rss-MB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFirstThumbnail measures the time from a message's manifest to
// its thumbnail's bytes on the receiver: a 5 MB photo with a 30 KB
// thumbnail, fetched eagerly while the photo's own fetch starts at the
// same moment (auto-download), over loopback from the sender, into a
// pebble store with chunk files.
func BenchmarkFirstThumbnail(b *testing.B) {
	ctx := context.Background()
	a := testsupport.Host(b)
	r := testsupport.Host(b)
	testsupport.Connect(b, r, a)
	sa := memStore(b, 0)
	thumb, err := sa.Import(ctx, randReader(2, 30_000), Meta{Size: 30_000, ChunkSize: protocol.MinChunkSize, Type: "image/webp", Width: 320, Height: 240, Owner: "msg"})
	if err != nil {
		b.Fatal(err)
	}
	t, err := ThumbOf(thumb)
	if err != nil {
		b.Fatal(err)
	}
	photo, err := sa.Import(ctx, randReader(3, 5_000_000), Meta{Size: 5_000_000, Type: "image/jpeg", Width: 4032, Height: 3024, Thumb: t, Owner: "msg"})
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(a, sa, allowAll, ServerOptions{})
	defer srv.Close()
	sr, closeR := benchStore(b, true)
	defer closeR()
	f := NewFetcher(r, sr, FetchOptions{})
	provs := StaticProviders(a.ID())

	var thumbTime, photoTime time.Duration
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.Fetch(ctx, photo, "msg", provs, nil); err != nil {
				b.Error(err)
			}
			photoTime += time.Since(start)
		}()
		tm := photo.Thumb.Manifest()
		if _, err := f.Fetch(ctx, tm, "msg", provs, nil); err != nil {
			b.Fatal(err)
		}
		if err := sr.Open(ctx, tm, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
		thumbTime += time.Since(start)
		wg.Wait()

		b.StopTimer()
		for _, root := range []Ref{photo.Root, tm.Root} {
			if err := sr.Delete(ctx, root); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(thumbTime.Microseconds())/1000/float64(b.N), "thumb-ms")
	b.ReportMetric(float64(photoTime.Microseconds())/1000/float64(b.N), "photo-ms")
}

// BenchmarkImportOpen seals a file into a store with chunk files and
// opens it again (256 MiB; 8 MiB with -short), reporting both rates and
// the peak memory of each, which must not grow with the file.
func BenchmarkImportOpen(b *testing.B) {
	size := int64(protocol.MaxFileSize)
	if testing.Short() {
		size = 8 << 20
	}
	if *benchSize > 0 {
		size = int64(*benchSize) << 20
	}
	ctx := context.Background()
	var imp, opn time.Duration
	var impMB, opnMB float64
	for b.Loop() {
		b.StopTimer()
		st, closeSt := benchStore(b, true)
		peak := startMemPeak()
		b.StartTimer()
		start := time.Now()
		m, err := st.Import(ctx, randReader(4, size), Meta{Size: size, Owner: "msg"})
		if err != nil {
			b.Fatal(err)
		}
		imp += time.Since(start)
		b.StopTimer()
		_, h := peak.end()
		impMB = max(impMB, h)
		peak = startMemPeak()
		b.StartTimer()
		start = time.Now()
		if err := st.Open(ctx, m, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
		opn += time.Since(start)
		b.StopTimer()
		_, h = peak.end()
		opnMB = max(opnMB, h)
		closeSt()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(size)*n/imp.Seconds()/1e6, "import-MB/s")
	b.ReportMetric(float64(size)*n/opn.Seconds()/1e6, "open-MB/s")
	b.ReportMetric(impMB, "import-peak-rss-MB")
	b.ReportMetric(opnMB, "open-peak-rss-MB")
	b.ReportMetric(0, "ns/op")
}
