// Package endpoint reads the endpoints file: which cgroup v2 subtrees and
// network namespaces are policy endpoints, and their labels. It resolves
// each to what the kernel programs key on (cgroup id, netns cookie,
// interfaces and addresses) and adds the automatic labels.
//
// The file (YAML):
//
//	endpoints:
//	  - name: web                      # unique, required
//	    cgroup: /system.slice/web.service  # cgroup v2 path (relative to the
//	                                   # cgroup2 mount, or absolute under it)
//	    namespace: shop                # optional, default "default"
//	    labels: {app: web, tier: front} # "key: value"; a key may carry a
//	                                   # Cilium source prefix (k8s:, container:)
//	    audit: true                    # optional: decide and report, never drop
//	  - name: db
//	    netns: db                      # /run/netns/<name>, or a path to a netns file
//	    labels: {app: db}
//
// Exactly one of cgroup and netns. Labels without a source are k8s:
// labels, as a pod's would be, so that CiliumNetworkPolicy selectors (any:
// source) and NetworkPolicy selectors (k8s: source) both match them.
package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/cilium/pkg/labels"
	"go.yaml.in/yaml/v3"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/sextant/sextant/policy/source"
)

// Automatic label keys (source "sextant").
const (
	LabelSource    = "sextant"
	LabelEndpoint  = "sextant.io/endpoint"  // the entry's name
	LabelContainer = "sextant.io/container" // short container id, when the cgroup path names one
	LabelExe       = "sextant.io/exe"       // executable base name, when every process of the cgroup runs the same one
	LabelNetns     = "sextant.io/netns"     // netns name, for netns endpoints
	// LabelCluster is Cilium's cluster label; entity "cluster" selects it.
	LabelCluster = "io.cilium.k8s.policy.cluster"
	// ClusterName is the cluster every local endpoint belongs to.
	ClusterName = "default"
)

