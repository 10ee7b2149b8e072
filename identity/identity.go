// Package identity tells who a process is: its executable, its cgroup v2
// path and the container that cgroup names, from the pid, comm and cgroup
// id the kernel reports with each connection. The collector labels flows
// with it; the policy stage selects endpoints by it.
package identity

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/sextant/sextant/flow"
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

// Resolver resolves a process's executable, cgroup and container from
// /proc while it is alive (when its connection is first seen).
type Resolver struct {
	proc    string
	cache   map[identityKey]flow.Process
	cgroups *CgroupPaths
}

// NewResolver returns a resolver reading procRoot ("/proc" when empty).
func NewResolver(procRoot string) *Resolver {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Resolver{proc: procRoot, cache: make(map[identityKey]flow.Process), cgroups: NewCgroupPaths(procRoot)}
}

// Lookup returns the identity of pid (cached per pid and cgroup id).
// Resolver is not safe for concurrent use.
func (ids *Resolver) Lookup(pid uint32, cgroupID uint64, comm string) flow.Process {
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
	p.Cgroup = ids.cgroups.Path(cgroupID)
	if p.Cgroup == "" {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
			p.Cgroup = UnifiedCgroup(b)
		}
	}
	if m := containerID.FindStringSubmatch(p.Cgroup); m != nil {
		p.ContainerID = m[1]
	}
	ids.cache[k] = p
	return p
}

// UnifiedCgroup returns the cgroup v2 path ("0::/path") from /proc/pid/cgroup.
func UnifiedCgroup(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rest
		}
	}
	return ""
}

// Alive reports whether a process still exists.
func (ids *Resolver) Alive(pid uint32) bool {
	_, err := os.Stat(filepath.Join(ids.proc, strconv.FormatUint(uint64(pid), 10)))
	return err == nil
}
