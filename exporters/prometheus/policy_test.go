package prometheus

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// Policy decisions are counted once each, by what decided them: a
// verdict flow counts the decisions it stands for, an L7 judgement one,
// and an exchange that only carries what allowed its connection nothing
// (its connection's verdict counted already); verdict flows have no
// golden signals.
func TestPolicyVerdictsCounted(t *testing.T) {
	e, reg := newTestExporter(t, Config{})
	web := flow.PolicyRef{Kind: "CiliumNetworkPolicy", Name: "web", Namespace: "shop"}
	deny := flow.PolicyRef{Kind: "CiliumClusterwideNetworkPolicy", Name: "no-ssh"}
	verdict := func(v flow.Verdict, dir flow.Direction, count uint32, allowed, denied []flow.PolicyRef) *flow.Flow {
		p := &flow.Policy{Verdict: v, Direction: dir, MatchType: 2, Count: count, Proto: 6, Hook: "connect"}
		if dir == flow.Ingress {
			p.IngressAllowedBy, p.IngressDeniedBy = allowed, denied
		} else {
			p.EgressAllowedBy, p.EgressDeniedBy = allowed, denied
		}
		return &flow.Flow{Kind: flow.KindPolicyVerdict, Time: time.Now(), Policy: p,
			Source: netip.MustParseAddrPort("10.0.0.1:0"), Destination: netip.MustParseAddrPort("10.0.0.2:80")}
	}
	exchange := func(p *flow.Policy) *flow.Flow {
		return &flow.Flow{Time: time.Now(), Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Path: "/x", Status: 200,
			Latency: time.Millisecond, Source: netip.MustParseAddrPort("10.0.0.1:4000"), Destination: netip.MustParseAddrPort("10.0.0.2:80"), Policy: p}
	}
	for _, f := range []*flow.Flow{
		verdict(flow.VerdictForwarded, flow.Ingress, 1, []flow.PolicyRef{web}, nil),
		verdict(flow.VerdictForwarded, flow.Ingress, 1, []flow.PolicyRef{web}, nil),
		verdict(flow.VerdictDropped, flow.Egress, 5, nil, nil), // UDP repeats aggregated
		verdict(flow.VerdictDropped, flow.Ingress, 1, []flow.PolicyRef{web}, []flow.PolicyRef{deny}),
		exchange(&flow.Policy{Verdict: flow.VerdictForwarded, Direction: flow.Ingress, IngressAllowedBy: []flow.PolicyRef{web}}),
		exchange(&flow.Policy{Verdict: flow.VerdictAudit, Direction: flow.Ingress, Hook: flow.HookL7Audit, Count: 1,
			IngressAllowedBy: []flow.PolicyRef{web}, IngressDeniedBy: []flow.PolicyRef{web}}),
	} {
		e.Export(f)
	}
	closeExporter(t, e)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"direction": "ingress", "verdict": "FORWARDED", "match_type": "L3-L4", "policy": "CiliumNetworkPolicy/shop/web"}, 2},
		{map[string]string{"direction": "egress", "verdict": "DROPPED", "match_type": "L3-L4", "policy": ""}, 5},
		{map[string]string{"direction": "ingress", "verdict": "DROPPED", "match_type": "L3-L4", "policy": "CiliumClusterwideNetworkPolicy/no-ssh"}, 1},
		{map[string]string{"direction": "ingress", "verdict": "AUDIT", "match_type": "L7", "policy": "CiliumNetworkPolicy/shop/web"}, 1},
	} {
		ms := series(t, reg, "sextant_policy_verdicts_total", c.labels)
		if len(ms) != 1 || ms[0].GetCounter().GetValue() != c.want {
			t.Errorf("%v: %v, want one series of %v", c.labels, ms, c.want)
		}
	}
	if ms := series(t, reg, "sextant_policy_verdicts_total", map[string]string{"match_type": "L7", "verdict": "FORWARDED"}); len(ms) != 0 {
		t.Errorf("an exchange's connection policies were counted again: %v", ms)
	}
	// Both exchanges have golden signals; the verdicts have none.
	ms := series(t, reg, "http_server_request_duration_seconds", nil)
	var n uint64
	for _, m := range ms {
		n += m.GetHistogram().GetSampleCount()
	}
	if n != 2 {
		t.Errorf("http_server_request_duration_seconds observations: %d, want 2 (the exchanges)", n)
	}
}
