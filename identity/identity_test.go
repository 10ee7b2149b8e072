package identity_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/testbed"
)

// The cgroup path comes from the kernel's cgroup id: the inode of the
// cgroup v2 directory. Checked against this process's own cgroup.
func TestCgroupPathFromID(t *testing.T) {
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	c := identity.NewCgroupPaths("/proc")
	if root == "" {
		testbed.Missing(t, "no cgroup v2 hierarchy mounted")
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := identity.UnifiedCgroup(b)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, want), &st); err != nil {
		t.Fatal(err)
	}
	if got := c.Path(st.Ino); got != want {
		t.Fatalf("path(%d) = %q, want %q", st.Ino, got, want)
	}
}
