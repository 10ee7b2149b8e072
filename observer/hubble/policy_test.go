package hubble

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

var (
	webRef    = flow.PolicyRef{Kind: "CiliumNetworkPolicy", Name: "web", Namespace: "shop", Labels: []string{"k8s:io.cilium.k8s.policy.name=web"}, Revision: 3}
	noSSH     = flow.PolicyRef{Kind: "CiliumClusterwideNetworkPolicy", Name: "no-ssh", Revision: 3}
	webPeer   = flow.PolicyEndpoint{Identity: 256, ID: 1, Name: "web", Namespace: "shop", Labels: []string{"k8s:app=web"}}
	worldPeer = flow.PolicyEndpoint{Identity: 2, Labels: []string{"reserved:world"}}
	verdictEv = &flowpb.CiliumEventType{Type: MessageTypePolicyVerdict}
)

func withLabels(e flow.PolicyEndpoint, extra ...string) *flowpb.Endpoint {
	labels := append(append([]string{}, e.Labels...), extra...)
	slices.Sort(labels)
	return &flowpb.Endpoint{ID: e.ID, Identity: e.Identity, Namespace: e.Namespace, PodName: e.Name, Labels: labels}
}

// Policy verdicts become Cilium's PolicyVerdict events (one each, no
// response); the deciding endpoint's side carries the process.
func TestPolicyVerdictEvents(t *testing.T) {
	v6c, v6s := netip.MustParseAddrPort("[fd00::1]:0"), netip.MustParseAddrPort("[fd00::2]:53")
	tests := []struct {
		name string
		in   *flow.Flow
		want *flowpb.Flow
	}{{
		name: "TCP egress refused by default deny at connect",
		in: &flow.Flow{Kind: flow.KindPolicyVerdict, Time: t0, Node: "n1", Source: netip.MustParseAddrPort("10.0.0.1:0"), Destination: server, Process: proc,
			Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDenied, Direction: flow.Egress, Source: webPeer, Destination: worldPeer,
				Proto: 6, Count: 1, Revision: 3, Hook: "connect"}},
		want: &flowpb.Flow{Time: timestamppb.New(t0), NodeName: "n1", Type: flowpb.FlowType_L3_L4, EventType: verdictEv, IsReply: wrapperspb.Bool(false),
			CgroupId: 7, TrafficDirection: flowpb.TrafficDirection_EGRESS, Verdict: flowpb.Verdict_DROPPED, DropReason: 133,
			DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			Source:         withLabels(webPeer, procLabels...), Destination: withLabels(worldPeer),
			IP:      &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
			L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: 8080, Flags: &flowpb.TCPFlags{SYN: true}}}},
			Summary: "TCP egress policy verdict DROPPED"},
	}, {
		name: "source unknown at connect: the destination's IP alone",
		in: &flow.Flow{Kind: flow.KindPolicyVerdict, Time: t0, Destination: server,
			Policy: &flow.Policy{Verdict: flow.VerdictForwarded, MatchType: 1, Direction: flow.Egress, Source: webPeer, Destination: worldPeer, Proto: 6, Hook: "connect"}},
		want: &flowpb.Flow{Time: timestamppb.New(t0), Type: flowpb.FlowType_L3_L4, EventType: verdictEv, IsReply: wrapperspb.Bool(false),
			PolicyMatchType: 1, TrafficDirection: flowpb.TrafficDirection_EGRESS, Verdict: flowpb.Verdict_FORWARDED,
			Source: withLabels(webPeer), Destination: withLabels(worldPeer),
			IP:      &flowpb.IP{Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
			L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: 8080, Flags: &flowpb.TCPFlags{SYN: true}}}},
			Summary: "TCP egress policy verdict FORWARDED"},
	}, {
		name: "TCP ingress denied by a deny rule",
		in: &flow.Flow{Kind: flow.KindPolicyVerdict, Time: t0, Source: client, Destination: server,
			Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDeny, MatchType: 3, Direction: flow.Ingress, Source: worldPeer, Destination: webPeer,
				IngressDeniedBy: []flow.PolicyRef{noSSH}, Proto: 6, Hook: "tcx_ingress"}},
		want: &flowpb.Flow{Time: timestamppb.New(t0), Type: flowpb.FlowType_L3_L4, EventType: verdictEv, IsReply: wrapperspb.Bool(false),
			PolicyMatchType: 3, TrafficDirection: flowpb.TrafficDirection_INGRESS, Verdict: flowpb.Verdict_DROPPED, DropReason: 181,
			DropReasonDesc: flowpb.DropReason_POLICY_DENY, Source: withLabels(worldPeer), Destination: withLabels(webPeer),
			IngressDeniedBy: []*flowpb.Policy{{Kind: noSSH.Kind, Name: "no-ssh", Revision: 3}},
			IP:              ip(client, server), L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 8080, Flags: &flowpb.TCPFlags{SYN: true}}}},
			Summary: "TCP ingress policy verdict DROPPED"},
	}, {
		name: "UDP over IPv6 allowed, audit carries no drop reason",
		in: &flow.Flow{Kind: flow.KindPolicyVerdict, Time: t0, Source: v6c, Destination: v6s,
			Policy: &flow.Policy{Verdict: flow.VerdictAudit, DropReason: flow.PolicyDenied, MatchType: 2, Direction: flow.Egress, Source: webPeer, Destination: worldPeer,
				EgressAllowedBy: []flow.PolicyRef{webRef}, Proto: 17, Count: 4, Hook: "sendmsg"}},
		want: &flowpb.Flow{Time: timestamppb.New(t0), Type: flowpb.FlowType_L3_L4, EventType: verdictEv, IsReply: wrapperspb.Bool(false),
			PolicyMatchType: 2, TrafficDirection: flowpb.TrafficDirection_EGRESS, Verdict: flowpb.Verdict_AUDIT,
			Source: withLabels(webPeer), Destination: withLabels(worldPeer),
			EgressAllowedBy: []*flowpb.Policy{{Kind: webRef.Kind, Name: "web", Namespace: "shop", Labels: webRef.Labels, Revision: 3}},
			IP:              &flowpb.IP{Source: "fd00::1", Destination: "fd00::2", IpVersion: flowpb.IPVersion_IPv6},
			L4:              &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 53}}},
			Summary:         "UDP egress policy verdict AUDIT"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ResponseSeen(tt.in) {
				t.Error("a policy verdict has a response event")
			}
			got := Events(tt.in)
			if len(got) != 1 {
				t.Fatalf("%d events, want 1", len(got))
			}
			got[0].Uuid = ""
			if !proto.Equal(got[0], tt.want) {
				t.Errorf("got\n%s\nwant\n%s", prototext.Format(got[0]), prototext.Format(tt.want))
			}
		})
	}
}

