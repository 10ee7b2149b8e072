package testbed

import (
	"crypto/sha256"
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
	built.once.Do(func() { built.bin, built.err = buildSextant(repoRoot(tb)) })
	if built.err != nil {
		tb.Fatal(built.err)
	}
	return built.bin
}

// buildSextant builds ./cmd/sextant into one directory all test processes
// share, named by the binary's content: test packages running at once and
// runs of the same code share one file, and copies older than a day (of
// code since changed) are removed. The directory is readable by all: tests
// also run the CLI as an unprivileged user.
func buildSextant(root string) (string, error) {
	dir := filepath.Join(os.TempDir(), "sextant-test-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "build-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/sextant")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sextant: %v\n%s", err, out)
	}
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, fmt.Sprintf("sextant-%x", sha256.Sum256(b))[:len("sextant-")+16])
	if _, err := os.Stat(bin); err == nil {
		now := time.Now()
		_ = os.Chtimes(bin, now, now) // in use: not one of the stale ones
	} else {
		if err := os.Chmod(tmp.Name(), 0o755); err != nil {
			return "", err
		}
		if err := os.Rename(tmp.Name(), bin); err != nil {
			return "", err
		}
	}
	old, _ := filepath.Glob(filepath.Join(dir, "sextant-*"))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && p != bin && time.Since(fi.ModTime()) > 24*time.Hour {
			os.Remove(p)
		}
	}
	return bin, nil
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
	logs   Output
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
