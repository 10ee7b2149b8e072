package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/cilium/pkg/labels"

	"github.com/sextant/sextant/policy/endpoint"
	"github.com/sextant/sextant/policy/ipcache"
	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/policy/source"
)

// TraceResult explains a decision as `cilium policy trace` does: for the
// source's egress and the destination's ingress, which policies select
// the endpoint, whether the direction is enforced, and which rule decides.
type TraceResult struct {
	From, To ipcache.Identity
	Port     uint16
	Proto    uint8
	Revision uint64
	Egress   *TraceDirection // nil when the source is not a local endpoint
	Ingress  *TraceDirection // nil when the destination is not a local endpoint
	Allowed  bool
}

// TraceDirection is one side of a trace.
type TraceDirection struct {
	Direction  resolve.Direction
	Selecting  []string
	EnforcedBy []string
	Decision   resolve.Decision
	DecidedBy  []string // rules behind the deciding entry
}

// TraceLabels are the labels of a trace's side: "key=value" items, a
// Cilium source prefix allowed ("k8s:app=web", "reserved:world"); an item
// that is an IP address names the peer with that address instead.
type TraceLabels []string

// Trace explains what the revision in force decides for a connection
// from → to on dport/proto (6 TCP, 17 UDP).
func (e *Engine) Trace(from, to TraceLabels, dport uint16, proto uint8) (*TraceResult, error) {
	e.mu.RLock()
	rev := e.cur
	e.mu.RUnlock()
	if rev == nil {
		return nil, fmt.Errorf("no policy revision in force yet")
	}
	ids := make([]ipcache.Identity, 0, len(rev.ids))
	for _, id := range rev.ids {
		ids = append(ids, id)
	}
	tr, err := trace(rev.policies, ids, rev.ipc, from, to, dport, proto)
	if tr != nil {
		tr.Revision = rev.number
	}
	return tr, err
}

// TraceFiles is Trace on policy files (a directory stands for its policy
// files), without an agent: endpoints are whatever the labels describe.
func TraceFiles(paths []string, from, to TraceLabels, dport uint16, proto uint8) (*TraceResult, error) {
	files, err := policyFiles(paths)
	if err != nil {
		return nil, err
	}
	var policies []*source.Policy
	for _, f := range files {
		ps, errs := source.ReadFile(f)
		if len(errs) > 0 {
			return nil, errs[0]
		}
		policies = append(policies, ps...)
	}
	alloc := ipcache.NewAllocator()
	ipc := ipcache.New()
	for _, p := range resolve.CIDRs(policies) {
		ipc.Upsert(p, alloc.ForPrefix(p).ID)
	}
	return trace(policies, alloc.All(), ipc, from, to, dport, proto)
}

// synthetic identities of trace sides that match no known label set.
const traceIdentity = ipcache.ID(0xFFFF0000)

