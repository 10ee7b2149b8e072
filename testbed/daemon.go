package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Sextant returns the sextant CLI to run: $SEXTANT_BIN when set (e.g. the
// one `task build` made), else a fresh build of ./cmd/sextant, once per
// test process.
func Sextant(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("SEXTANT_BIN"); bin != "" {
		return bin
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "sextant-test-bin-")
		if err == nil {
			// Tests also run the CLI as an unprivileged user.
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			built.err = err
			return
		}
		bin := filepath.Join(dir, "sextant")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/sextant")
		cmd.Dir = repoRoot(tb)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/sextant: %v\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		tb.Fatal(built.err)
	}
	return built.bin
}

var built struct {
	once sync.Once
	bin  string
	err  error
}

// Tool returns the path of an external program the test drives (curl,
// h2load, nghttpd, python3 …); see Missing for when it is not installed.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, "%s not installed (go tool task setup installs the test peers): %v", name, err)
	}
	return p
}

// Daemon is a long-running process of a test (an agent, a relay): its
// output is kept, its tail shown when the test fails, and it is stopped
// with SIGTERM (killed after 30s) when the test ends.
type Daemon struct {
	tb     testing.TB
	Name   string
	Cmd    *exec.Cmd
	logs   logBuffer
	exited chan struct{}
	err    error
}

// StartDaemon starts bin with args.
func StartDaemon(tb testing.TB, name, bin string, args ...string) *Daemon {
	tb.Helper()
	return StartCommand(tb, name, exec.Command(bin, args...))
}

// StartCommand starts cmd as a daemon.
func StartCommand(tb testing.TB, name string, cmd *exec.Cmd) *Daemon {
	tb.Helper()
	d := &Daemon{tb: tb, Name: name, Cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &d.logs, &d.logs
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // gone with the test process
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	tb.Cleanup(func() {
		d.Stop()
		if tb.Failed() {
			tb.Logf("%s log (tail):\n%s", name, d.Tail(80))
		}
	})
	return d
}

// Logs is everything the daemon printed so far.
func (d *Daemon) Logs() string { return d.logs.String() }

// Tail is the last n lines of its output.
func (d *Daemon) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(d.logs.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Exited reports whether the daemon ended, and how.
func (d *Daemon) Exited() (bool, error) {
	select {
	case <-d.exited:
		return true, d.err
	default:
		return false, nil
	}
}

// Stop ends the daemon gracefully (SIGTERM) and fails the test when it
// exits with an error or not within 30s.
func (d *Daemon) Stop() {
	if done, _ := d.Exited(); done {
		return
	}
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.err != nil {
			d.tb.Errorf("%s exit: %v", d.Name, d.err)
		}
	case <-time.After(30 * time.Second):
		_ = d.Cmd.Process.Kill()
		<-d.exited
		d.tb.Errorf("%s did not stop within 30s of SIGTERM", d.Name)
	}
}

// Kill ends it at once (SIGKILL), as a crash would.
func (d *Daemon) Kill() {
	_ = d.Cmd.Process.Kill()
	<-d.exited
}

// Await polls cond until it returns nil, failing the test after timeout
// with the last error (and the daemon's log tail, through Cleanup). A
// daemon that exits meanwhile fails the test at once.
func (d *Daemon) Await(what string, timeout time.Duration, cond func() error) {
	d.tb.Helper()
	Await(d.tb, what, timeout, func() error {
		if done, err := d.Exited(); done {
			d.tb.Fatalf("%s exited while waiting for %s: %v", d.Name, what, err)
		}
		return cond()
	})
}

// Await polls cond every 50ms until it returns nil; after timeout it
// fails the test with cond's last error. Waits are generous bounds, not
// timing assertions: the machines are small and shared.
func Await(tb testing.TB, what string, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Hubble returns the stock hubble CLI (Cilium v1.20.2), built from
// tools/hubble into bin/hubble by `go tool task tools`, or here once when
// missing (a few minutes).
func Hubble(tb testing.TB) string {
	tb.Helper()
	root := repoRoot(tb)
	bin := filepath.Join(root, "bin", "hubble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	tb.Log("building the hubble CLI from tools/hubble (takes a few minutes once)")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/cilium/cilium/hubble")
	cmd.Dir = filepath.Join(root, "tools", "hubble")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build hubble CLI in tools/hubble: %v\n%s", err, out)
	}
	return bin
}
