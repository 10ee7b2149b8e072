package hubble

import (
	"slices"
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

// MessageTypePolicyVerdict is Cilium's monitor message type of policy
// verdict events (pkg/monitor/api): `hubble observe -t policy-verdict`
// selects it.
const MessageTypePolicyVerdict = 5

// IP protocol numbers of policy verdicts.
const (
	protoTCP = 6
	protoUDP = 17
)

// policyVerdict is the event of a KindPolicyVerdict flow, as Cilium's
// L3/L4 parser makes it (pkg/hubble/parser/threefour): event type 5,
// verdict, drop_reason_desc, policy_match_type, traffic direction, both
// endpoints' identities and labels, the policies of the deciding
// direction.
func policyVerdict(f *flow.Flow) *flowpb.Flow {
	p := f.Policy
	ev := &flowpb.Flow{
		Time:             timestamppb.New(f.Time),
		NodeName:         f.Node,
		Type:             flowpb.FlowType_L3_L4,
		EventType:        &flowpb.CiliumEventType{Type: MessageTypePolicyVerdict},
		PolicyMatchType:  uint32(p.MatchType),
		IsReply:          wrapperspb.Bool(false),
		CgroupId:         f.Process.CgroupID,
		TrafficDirection: policyDirection(p.Direction),
	}
	verdict(ev, p)
	var local *flowpb.Endpoint // the deciding endpoint's side carries the process
	ev.Source, ev.Destination = policyEndpoint(p.Source, nil), policyEndpoint(p.Destination, nil)
	if p.Direction == flow.Egress {
		local = policyEndpoint(p.Source, processLabels(f.Process))
		ev.Source = local
	} else {
		local = policyEndpoint(p.Destination, processLabels(f.Process))
		ev.Destination = local
	}
	// A hook may not know one side's address (connect() runs before the
	// socket is bound): that side's IP stays empty, the version is the
	// other side's.
	src, dst := addr(f.Source), addr(f.Destination)
	if src.Addr().IsValid() || dst.Addr().IsValid() {
		ev.IP = &flowpb.IP{}
		if src.Addr().IsValid() {
			ev.IP.Source, ev.IP.IpVersion = src.Addr().String(), ipVersion(src.Addr())
		}
		if dst.Addr().IsValid() {
			ev.IP.Destination, ev.IP.IpVersion = dst.Addr().String(), ipVersion(dst.Addr())
		}
	}
	switch p.Proto {
	case protoTCP:
		ev.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(src.Port()), DestinationPort: uint32(dst.Port()), Flags: &flowpb.TCPFlags{SYN: true},
		}}}
	case protoUDP:
		ev.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(src.Port()), DestinationPort: uint32(dst.Port())}}}
	}
	policies(ev, p)
	ev.Summary = protoName(p.Proto) + " " + p.Direction.String() + " policy verdict " + p.Verdict.String()
	return ev
}

// withPolicy adds an exchange's policy view to its REQUEST event: the
// verdict of an L7 judgement (FORWARDED otherwise), the identities of
// both ends, and the policies that allowed the connection or denied the
// request.
func withPolicy(ev *flowpb.Flow, f *flow.Flow) {
	p := f.Policy
	verdict(ev, p)
	ev.Source = mergeEndpoint(ev.Source, p.Source)
	ev.Destination = mergeEndpoint(ev.Destination, p.Destination)
	policies(ev, p)
}

// verdict sets the verdict and, for a drop, its reason. Cilium's audit
// verdicts carry no drop reason (nothing was dropped).
func verdict(ev *flowpb.Flow, p *flow.Policy) {
	switch p.Verdict {
	case flow.VerdictDropped:
		ev.Verdict = flowpb.Verdict_DROPPED
		ev.DropReason = uint32(p.DropReason)
		ev.DropReasonDesc = flowpb.DropReason(p.DropReason)
	case flow.VerdictAudit:
		ev.Verdict = flowpb.Verdict_AUDIT
	default:
		ev.Verdict = flowpb.Verdict_FORWARDED
	}
}

func policies(ev *flowpb.Flow, p *flow.Policy) {
	ev.IngressAllowedBy = policyRefs(p.IngressAllowedBy)
	ev.IngressDeniedBy = policyRefs(p.IngressDeniedBy)
	ev.EgressAllowedBy = policyRefs(p.EgressAllowedBy)
	ev.EgressDeniedBy = policyRefs(p.EgressDeniedBy)
}

func policyRefs(refs []flow.PolicyRef) []*flowpb.Policy {
	if len(refs) == 0 {
		return nil
	}
	out := make([]*flowpb.Policy, 0, len(refs))
	for _, r := range refs {
		out = append(out, &flowpb.Policy{Name: r.Name, Namespace: r.Namespace, Labels: r.Labels, Revision: r.Revision, Kind: r.Kind})
	}
	return out
}

// policyEndpoint is a Hubble endpoint of a policy side; extra labels (the
// process's) join the identity's, sorted as Hubble lists them.
func policyEndpoint(e flow.PolicyEndpoint, extra []string) *flowpb.Endpoint {
	labels := e.Labels
	if len(extra) > 0 {
		labels = append(slices.Clone(e.Labels), extra...)
		slices.Sort(labels)
	}
	return &flowpb.Endpoint{ID: e.ID, Identity: e.Identity, Labels: labels, Namespace: e.Namespace, PodName: e.Name}
}

// mergeEndpoint adds a policy side to the endpoint an exchange event has
// (the observed process's, or none).
func mergeEndpoint(ep *flowpb.Endpoint, e flow.PolicyEndpoint) *flowpb.Endpoint {
	if e.Identity == 0 && e.Name == "" && len(e.Labels) == 0 {
		return ep
	}
	return policyEndpoint(e, ep.GetLabels())
}

func policyDirection(d flow.Direction) flowpb.TrafficDirection {
	if d == flow.Egress {
		return flowpb.TrafficDirection_EGRESS
	}
	return flowpb.TrafficDirection_INGRESS
}

func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "TCP"
	case protoUDP:
		return "UDP"
	}
	return strconv.Itoa(int(p))
}