func trace(policies []*source.Policy, ids []ipcache.Identity, ipc *ipcache.Cache, from, to TraceLabels, dport uint16, proto uint8) (*TraceResult, error) {
	byID := map[ipcache.ID]ipcache.Identity{}
	for _, id := range ids {
		byID[id.ID] = id
	}
	side := func(spec TraceLabels, n ipcache.ID) (ipcache.Identity, bool, error) {
		if len(spec) == 1 {
			if a, err := netip.ParseAddr(spec[0]); err == nil {
				id, _ := ipc.Lookup(a)
				if got, ok := byID[id]; ok {
					return got, !id.IsReserved() && id < ipcache.LocalScope, nil
				}
				return ipcache.Identity{ID: id}, false, nil
			}
		}
		var l labels.LabelArray
		hasNS := false
		for _, item := range spec {
			for _, kv := range strings.Split(item, ",") {
				if kv = strings.TrimSpace(kv); kv == "" {
					continue
				}
				lbl := labels.ParseLabel(kv)
				if lbl.Source == labels.LabelSourceUnspec {
					lbl.Source = labels.LabelSourceK8s
				}
				if lbl.Key == source.LabelPodNamespace {
					hasNS = true
				}
				l = append(l, lbl)
			}
		}
		if len(l) == 1 && l[0].Source == labels.LabelSourceReserved {
			for _, r := range ipcache.Reserved() {
				if r.Labels[0].Key == l[0].Key {
					return r, false, nil
				}
			}
			return ipcache.Identity{}, false, fmt.Errorf("unknown reserved identity %q", l[0].Key)
		}
		if !hasNS {
			l = append(l, labels.NewLabel(source.LabelPodNamespace, source.DefaultNamespace, labels.LabelSourceK8s))
		}
		l = append(l, labels.NewLabel(endpoint.LabelCluster, endpoint.ClusterName, labels.LabelSourceK8s))
		l = l.Sort()
		for _, id := range ids {
			if id.Labels.Equals(l) {
				return id, true, nil
			}
		}
		return ipcache.Identity{ID: n, Labels: l}, true, nil
	}
	fromID, fromEP, err := side(from, traceIdentity+1)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	toID, toEP, err := side(to, traceIdentity+2)
	if err != nil {
		return nil, fmt.Errorf("--to: %w", err)
	}
	in := resolve.Input{Policies: policies, Identities: ids}
	for _, id := range []ipcache.Identity{fromID, toID} {
		if _, ok := byID[id.ID]; !ok {
			in.Identities = append(in.Identities, id)
		}
	}
	if fromEP {
		in.Endpoints = append(in.Endpoints, resolve.Endpoint{ID: 1, Name: "from", Identity: fromID})
	}
	if toEP {
		in.Endpoints = append(in.Endpoints, resolve.Endpoint{ID: 2, Name: "to", Identity: toID})
	}
	res := resolve.Compile(in)
	tr := &TraceResult{From: fromID, To: toID, Port: dport, Proto: proto, Allowed: true}
	explain := func(epID uint32, dir resolve.Direction, remote ipcache.ID) *TraceDirection {
		t := res.Endpoints[epID].Tables[dir]
		td := &TraceDirection{Direction: dir, Decision: t.Decide(remote, proto, dport)}
		for _, p := range t.Selecting {
			td.Selecting = append(td.Selecting, p.ID())
		}
		for _, p := range t.EnforcedBy {
			td.EnforcedBy = append(td.EnforcedBy, p.ID())
		}
		if td.Decision.Cookie != 0 {
			for _, r := range res.Refs[td.Decision.Cookie] {
				td.DecidedBy = append(td.DecidedBy, r.String())
			}
		}
		if v := td.Decision.Verdict; v == resolve.DeniedByRule || v == resolve.DeniedByDefault {
			tr.Allowed = false
		}
		return td
	}
	if fromEP {
		tr.Egress = explain(1, resolve.Egress, toID.ID)
	}
	if toEP {
		tr.Ingress = explain(2, resolve.Ingress, fromID.ID)
	}
	return tr, nil
}

// String renders the trace in the style of `cilium policy trace`.
func (t *TraceResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tracing From: [%s] => To: [%s] Ports: [%d/%s]\n", strings.Join(t.From.Labels.GetModel(), ", "), strings.Join(t.To.Labels.GetModel(), ", "), t.Port, protoName(t.Proto))
	if t.Revision != 0 {
		fmt.Fprintf(&b, "Revision: %d\n", t.Revision)
	}
	for _, d := range []*TraceDirection{t.Egress, t.Ingress} {
		if d == nil {
			continue
		}
		subject := t.From
		if d.Direction == resolve.Ingress {
			subject = t.To
		}
		fmt.Fprintf(&b, "\nResolving %s policy for [%s]\n", d.Direction, strings.Join(subject.Labels.GetModel(), ", "))
		if len(d.Selecting) == 0 {
			fmt.Fprintf(&b, "  no policy selects it for %s\n", d.Direction)
		}
		for _, p := range d.Selecting {
			fmt.Fprintf(&b, "* %s: selected\n", p)
		}
		if len(d.EnforcedBy) > 0 {
			fmt.Fprintf(&b, "  default deny (enabled by %s)\n", strings.Join(d.EnforcedBy, ", "))
		}
		switch d.Decision.Verdict {
		case resolve.Allowed:
			fmt.Fprintf(&b, "  %s allowed (%s) by:\n", d.Direction, d.Decision.MatchType)
		case resolve.DeniedByRule:
			fmt.Fprintf(&b, "  %s denied (%s) by a deny rule:\n", d.Direction, d.Decision.MatchType)
		case resolve.DeniedByDefault:
			fmt.Fprintf(&b, "  %s denied: no rule allows it (default deny)\n", d.Direction)
		case resolve.NotEnforced:
			fmt.Fprintf(&b, "  %s allowed: not enforced\n", d.Direction)
		}
		refs := slices.Clone(d.DecidedBy)
		slices.Sort(refs)
		for _, r := range refs {
			fmt.Fprintf(&b, "    %s\n", r)
		}
	}
	verdict := "ALLOWED"
	if !t.Allowed {
		verdict = "DENIED"
	}
	fmt.Fprintf(&b, "\nFinal verdict: %s\n", verdict)
	return b.String()
}
