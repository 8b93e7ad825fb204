package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/glitr-chat/glitr/internal/testsupport"
)

// roleProc is this test binary run again inside a network namespace as one
// role of a lab (TestNATLabRole, TestPartitionRole). The role writes its
// events as JSON lines on stdout; every other line (and stderr) goes to
// output. It exits when its stdin closes.
type roleProc[E any] struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan E
	output testsupport.Buffer
	done   chan struct{}
	err    error // of cmd.Wait, valid after done
}

// startRole starts the test named by run (a -test.run pattern) of the test
// binary self in namespace ns, with env added and timeout as a backstop. A stdout line is an event
// when it decodes into an E for which isEvent holds; take sees each event
// first, and one it returns false for stays out of events (a report the
// caller records itself). Lines may be up to maxLine bytes.
func startRole[E any](t testing.TB, name, ns, self, run string, timeout time.Duration, env []string, maxLine int, isEvent, take func(E) bool) *roleProc[E] {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, self,
		"-test.run="+run, "-test.count=1", "-test.timeout="+timeout.String())
	cmd.Env = append(os.Environ(), env...)
	p := &roleProc[E]{name: name, cmd: cmd, events: make(chan E, 64), done: make(chan struct{})}
	cmd.Stderr = &p.output
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, ns, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			line := sc.Bytes()
			var ev E
			if !bytes.HasPrefix(line, []byte("{")) || json.Unmarshal(line, &ev) != nil || !isEvent(ev) {
				fmt.Fprintf(&p.output, "%s\n", line)
				continue
			}
			if take(ev) {
				p.events <- ev
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(p.events)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// stopRoles stops the processes together (each takes a second to exit
// under the race detector): closing stdin makes a role shut its host down
// and exit; one that has not exited 5 s later is killed.
func stopRoles[E any](procs []*roleProc[E]) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			_ = p.stdin.Close()
			select {
			case <-p.done:
				return
			case <-time.After(5 * time.Second):
			}
			_ = p.cmd.Process.Kill()
			<-p.done
		})
	}
	wg.Wait()
}

// labSkip skips a namespace lab's test loudly: the message (headed by
// banner, naming the test that did not run) also goes to stderr, so that it
// shows without -v when go test runs in a package directory, and is
// appended to the file $GLITR_NATLAB_SKIPFILE names, which `make test`
// prints at the end (with package arguments, go test shows a passing
// package's output only with -v). With GLITR_NATLAB_REQUIRED=1 (CI, where
// the tools are there) the test fails instead.
func labSkip(t testing.TB, banner, test, format string, args ...any) {
	t.Helper()
	msg := banner + ": " + fmt.Sprintf(format, args...) + " (" + test + " did NOT run)"
	fmt.Fprintln(os.Stderr, msg)
	if f := os.Getenv("GLITR_NATLAB_SKIPFILE"); f != "" {
		// Appended: the other lab may have written its own line.
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			_, _ = fh.WriteString(msg + "\n")
			_ = fh.Close()
		}
	}
	if os.Getenv("GLITR_NATLAB_REQUIRED") == "1" {
		t.Fatal(msg + "; GLITR_NATLAB_REQUIRED=1 makes this a failure")
	}
	t.Skip(msg)
}

// netnsProbe makes and removes a network namespace named prefix+pid: root
// without CAP_SYS_ADMIN (an unprivileged container) cannot, which is the
// environment, not a failure of Glitr (the error says why, for a skip). A
// namespace made but not removable fails the test.
func netnsProbe(t testing.TB, prefix string) error {
	t.Helper()
	probe := fmt.Sprintf("%s%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace (%v: %s)", err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command("ip", "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", probe, err, out)
	}
	return nil
}
