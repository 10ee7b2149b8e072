package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sextant/sextant/identity"
)

// Cgroup is a cgroup v2 subtree a test made for itself: an agent started
// with --cgroup Path sees only the processes in it, so tests of different
// packages running at once never see each other's traffic.
type Cgroup struct {
	Path string // relative to the cgroup2 mount, e.g. /sextant-test/e2e-1234-node1
	Dir  string // the directory
}

// NewCgroup makes a cgroup for the test, named after name and this
// process, and removes it when the test ends (its processes are gone by
// then).
func NewCgroup(tb testing.TB, name string) *Cgroup {
	tb.Helper()
	RequireRoot(tb)
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	if root == "" {
		Missing(tb, "no cgroup v2 hierarchy mounted")
	}
	rel := fmt.Sprintf("/sextant-test/%s-%d", name, os.Getpid())
	cg := &Cgroup{Path: rel, Dir: filepath.Join(root, rel)}
	if err := os.MkdirAll(cg.Dir, 0o755); err != nil {
		tb.Fatalf("create cgroup %s: %v", cg.Dir, err)
	}
	tb.Cleanup(func() {
		// A process may need a moment to leave after it exited.
		for range 100 {
			if err := os.Remove(cg.Dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		tb.Errorf("cgroup %s left behind", cg.Dir)
	})
	return cg
}

// Command returns a command that runs name with args inside the cgroup
// from its first instruction: a shell moves itself in, then execs it, so
// that every connection of the program belongs to the cgroup.
func (cg *Cgroup) Command(name string, args ...string) *exec.Cmd {
	sh := []string{"-c", `echo $$ > "$0" && shift && exec "$@"`, filepath.Join(cg.Dir, "cgroup.procs"), "--", name}
	return exec.Command("/bin/sh", append(sh, args...)...)
}

// Join moves this whole test process (every thread) into the cgroup until
// the test ends, for workloads that run in the test process itself.
func (cg *Cgroup) Join(tb testing.TB) {
	tb.Helper()
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		tb.Fatal(err)
	}
	back := filepath.Join(identity.Cgroup2Mount("/proc/self/mountinfo"), identity.UnifiedCgroup(own), "cgroup.procs")
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(cg.Dir, "cgroup.procs"), pid, 0); err != nil {
		tb.Fatalf("join cgroup %s: %v", cg.Path, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(back, pid, 0); err != nil {
			tb.Errorf("leave cgroup %s: %v", cg.Path, err)
		}
	})
}

// Procs lists the pids in the cgroup now.
func (cg *Cgroup) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(cg.Dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		if n, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}