// An exchange carries what allowed its connection (both directions'
// policies, both ends' identities) and, when an L7 rule judged it, that
// verdict, in its request and its response event.
func TestExchangeWithPolicy(t *testing.T) {
	clientPeer := flow.PolicyEndpoint{Identity: 257, ID: 2, Name: "client", Namespace: "shop", Labels: []string{"k8s:app=client"}}
	base := func(p *flow.Policy) *flow.Flow {
		return &flow.Flow{Time: t0, Latency: time.Millisecond, Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Path: "/echo.Echo/Admin",
			Status: 200, Source: client, Destination: server, Process: proc, Policy: p}
	}
	for _, c := range []struct {
		name    string
		policy  *flow.Policy
		verdict flowpb.Verdict
		denied  int
	}{
		{"allowed connection", &flow.Policy{Verdict: flow.VerdictForwarded, Direction: flow.Ingress, Source: clientPeer, Destination: webPeer,
			IngressAllowedBy: []flow.PolicyRef{webRef}, EgressAllowedBy: []flow.PolicyRef{noSSH}}, flowpb.Verdict_FORWARDED, 0},
		{"L7 audit", &flow.Policy{Verdict: flow.VerdictAudit, DropReason: flow.PolicyDenied, Hook: flow.HookL7Audit, Direction: flow.Ingress,
			Source: clientPeer, Destination: webPeer, IngressAllowedBy: []flow.PolicyRef{webRef}, IngressDeniedBy: []flow.PolicyRef{webRef}}, flowpb.Verdict_AUDIT, 1},
		{"proxy drop", &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDenied, Hook: flow.HookProxy, Direction: flow.Ingress,
			Destination: webPeer, IngressDeniedBy: []flow.PolicyRef{webRef}}, flowpb.Verdict_DROPPED, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			evs := Events(base(c.policy))
			if len(evs) != 2 {
				t.Fatalf("%d events", len(evs))
			}
			req, resp := evs[0], evs[1]
			for i, ev := range evs {
				if ev.GetVerdict() != c.verdict || len(ev.GetIngressDeniedBy()) != c.denied || ev.GetEventType().GetType() != MessageTypeAccessLog {
					t.Errorf("event %d: %s", i, prototext.Format(ev))
				}
			}
			if c.verdict == flowpb.Verdict_DROPPED && req.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED {
				t.Errorf("drop reason %v", req.GetDropReasonDesc())
			}
			// The server is the web endpoint, with the process's labels too.
			dst := req.GetDestination()
			if dst.GetIdentity() != 256 || dst.GetPodName() != "web" || dst.GetNamespace() != "shop" || len(dst.GetLabels()) != 1+len(procLabels) {
				t.Errorf("destination %v", dst)
			}
			if resp.GetSource() != dst {
				t.Errorf("response source %v, want the request's destination", resp.GetSource())
			}
			if c.policy.Source.Identity != 0 && req.GetSource().GetIdentity() != 257 {
				t.Errorf("source %v", req.GetSource())
			}
			if c.name == "allowed connection" && (len(req.GetIngressAllowedBy()) != 1 || req.GetEgressAllowedBy()[0].GetName() != "no-ssh") {
				t.Errorf("allowed_by: %s", prototext.Format(req))
			}
		})
	}
}
