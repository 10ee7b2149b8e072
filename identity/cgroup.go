package identity

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// rewalkEvery bounds how often an unknown cgroup id makes us walk the
// cgroup v2 tree again.
const rewalkEvery = time.Second

// CgroupPaths maps cgroup v2 ids (the kernel's bpf_get_current_cgroup_id:
// the inode number of the cgroup's directory) to their paths.
type CgroupPaths struct {
	root     string // cgroup2 mount point; "" when there is none
	byID     map[uint64]string
	lastWalk time.Time
}

// NewCgroupPaths finds the cgroup v2 mount through procRoot/self/mountinfo.
func NewCgroupPaths(procRoot string) *CgroupPaths {
	return &CgroupPaths{root: Cgroup2Mount(filepath.Join(procRoot, "self", "mountinfo")), byID: map[uint64]string{}}
}

// Path returns the cgroup's path relative to the hierarchy ("/a/b"), or ""
// when the id is unknown.
func (c *CgroupPaths) Path(id uint64) string {
	if id == 0 || c.root == "" {
		return ""
	}
	if p, ok := c.byID[id]; ok {
		return p
	}
	if time.Since(c.lastWalk) < rewalkEvery {
		return ""
	}
	c.lastWalk = time.Now()
	clear(c.byID)
	filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			rel := strings.TrimPrefix(p, c.root)
			if rel == "" {
				rel = "/"
			}
			c.byID[st.Ino] = rel
		}
		return nil
	})
	return c.byID[id]
}

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted (on hybrid
// systems /sys/fs/cgroup/unified, else usually /sys/fs/cgroup).
func Cgroup2Mount(mountinfo string) string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw"
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4]
			}
		}
	}
	return ""
}
