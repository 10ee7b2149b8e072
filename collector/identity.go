package collector

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sextant/sextant/collector/flow"
)

// maxIdentities bounds the cache; it is cleared when full, which only costs
// a few /proc reads.
const maxIdentities = 4096

// containerID matches the 64-hex id that docker, containerd, CRI-O and
// podman put in a container's cgroup path (e.g. ".../docker-<id>.scope",
// ".../cri-containerd-<id>.scope", "/docker/<id>").
var containerID = regexp.MustCompile(`(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

type identityKey struct {
	pid    uint32
	cgroup uint64
}

// identities resolves a process's executable, cgroup and container from
// /proc while it is alive (when its connection is first seen).
type identities struct {
	proc    string
	cache   map[identityKey]flow.Process
	cgroups *cgroupPaths
}

func newIdentities(procRoot string) *identities {
	return &identities{proc: procRoot, cache: make(map[identityKey]flow.Process), cgroups: newCgroupPaths(procRoot)}
}

func (ids *identities) lookup(pid uint32, cgroupID uint64, comm string) flow.Process {
	k := identityKey{pid, cgroupID}
	if p, ok := ids.cache[k]; ok {
		return p
	}
	if len(ids.cache) >= maxIdentities {
		clear(ids.cache)
	}
	p := flow.Process{PID: pid, Comm: comm, CgroupID: cgroupID}
	dir := filepath.Join(ids.proc, strconv.FormatUint(uint64(pid), 10))
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
	}
	// The kernel's cgroup id names the cgroup the process was in when it
	// used the socket, and needs no live process; /proc is the fallback.
	p.Cgroup = ids.cgroups.path(cgroupID)
	if p.Cgroup == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
			p.Cgroup = unifiedCgroup(b)
		}
	}
	if m := containerID.FindStringSubmatch(p.Cgroup); m != nil {
		p.ContainerID = m[1]
	}
	ids.cache[k] = p
	return p
}

// unifiedCgroup returns the cgroup v2 path ("0::/path") from /proc/pid/cgroup.
func unifiedCgroup(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rest
		}
	}
	return ""
}

// alive reports whether a process still exists.
func (ids *identities) alive(pid uint32) bool {
	_, err := os.Stat(filepath.Join(ids.proc, strconv.FormatUint(uint64(pid), 10)))
	return err == nil
}

// sweepEvery is how often connections are checked for a process that is
// gone: a process that exits closes its sockets without a close() call.
const sweepEvery = 5 * time.Second

func (c *Collector) sweep(now time.Time) {
	if now.Sub(c.lastSweep) < sweepEvery {
		return
	}
	c.lastSweep = now
	for _, cn := range c.conns {
		if now.Sub(cn.lastActive) > sweepEvery && !c.ids.alive(cn.pid) {
			c.stats.ConnsEvicted++
			c.close(cn, now)
		}
	}
}
