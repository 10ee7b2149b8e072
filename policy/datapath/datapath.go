package datapath

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// DefaultPinPath is where programs' links and maps are pinned.
const DefaultPinPath = "/sys/fs/bpf/sextant/policy"

// Options configure Load.
type Options struct {
	// PinPath is the bpffs directory of pinned maps and links
	// (DefaultPinPath when empty). Tests use their own.
	PinPath string
	// KernelStats enables BPF run-time statistics while loaded, so that
	// Stats reports nanoseconds per decision.
	KernelStats bool
}

// Datapath is the loaded programs and their pinned maps.
type Datapath struct {
	pinPath string
	objs    policyObjects
	links   map[string]link.Link // by pin name
	stats   io.Closer
	spec    *ebpf.CollectionSpec
	tcx     map[uint64]*tcxPrograms // per netns endpoint (cookie)
}

// tcxPrograms are one netns endpoint's TCX program instances: the same
// programs and maps, with the endpoint's netns cookie as a constant.
type tcxPrograms struct {
	Ingress *ebpf.Program `ebpf:"sextant_tcx_ingress"`
	Egress  *ebpf.Program `ebpf:"sextant_tcx_egress"`
}

func (t *tcxPrograms) Close() {
	t.Ingress.Close()
	t.Egress.Close()
}

// tcxFor loads (once) the TCX programs of a netns endpoint.
func (d *Datapath) tcxFor(cookie uint64) (*tcxPrograms, error) {
	if p, ok := d.tcx[cookie]; ok {
		return p, nil
	}
	spec := d.spec.Copy()
	for name := range spec.Programs {
		if name != policyProgSextantTcxIngress && name != policyProgSextantTcxEgress {
			delete(spec.Programs, name)
		}
	}
	if err := spec.Variables[policyVarTcxNetns].Set(cookie); err != nil {
		return nil, fmt.Errorf("set %s: %w", policyVarTcxNetns, err)
	}
	repl := map[string]*ebpf.Map{}
	for name, m := range d.mapsByName() {
		repl[name] = m
	}
	var p tcxPrograms
	if err := spec.LoadAndAssign(&p, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return nil, fmt.Errorf("load TCX programs for netns %d: %w", cookie, err)
	}
	d.tcx[cookie] = &p
	return &p, nil
}

func (d *Datapath) mapsByName() map[string]*ebpf.Map {
	m := &d.objs.policyMaps
	return map[string]*ebpf.Map{
		policyMapConfig: m.Config, policyMapCounters: m.Counters, policyMapEpsCgA: m.EpsCgA, policyMapEpsCgB: m.EpsCgB,
		policyMapEpsNsA: m.EpsNsA, policyMapEpsNsB: m.EpsNsB, policyMapFlows: m.Flows, policyMapIpcA: m.IpcA, policyMapIpcB: m.IpcB,
		policyMapListeners: m.Listeners, policyMapBound: m.Bound, policyMapPolA: m.PolA, policyMapPolB: m.PolB,
		policyMapReported: m.Reported, policyMapVerdicts: m.Verdicts,
		policyMapPolExactA: m.PolExactA, policyMapPolExactB: m.PolExactB, policyMapIpcExactA: m.IpcExactA, policyMapIpcExactB: m.IpcExactB,
	}
}

// hookRole says when a program is attached to an endpoint.
type hookRole uint8

const (
	always        hookRole = iota // identity learning: bound sockets, flows
	decideEgress                  // only when the endpoint's egress is decided
	decideIngress                 // only when its ingress is decided
)