// Spec is one entry of the endpoints file.
type Spec struct {
	Name      string            `yaml:"name"`
	Cgroup    string            `yaml:"cgroup"`
	Netns     string            `yaml:"netns"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
	Audit     bool              `yaml:"audit"`
	line      int
}

type file struct {
	Endpoints []Spec `yaml:"endpoints"`
}

// Endpoint is a resolved entry.
type Endpoint struct {
	Spec
	Labels labels.LabelArray // file labels, namespace and automatic labels

	// A cgroup endpoint:
	CgroupPath string // absolute path of the cgroup directory
	CgroupID   uint64 // its inode number (bpf_get_current_cgroup_id)

	// A netns endpoint:
	NetnsPath   string
	NetnsCookie uint64
	Interfaces  []Interface // its non-loopback interfaces
}

// Interface is a netns endpoint's network interface.
type Interface struct {
	Name  string
	Index int
	Addrs []netip.Addr
}

// Addrs returns every address of a netns endpoint.
func (e *Endpoint) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, i := range e.Interfaces {
		out = append(out, i.Addrs...)
	}
	return out
}

// IsNetns says whether the endpoint is a network namespace.
func (e *Endpoint) IsNetns() bool { return e.Netns != "" }

// Parse decodes an endpoints file strictly (unknown fields are errors
// with their line) and checks it; it does not touch the system.
func Parse(name string, data []byte) ([]Spec, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // an unknown field is an error with its line
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// Line of each entry, for the checks below.
	if len(root.Content) > 0 {
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "endpoints" {
				for j, e := range m.Content[i+1].Content {
					if j < len(f.Endpoints) {
						f.Endpoints[j].line = e.Line
					}
				}
			}
		}
	}
	var errs []error
	seen := map[string]bool{}
	for i := range f.Endpoints {
		s := &f.Endpoints[i]
		at := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s:%d: endpoints[%d]: %s", name, s.line, i, fmt.Sprintf(format, args...)))
		}
		switch {
		case s.Name == "":
			at("name is required")
		case seen[s.Name]:
			at("duplicate name %q", s.Name)
		case len(k8svalidation.IsValidLabelValue(s.Name)) > 0:
			at("name %q must be a valid label value: %s", s.Name, strings.Join(k8svalidation.IsValidLabelValue(s.Name), "; "))
		}
		seen[s.Name] = true
		if (s.Cgroup == "") == (s.Netns == "") {
			at("exactly one of cgroup and netns is required")
		}
		if s.Namespace == "" {
			s.Namespace = source.DefaultNamespace
		}
		for k, v := range s.Labels {
			l := labels.ParseLabel(k + "=" + v)
			if msgs := k8svalidation.IsQualifiedName(l.Key); len(msgs) > 0 {
				at("label key %q: %s", k, strings.Join(msgs, "; "))
			}
			if msgs := k8svalidation.IsValidLabelValue(v); len(msgs) > 0 {
				at("label %q value %q: %s", k, v, strings.Join(msgs, "; "))
			}
		}
	}
	return f.Endpoints, errors.Join(errs...)
}

// Labels returns an entry's labels: its own (k8s: unless a source is
// given), its namespace, the cluster and the automatic ones.
func (s *Spec) labels(auto map[string]string) labels.LabelArray {
	var out labels.LabelArray
	for k, v := range s.Labels {
		l := labels.ParseLabel(k + "=" + v)
		if l.Source == labels.LabelSourceUnspec {
			l.Source = labels.LabelSourceK8s
		}
		out = append(out, l)
	}
	out = append(out,
		labels.NewLabel(source.LabelPodNamespace, s.Namespace, labels.LabelSourceK8s),
		labels.NewLabel(LabelCluster, ClusterName, labels.LabelSourceK8s),
		labels.NewLabel(LabelEndpoint, s.Name, LabelSource),
	)
	for k, v := range auto {
		out = append(out, labels.NewLabel(k, v, LabelSource))
	}
	return out.Sort()
}

// Paths say where endpoints are resolved: the cgroup2 mount and the
// directory of named network namespaces.
type Paths struct {
	CgroupRoot string // default: the cgroup2 mount from /proc/self/mountinfo
	NetnsDir   string // default /run/netns
}

// System resolves endpoints (NewSystem).
type System struct {
	Paths

	mu   sync.Mutex
	exes map[string]string // cgroup path → its sextant.io/exe, once known
}

// NewSystem returns a resolver on p.
func NewSystem(p Paths) *System { return &System{Paths: p} }

var containerID = regexp.MustCompile(`(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// Resolve turns entries into endpoints. An entry that cannot be resolved
// (its cgroup or netns is missing) is an error naming it; the others are
// returned.
func (sys *System) Resolve(specs []Spec) ([]*Endpoint, error) {
	var out []*Endpoint
	var errs []error
	for _, s := range specs {
		ep, err := sys.resolve(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", s.Name, err))
			continue
		}
		out = append(out, ep)
	}
	// Nested cgroup endpoints would run two endpoints' programs on one
	// socket: refuse the inner one.
	for _, a := range out {
		for _, b := range out {
			if a != b && a.CgroupPath != "" && b.CgroupPath != "" && strings.HasPrefix(a.CgroupPath+"/", b.CgroupPath+"/") && a.CgroupPath != b.CgroupPath {
				errs = append(errs, fmt.Errorf("endpoint %s: cgroup %s is inside endpoint %s's cgroup: nested endpoints are not supported", a.Name, a.CgroupPath, b.Name))
			}
			if a != b && a.CgroupPath != "" && a.CgroupPath == b.CgroupPath && a.Name < b.Name {
				errs = append(errs, fmt.Errorf("endpoints %s and %s name the same cgroup %s", a.Name, b.Name, a.CgroupPath))
			}
		}
	}
	out = slices.DeleteFunc(out, func(e *Endpoint) bool {
		for _, b := range out {
			if e != b && e.CgroupPath != "" && b.CgroupPath != "" && strings.HasPrefix(e.CgroupPath+"/", b.CgroupPath+"/") {
				return true
			}
		}
		return false
	})
	return out, errors.Join(errs...)
}

func (sys *System) resolve(s Spec) (*Endpoint, error) {
	ep := &Endpoint{Spec: s}
	auto := map[string]string{}
	if s.Cgroup != "" {
		root := sys.CgroupRoot
		if root == "" {
			root = CgroupRoot()
		}
		if root == "" {
			return nil, errors.New("no cgroup v2 hierarchy mounted")
		}
		p := s.Cgroup
		if !strings.HasPrefix(p, root+"/") && p != root {
			p = filepath.Join(root, p)
		}
		id, err := cgroupID(p)
		if err != nil {
			return nil, err
		}
		ep.CgroupPath, ep.CgroupID = p, id
		if m := containerID.FindStringSubmatch(strings.TrimPrefix(p, root)); m != nil {
			auto[LabelContainer] = m[1][:12]
		}
		if exe := sys.exe(p); exe != "" {
			auto[LabelExe] = exe
		}
	} else {
		p := s.Netns
		if !strings.Contains(p, "/") {
			dir := sys.NetnsDir
			if dir == "" {
				dir = "/run/netns"
			}
			p = filepath.Join(dir, p)
			auto[LabelNetns] = s.Netns
		}
		cookie, ifaces, err := inspectNetns(p)
		if err != nil {
			return nil, fmt.Errorf("netns %s: %w", p, err)
		}
		ep.NetnsPath, ep.NetnsCookie, ep.Interfaces = p, cookie, ifaces
	}
	ep.Labels = s.labels(auto)
	return ep, nil
}

// exe is a cgroup's sextant.io/exe: read once the cgroup has processes,
// then kept, so that processes coming and going do not change the
// endpoint's identity.
func (sys *System) exe(dir string) string {
	sys.mu.Lock()
	defer sys.mu.Unlock()
	if e, ok := sys.exes[dir]; ok {
		return e
	}
	e := commonExe(dir)
	if e != "" {
		if sys.exes == nil {
			sys.exes = map[string]string{}
		}
		sys.exes[dir] = e
	}
	return e
}

// commonExe is the base name of the executable every process of a cgroup
// subtree runs, when they all run the same one and it is a valid label value.
func commonExe(dir string) string {
	exe := ""
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, pid := range strings.Fields(string(b)) {
			e, err := os.Readlink("/proc/" + pid + "/exe")
			if err != nil {
				continue
			}
			e = filepath.Base(strings.TrimSuffix(e, " (deleted)"))
			if exe != "" && exe != e {
				return errors.New("mixed")
			}
			exe = e
		}
		return nil
	})
	if err != nil || len(k8svalidation.IsValidLabelValue(exe)) > 0 {
		return ""
	}
	return exe
}
