package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sextant/sextant/identity"
)

// openScope opens the cgroup v2 directory that Options.Cgroup names: a
// directory path, or a cgroup id (the directory's inode number, what
// bpf_get_current_cgroup_id and ConnInfo.CgroupID give), found under the
// cgroup2 mount.
func openScope(cgroup string) (*os.File, error) {
	dir := cgroup
	if id, err := strconv.ParseUint(cgroup, 10, 64); err == nil {
		if dir, err = cgroupDirOf(id); err != nil {
			return nil, err
		}
	} else if !filepath.IsAbs(cgroup) {
		return nil, fmt.Errorf("cgroup %q: want a cgroup v2 directory (absolute path) or a cgroup id", cgroup)
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("cgroup %s: statfs: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("cgroup %s: not a cgroup v2 directory (filesystem magic %#x)", dir, st.Type)
	}
	return f, nil
}

// cgroupDirOf finds the directory of cgroup id under the cgroup2 mount.
func cgroupDirOf(id uint64) (string, error) {
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	if root == "" {
		return "", fmt.Errorf("cgroup id %d: no cgroup v2 hierarchy mounted", id)
	}
	rel := identity.NewCgroupPaths("/proc").Path(id)
	if rel == "" {
		return "", fmt.Errorf("cgroup id %d: no such cgroup under %s", id, root)
	}
	return filepath.Join(root, rel), nil
}