// cgroupHooks are the programs attached to a cgroup endpoint.
var cgroupHooks = []struct {
	name   string
	attach ebpf.AttachType
	role   hookRole
	prog   func(*policyPrograms) *ebpf.Program
}{
	{"connect4", ebpf.AttachCGroupInet4Connect, decideEgress, func(p *policyPrograms) *ebpf.Program { return p.SextantConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, decideEgress, func(p *policyPrograms) *ebpf.Program { return p.SextantConnect6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, decideEgress, func(p *policyPrograms) *ebpf.Program { return p.SextantSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, decideEgress, func(p *policyPrograms) *ebpf.Program { return p.SextantSendmsg6 }},
	{"post_bind4", ebpf.AttachCGroupInet4PostBind, always, func(p *policyPrograms) *ebpf.Program { return p.SextantPostBind4 }},
	{"post_bind6", ebpf.AttachCGroupInet6PostBind, always, func(p *policyPrograms) *ebpf.Program { return p.SextantPostBind6 }},
	{"sock_release", ebpf.AttachCgroupInetSockRelease, always, func(p *policyPrograms) *ebpf.Program { return p.SextantSockRelease }},
	{"skb_ingress", ebpf.AttachCGroupInetIngress, decideIngress, func(p *policyPrograms) *ebpf.Program { return p.SextantSkbIngress }},
	{"skb_egress", ebpf.AttachCGroupInetEgress, always, func(p *policyPrograms) *ebpf.Program { return p.SextantSkbEgress }},
}

// CheckKernel names every kernel feature the programs need that this
// kernel lacks (nil when all are there).
func CheckKernel() error {
	var missing []string
	check := func(what string, err error) {
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", what, err))
		}
	}
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.CGroupSock, ebpf.CGroupSKB, ebpf.SchedCLS} {
		check("program type "+pt.String(), features.HaveProgramType(pt))
	}
	for _, mt := range []ebpf.MapType{ebpf.LPMTrie, ebpf.LRUHash, ebpf.RingBuf, ebpf.PerCPUArray, ebpf.SkStorage} {
		check("map type "+mt.String(), features.HaveMapType(mt))
	}
	check("bounded loops", features.HaveBoundedLoops())
	helpers := []struct {
		pt ebpf.ProgramType
		fn asm.BuiltinFunc
	}{
		{ebpf.CGroupSockAddr, asm.FnGetNetnsCookie},
		{ebpf.CGroupSockAddr, asm.FnGetCurrentAncestorCgroupId},
		{ebpf.CGroupSockAddr, asm.FnGetSocketCookie},
		{ebpf.CGroupSock, asm.FnGetNetnsCookie},
		{ebpf.CGroupSock, asm.FnSkStorageGet},
		{ebpf.CGroupSKB, asm.FnSkbAncestorCgroupId},
		{ebpf.CGroupSKB, asm.FnRingbufReserve},
	}
	for _, h := range helpers {
		check(fmt.Sprintf("helper %s in %s programs", h.fn, h.pt), features.HaveProgramHelper(h.pt, h.fn))
	}
	if len(missing) > 0 {
		return fmt.Errorf("kernel lacks what policy enforcement needs: %s", strings.Join(missing, "; "))
	}
	return nil
}

// Load checks the kernel, loads the programs and opens (or creates) the
// pinned maps, and re-adopts the links a previous agent pinned: their
// programs keep enforcing until Attach replaces them with the new ones.
func Load(opts Options) (_ *Datapath, err error) {
	if err := CheckKernel(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	d := &Datapath{pinPath: opts.PinPath, links: map[string]link.Link{}, tcx: map[uint64]*tcxPrograms{}}
	if d.pinPath == "" {
		d.pinPath = DefaultPinPath
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err := os.MkdirAll(filepath.Join(d.pinPath, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory %s: %w", d.pinPath, err)
	}
	if opts.KernelStats {
		if d.stats, err = ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err != nil {
			return nil, fmt.Errorf("enable bpf stats: %w", err)
		}
	}
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	d.spec = spec
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.pinPath}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load policy programs: pinned maps under %s are from another version: run `sextant agent --cleanup` (%w)", d.pinPath, err)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			lines := ve.Log
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			return nil, fmt.Errorf("load policy programs: %w\n%s", err, strings.Join(lines, "\n"))
		}
		return nil, fmt.Errorf("load policy programs: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(d.pinPath, "links"))
	if err != nil {
		return nil, fmt.Errorf("read pinned links: %w", err)
	}
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(d.pinPath, "links", e.Name()), nil)
		if err != nil {
			return nil, fmt.Errorf("re-adopt pinned link %s: %w", e.Name(), err)
		}
		d.links[e.Name()] = l
	}
	return d, nil
}

// PinPath is the bpffs directory in use.
func (d *Datapath) PinPath() string { return d.pinPath }

// Attachment names what an endpoint's programs are attached to.
type Attachment struct {
	// Name prefixes the pinned links ("cg-<cgroup id>", "ns-<cookie>").
	Name string
	// CgroupPath: attach the cgroup hooks there.
	CgroupPath string
	// NetnsPath and Ifindexes: attach TCX ingress and egress to these
	// interfaces of that network namespace.
	NetnsPath   string
	NetnsCookie uint64
	Ifindexes   []int
	// InNetns runs a function inside NetnsPath (endpoint.InNetns).
	InNetns func(path string, fn func() error) error
	// Ingress, Egress: attach the programs that decide that direction.
	// A direction no policy enforces needs none (its packets then pay
	// nothing); the programs that learn identities are always attached.
	Ingress, Egress bool
}

func (a Attachment) wants(r hookRole) bool {
	return r == always || (r == decideEgress && a.Egress) || (r == decideIngress && a.Ingress)
}

// Attach makes the endpoints' attachments exactly the given ones: links
// that exist (pinned by this or an earlier agent) are updated to the
// loaded programs in place, missing ones are created and pinned, and
// links no longer listed are removed.
func (d *Datapath) Attach(atts []Attachment) error { return d.attachAll(atts, true) }

// AttachMore attaches what atts list and removes nothing: what is
// attached before a revision switch.
func (d *Datapath) AttachMore(atts []Attachment) error { return d.attachAll(atts, false) }

func (d *Datapath) attachAll(atts []Attachment, prune bool) error {
	want := map[string]bool{}
	var failed []string
	var errs []error
	for _, a := range atts {
		names, err := d.attach(a)
		for _, n := range names {
			want[n] = true
		}
		if err != nil {
			failed = append(failed, a.Name)
			errs = append(errs, fmt.Errorf("attach %s: %w", a.Name, err))
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for name, l := range d.links {
		if want[name] {
			continue
		}
		// An endpoint whose attachment failed keeps its old links: its
		// previous enforcement stays rather than none.
		if slices.ContainsFunc(failed, func(f string) bool { return strings.HasPrefix(name, f+"-") }) {
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link %s: %w", name, err))
		}
		l.Close()
		delete(d.links, name)
	}
	return errors.Join(errs...)
}

func (d *Datapath) attach(a Attachment) ([]string, error) {
	var names []string
	put := func(name string, prog *ebpf.Program, create func() (link.Link, error)) error {
		names = append(names, name)
		if l, ok := d.links[name]; ok {
			if err := l.Update(prog); err == nil {
				return nil
			}
			// The old link cannot take the program (e.g. its target is
			// gone and re-created): replace it.
			l.Unpin()
			l.Close()
			delete(d.links, name)
		}
		l, err := create()
		if err != nil {
			return err
		}
		if err := l.Pin(filepath.Join(d.pinPath, "links", name)); err != nil {
			l.Close()
			return fmt.Errorf("pin link %s: %w", name, err)
		}
		d.links[name] = l
		return nil
	}
	if a.CgroupPath != "" {
		for _, h := range cgroupHooks {
			if !a.wants(h.role) {
				continue
			}
			prog := h.prog(&d.objs.policyPrograms)
			err := put(a.Name+"-"+h.name, prog, func() (link.Link, error) {
				l, err := link.AttachCgroup(link.CgroupOptions{Path: a.CgroupPath, Attach: h.attach, Program: prog})
				if err != nil {
					return nil, fmt.Errorf("%s on cgroup %s: %w", h.name, a.CgroupPath, err)
				}
				return l, nil
			})
			if err != nil {
				return names, err
			}
		}
	}
	if a.NetnsPath != "" {
		progs, err := d.tcxFor(a.NetnsCookie)
		if err != nil {
			return names, err
		}
		err = a.InNetns(a.NetnsPath, func() error {
			for _, idx := range a.Ifindexes {
				for _, h := range []struct {
					dir    string
					attach ebpf.AttachType
					prog   *ebpf.Program
					want   bool
				}{
					{"ingress", ebpf.AttachTCXIngress, progs.Ingress, a.Ingress},
					// Egress also records the flows whose UDP replies the
					// ingress program recognises.
					{"egress", ebpf.AttachTCXEgress, progs.Egress, a.Egress || a.Ingress},
				} {
					if !h.want {
						continue
					}
					err := put(fmt.Sprintf("%s-if%d-%s", a.Name, idx, h.dir), h.prog, func() (link.Link, error) {
						l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: h.prog, Attach: h.attach})
						if err != nil {
							return nil, fmt.Errorf("tcx %s on ifindex %d in %s: %w", h.dir, idx, a.NetnsPath, err)
						}
						return l, nil
					})
					if err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return names, err
		}
	}
	return names, nil
}

// Links lists the pinned links in use, sorted.
func (d *Datapath) Links() []string {
	out := make([]string, 0, len(d.links))
	for n := range d.links {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Close releases the Go side: pinned links and maps stay, so the kernel
// keeps enforcing the revision in force until an agent loads again (or
// Cleanup removes them).
func (d *Datapath) Close() error {
	for _, l := range d.links {
		l.Close()
	}
	d.links = map[string]link.Link{}
	for _, p := range d.tcx {
		p.Close()
	}
	d.tcx = map[uint64]*tcxPrograms{}
	err := d.objs.Close()
	if d.stats != nil {
		d.stats.Close()
		d.stats = nil
	}
	return err
}

// Cleanup detaches and removes everything pinned under pinPath
// (DefaultPinPath when empty): enforcement stops.
func Cleanup(pinPath string) error {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	var errs []error
	linkDir := filepath.Join(pinPath, "links")
	entries, err := os.ReadDir(linkDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read %s: %w", linkDir, err))
	}
	for _, e := range entries {
		p := filepath.Join(linkDir, e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err == nil {
			// Detach explicitly: a process may still hold the link open.
			if derr := l.Detach(); derr != nil && !errors.Is(derr, link.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("detach %s: %w", e.Name(), derr))
			}
			l.Close()
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	if err := os.RemoveAll(pinPath); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", pinPath, err))
	}
	return errors.Join(errs...)
}
