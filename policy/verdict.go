package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/policy/source"
)

// Outcome is what happened to the traffic.
type Outcome uint8

const (
	Forwarded Outcome = iota
	Dropped
	// Audited: a deny decision that audit mode let through.
	Audited
)

func (o Outcome) String() string { return [...]string{"FORWARDED", "DROPPED", "AUDIT"}[o] }

// DropReason says why traffic was (or, audited, would have been) denied,
// with Hubble's numbers (flow.DropReason).
type DropReason uint32

const (
	NoDrop DropReason = 0
	// PolicyDenied: default deny, no rule allowed it.
	PolicyDenied = DropReason(flowpb.DropReason_POLICY_DENIED)
	// PolicyDeny: a deny rule matched.
	PolicyDeny = DropReason(flowpb.DropReason_POLICY_DENY)
)

func (r DropReason) String() string {
	if r == NoDrop {
		return ""
	}
	return flowpb.DropReason(r).String()
}

// Peer is one side of a decision.
type Peer struct {
	Identity  uint32
	Labels    []string // "source:key=value", sorted
	Endpoint  string   // local endpoint name ("" for remote peers)
	EpID      uint32
	Namespace string
	Addr      netip.AddrPort // port 0 / address invalid when not known at the hook
}

// PolicyRef names a policy in allowed_by / denied_by: the pipeline's
// type, shared by verdicts and the flows made of them (read-only).
type PolicyRef = flow.PolicyRef

// Verdict is one policy decision, with what Hubble's PolicyVerdict flow
// carries.
type Verdict struct {
	Time        time.Time
	Node        string
	Outcome     Outcome
	DropReason  DropReason // of a deny, also when audited
	MatchType   resolve.MatchType
	Direction   resolve.Direction
	Source      Peer
	Destination Peer
	// AllowedBy: the rules that allowed it; DeniedBy: the deny rules that
	// denied it (empty for default deny).
	AllowedBy []PolicyRef
	DeniedBy  []PolicyRef
	Proto     uint8 // 6 TCP, 17 UDP
	Process   flow.Process
	// Count is how many decisions this verdict stands for: the kernel
	// reports a flow once per second and counts the repeats.
	Count    uint32
	Revision uint64
	Hook     string // where the kernel decided (connect, sendmsg, cgroup_skb, tcx_ingress, tcx_egress)
}

// PolicyLabel is how metrics name the deciding policy: kind/namespace/name
// of the first rule behind the decision, "" for default deny.
func (v *Verdict) PolicyLabel() string {
	refs := v.AllowedBy
	if len(v.DeniedBy) > 0 {
		refs = v.DeniedBy
	}
	if len(refs) == 0 {
		return ""
	}
	return refs[0].String()
}

// Flow is the verdict as the pipeline carries it (a flow of kind
// KindPolicyVerdict): the conversion at the policy stage's boundary.
// Every consumer (the Hubble codec, the link, the exporters) reads that
// form only.
func (v *Verdict) Flow() *flow.Flow {
	p := &flow.Policy{
		Verdict:     flowVerdict(v.Outcome),
		DropReason:  flow.DropReason(v.DropReason),
		MatchType:   uint8(v.MatchType),
		Direction:   flowDirection(v.Direction),
		Source:      v.Source.endpoint(),
		Destination: v.Destination.endpoint(),
		Proto:       v.Proto,
		Count:       max(v.Count, 1),
		Revision:    v.Revision,
		Hook:        v.Hook,
	}
	allowed, denied := v.AllowedBy, v.DeniedBy
	if v.Direction == resolve.Egress {
		p.EgressAllowedBy, p.EgressDeniedBy = allowed, denied
	} else {
		p.IngressAllowedBy, p.IngressDeniedBy = allowed, denied
	}
	return &flow.Flow{
		Kind:        flow.KindPolicyVerdict,
		Time:        v.Time,
		Node:        v.Node,
		Source:      known(v.Source.Addr),
		Destination: known(v.Destination.Addr),
		Process:     v.Process,
		Policy:      p,
	}
}

// known is the address a hook recorded, or none: the kernel writes zeros
// where it did not know it (connect() runs before the socket is bound).
func known(a netip.AddrPort) netip.AddrPort {
	if !a.Addr().IsValid() || a.Addr().IsUnspecified() {
		return netip.AddrPort{}
	}
	return a
}

func flowVerdict(o Outcome) flow.Verdict {
	switch o {
	case Dropped:
		return flow.VerdictDropped
	case Audited:
		return flow.VerdictAudit
	}
	return flow.VerdictForwarded
}

func flowDirection(d resolve.Direction) flow.Direction {
	if d == resolve.Egress {
		return flow.Egress
	}
	return flow.Ingress
}

func (p Peer) endpoint() flow.PolicyEndpoint {
	return flow.PolicyEndpoint{Identity: p.Identity, ID: p.EpID, Name: p.Endpoint, Namespace: p.Namespace, Labels: p.Labels}
}

func refsOf(refs []resolve.Ref, revision uint64) []PolicyRef {
	var out []PolicyRef
	seen := map[*source.Policy]bool{}
	for _, r := range refs {
		if seen[r.Policy] {
			continue
		}
		seen[r.Policy] = true
		out = append(out, PolicyRef{
			Kind: r.Policy.Kind, Name: r.Policy.Name, Namespace: r.Policy.Namespace,
			Labels: r.Policy.Labels.GetModel(), Revision: revision,
		})
	}
	return out
}

func protoName(p uint8) string {
	switch p {
	case resolve.ProtoTCP:
		return "TCP"
	case resolve.ProtoUDP:
		return "UDP"
	}
	return strconv.Itoa(int(p))
}

func (v *Verdict) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s -> %s %s/%s", v.Outcome, v.Direction, v.MatchType, peerString(v.Source), peerString(v.Destination), protoName(v.Proto), v.Hook)
	if v.DropReason != NoDrop {
		fmt.Fprintf(&b, " %s", v.DropReason)
	}
	if p := v.PolicyLabel(); p != "" {
		fmt.Fprintf(&b, " by %s", p)
	}
	fmt.Fprintf(&b, " rev %d", v.Revision)
	return b.String()
}

func peerString(p Peer) string {
	s := p.Addr.String()
	if !p.Addr.IsValid() {
		s = "?"
	}
	if p.Endpoint != "" {
		return fmt.Sprintf("%s(%s,id %d)", s, p.Endpoint, p.Identity)
	}
	return fmt.Sprintf("%s(id %d)", s, p.Identity)
}
