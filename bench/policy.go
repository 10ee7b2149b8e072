package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sextant/sextant/identity"
)

// benchPolicy is what the agent+policy mode enforces: the servers (nghttpd,
// the gRPC interop server) run in a cgroup of their own, an endpoint of
// the agent's endpoints file, and one CiliumNetworkPolicy selects it:
// ingress from the host (h2load and the gRPC client are host processes)
// to the servers' ports, after filler rules that never match (CIDR
// peers on a port nobody uses), so that each decision searches a policy
// of the size asked for.
type benchPolicy struct {
	cgroup    string // directory under the cgroup2 mount
	cgroupFD  int
	dir       string // --policy-dir
	endpoints string // --policy-endpoints
	bpffs     string // --policy-bpffs: pins of this bench only
	rules     int
}

func newBenchPolicy(tmp string, rules int) (*benchPolicy, error) {
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	if root == "" {
		return nil, errors.New("agent+policy: no cgroup v2 hierarchy mounted")
	}
	// A child of the bench's own cgroup: inside the scope of -own-cgroup.
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("sextant-bench-%d", os.Getpid())
	p := &benchPolicy{
		cgroup:    filepath.Join(root, own, name),
		dir:       filepath.Join(tmp, "policies"),
		endpoints: filepath.Join(tmp, "endpoints.yaml"),
		bpffs:     filepath.Join("/sys/fs/bpf", name),
		rules:     rules,
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(p.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("server cgroup: %w", err)
	}
	fd, err := syscall.Open(p.cgroup, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		os.Remove(p.cgroup)
		return nil, fmt.Errorf("open %s: %w", p.cgroup, err)
	}
	p.cgroupFD = fd
	endpoints := fmt.Sprintf("endpoints:\n  - name: bench-server\n    cgroup: %s\n    labels: {app: bench-server}\n", p.cgroup)
	if err := os.WriteFile(p.endpoints, []byte(endpoints), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// inCgroup starts cmd in the servers' cgroup (nil policy: where it is).
func (p *benchPolicy) inCgroup(attr *syscall.SysProcAttr) {
	if p == nil {
		return
	}
	attr.UseCgroupFD, attr.CgroupFD = true, p.cgroupFD
}

// write states the policy for the servers' ports.
func (p *benchPolicy) write(ports ...int) error {
	var b strings.Builder
	b.WriteString("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bench-server\nspec:\n  endpointSelector:\n    matchLabels: {app: bench-server}\n  ingress:\n")
	for i := range p.rules {
		fmt.Fprintf(&b, "    - fromCIDR: [10.%d.%d.0/24]\n      toPorts: [{ports: [{port: \"9\", protocol: TCP}]}]\n", i/256%256, i%256)
	}
	b.WriteString("    - fromEntities: [host]\n      toPorts:\n        - ports:\n")
	for _, port := range ports {
		fmt.Fprintf(&b, "            - {port: \"%d\", protocol: TCP}\n", port)
	}
	return os.WriteFile(filepath.Join(p.dir, "bench.yaml"), []byte(b.String()), 0o644)
}

func (p *benchPolicy) agentFlags() []string {
	return []string{"--policy-dir", p.dir, "--policy-endpoints", p.endpoints, "--policy-bpffs", p.bpffs}
}

// cleanup removes the pinned programs and maps after an agent+policy run:
// enforcement outlives the agent on purpose, and the next mode must run
// without it.
func (p *benchPolicy) cleanup(binary string) error {
	out, err := exec.Command(binary, append([]string{"agent", "--cleanup"}, p.agentFlags()...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("agent --cleanup: %w (%s)", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// close removes the cgroup once the servers in it have exited.
func (p *benchPolicy) close() {
	syscall.Close(p.cgroupFD)
	for range 50 {
		if err := os.Remove(p.cgroup); err == nil || os.IsNotExist(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.RemoveAll(p.bpffs)
}

// waitEnforced waits until the agent's first revision is in force: the
// policy was applied (sextant_policy_revision) and no file was rejected.
func waitEnforced(metricsURL string) error {
	deadline := time.Now().Add(30 * time.Second)
	var last map[string]float64
	for time.Now().Before(deadline) {
		m, err := promCounters(metricsURL)
		if err == nil {
			last = m
			if m["sextant_policy_rejected_files"] > 0 {
				return fmt.Errorf("the agent rejected the bench policy (see its log)")
			}
			if m["sextant_policy_revision"] >= 1 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("policy not in force after 30s (revision %v)", last["sextant_policy_revision"])
}
