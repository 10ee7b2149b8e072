package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/policy/source"
)

// MessageTypePolicyVerdict is Cilium's monitor message type of policy
// verdict events (pkg/monitor/api): `hubble observe -t policy-verdict`
// selects it.
const MessageTypePolicyVerdict = 5

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

// PolicyRef names a policy in allowed_by / denied_by.
type PolicyRef struct {
	Kind      string
	Name      string
	Namespace string
	Labels    []string
	Revision  uint64
}

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
	Hook     string // where the kernel decided (connect, sendmsg, cgroup_skb, tcx_ingress, tcx_egress, l7)
	// L7 is set for verdicts of the L7 audit evaluator: the request.
	L7 *flow.Flow
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
	r := refs[0]
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
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

// HubbleFlow renders a verdict as Hubble's PolicyVerdict event, as
// Cilium's L3/L4 parser would (pkg/hubble/parser/threefour): event type 5,
// verdict, drop_reason_desc, policy_match_type, traffic direction, both
// endpoints' identities and labels, and the policies per direction.
func (v *Verdict) HubbleFlow() *flowpb.Flow {
	f := &flowpb.Flow{
		Time:             timestamppb.New(v.Time),
		Uuid:             uuid.NewString(),
		NodeName:         v.Node,
		Type:             flowpb.FlowType_L3_L4,
		EventType:        &flowpb.CiliumEventType{Type: MessageTypePolicyVerdict},
		PolicyMatchType:  uint32(v.MatchType),
		IsReply:          wrapperspb.Bool(false),
		CgroupId:         v.Process.CgroupID,
		Source:           hubbleEndpoint(v.Source),
		Destination:      hubbleEndpoint(v.Destination),
		TrafficDirection: flowpb.TrafficDirection_INGRESS,
	}
	if v.Direction == resolve.Egress {
		f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	}
	switch v.Outcome {
	case Forwarded:
		f.Verdict = flowpb.Verdict_FORWARDED
	case Dropped:
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReason = uint32(v.DropReason)
		f.DropReasonDesc = flowpb.DropReason(v.DropReason)
	case Audited:
		// Cilium's audit verdicts carry no drop reason (the packet was not dropped).
		f.Verdict = flowpb.Verdict_AUDIT
	}
	src, dst := v.Source.Addr, v.Destination.Addr
	if src.Addr().IsValid() && dst.Addr().IsValid() {
		f.IP = &flowpb.IP{Source: src.Addr().String(), Destination: dst.Addr().String(), IpVersion: flowpb.IPVersion_IPv4}
		if src.Addr().Is6() {
			f.IP.IpVersion = flowpb.IPVersion_IPv6
		}
	}
	switch v.Proto {
	case resolve.ProtoTCP:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(src.Port()), DestinationPort: uint32(dst.Port()), Flags: &flowpb.TCPFlags{SYN: true},
		}}}
	case resolve.ProtoUDP:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(src.Port()), DestinationPort: uint32(dst.Port())}}}
	}
	allowed, denied := hubblePolicies(v.AllowedBy), hubblePolicies(v.DeniedBy)
	if v.Direction == resolve.Egress {
		f.EgressAllowedBy, f.EgressDeniedBy = allowed, denied
	} else {
		f.IngressAllowedBy, f.IngressDeniedBy = allowed, denied
	}
	if v.L7 != nil {
		f.Type = flowpb.FlowType_L7
		f.EventType = &flowpb.CiliumEventType{Type: 129} // access log: an L7 flow
		f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Method: v.L7.Method, Url: v.L7.Path, Protocol: v.L7.Protocol,
		}}}
	}
	f.Summary = fmt.Sprintf("%s %s policy verdict %s", protoName(v.Proto), v.Direction, v.Outcome)
	return f
}

func hubbleEndpoint(p Peer) *flowpb.Endpoint {
	return &flowpb.Endpoint{ID: p.EpID, Identity: p.Identity, Labels: p.Labels, Namespace: p.Namespace, PodName: p.Endpoint}
}

func hubblePolicies(refs []PolicyRef) []*flowpb.Policy {
	var out []*flowpb.Policy
	for _, r := range refs {
		out = append(out, &flowpb.Policy{Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Revision: r.Revision, Kind: r.Kind})
	}
	return out
}
