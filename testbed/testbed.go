// Package testbed starts the real systems sextant's tests run against
// (Prometheus, ClickHouse, Jaeger), on loopback, and stops them when the
// test ends. It is imported by tests only.
package testbed

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Missing skips the test because something it needs is not there, except
// under CI=true, where the system must be installed and a skip would let a
// broken setup pass unnoticed: there it fails.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true and the test cannot run: "+format, args...)
	}
	tb.Skipf(format, args...)
}

// RequireRoot stops a test that loads eBPF programs unless it runs as root
// (see Missing).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "needs root to load eBPF programs (euid %d)", os.Geteuid())
	}
}

// FreePort returns a loopback port nobody listens on right now, for
// servers that cannot listen on :0 and report their port. The small race
// with other binders is acceptable on a test machine. It never returns a
// port twice in one process: the kernel may hand the same free port to two
// calls in a row, and a test that picks an agent's and a relay's ports
// before starting either then had both bind one (a CI failure,
// 2026-12-03).
func FreePort(tb testing.TB) int {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("find free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	tb.Fatal("find free port: every port the kernel offered was handed out before")
	return 0
}

// handedOut are the ports FreePort returned in this process.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreeAddr is FreePort as host:port.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(tb))
}

// freePorts returns n distinct free ports.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = FreePort(tb)
	}
	return ports
}

// repoRoot is the directory of sextant's go.mod, wherever the test runs.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/sextant/sextant\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("repository root (go.mod of github.com/sextant/sextant) not found")
		}
		dir = parent
	}
}

// Output collects a process's output: its pipes write it while a
// failing test reads it.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Output) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *Output) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
