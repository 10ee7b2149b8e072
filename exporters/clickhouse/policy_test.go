package clickhouse

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/testbed"
)

// policyFlows: a dropped verdict (UDP, 5 decisions), an exchange that
// carries what allowed its connection, and one the L7 audit judged.
func policyFlows(t0 time.Time) []*flow.Flow {
	web := flow.PolicyEndpoint{Identity: 256, ID: 1, Name: "web", Namespace: "shop", Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"}}
	world := flow.PolicyEndpoint{Identity: 2, Labels: []string{"reserved:world"}}
	allow := []flow.PolicyRef{{Kind: "CiliumNetworkPolicy", Name: "web", Namespace: "shop", Revision: 4}}
	exchange := func(p *flow.Policy) *flow.Flow {
		return &flow.Flow{Time: t0, Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Path: "/admin", Status: 200,
			Source: netip.MustParseAddrPort("192.0.2.7:40000"), Destination: netip.MustParseAddrPort("10.0.0.2:80"), Policy: p}
	}
	return []*flow.Flow{
		{Kind: flow.KindPolicyVerdict, Time: t0, Node: "n1", Destination: netip.MustParseAddrPort("192.0.2.9:53"),
			Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDenied, Direction: flow.Egress, Source: web, Destination: world,
				Proto: 17, Count: 5, Revision: 4, Hook: "sendmsg"}},
		exchange(&flow.Policy{Verdict: flow.VerdictForwarded, MatchType: 2, Direction: flow.Ingress, Source: world, Destination: web, Proto: 6,
			IngressAllowedBy: allow, Revision: 4}),
		exchange(&flow.Policy{Verdict: flow.VerdictAudit, DropReason: flow.PolicyDenied, MatchType: 2, Direction: flow.Ingress, Source: world, Destination: web,
			Proto: 6, IngressAllowedBy: allow, IngressDeniedBy: allow, Revision: 4, Hook: flow.HookL7Audit, Count: 1}),
	}
}

// The policy columns (schema v3) as both stores keep them.
const policySQL = `SELECT kind, verdict, drop_reason, policy_match_type, traffic_direction, ip_protocol,
    source_identity, destination_identity, source_endpoint, destination_endpoint, length(source_labels), destination_labels,
    ingress_allowed_by, ingress_denied_by, length(egress_allowed_by), policy_revision, policy_hook, decisions
FROM flows ORDER BY decisions DESC, verdict`

var policyWant = []string{
	"[policy-verdict DROPPED POLICY_DENIED 0 egress 17 256 2 shop/web  2 [reserved:world] [] [] 0 4 sendmsg 5]",
	"[ FORWARDED  2 ingress 6 2 256  shop/web 1 [k8s:app=web k8s:io.kubernetes.pod.namespace=shop] [CiliumNetworkPolicy/shop/web] [] 0 4  0]",
	"[ AUDIT POLICY_DENIED 2 ingress 6 2 256  shop/web 1 [k8s:app=web k8s:io.kubernetes.pod.namespace=shop] [CiliumNetworkPolicy/shop/web] [CiliumNetworkPolicy/shop/web] 0 4 l7 1]",
}

func checkPolicyRows(t *testing.T, s Store) {
	t.Helper()
	res, err := s.Query(context.Background(), policySQL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != len(policyWant) {
		t.Fatalf("%d rows, want %d", len(res.Rows), len(policyWant))
	}
	// Rows of equal decisions come in any order: compare as sets.
	want := map[string]bool{}
	for _, w := range policyWant {
		want[w] = true
	}
	for _, row := range res.Rows {
		got := fmt.Sprint(row)
		if !want[got] {
			t.Errorf("row %s\nnot among\n%v", got, policyWant)
		}
		delete(want, got)
	}
}

func TestPolicyColumnsLegacy(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s := openNative(t, srv)
	insertFlows(t, s, policyFlows(time.Now()))
	checkPolicyRows(t, s)
}

func TestPolicyColumnsEmbedded(t *testing.T) {
	s := embedded(t)
	insertFlows(t, s, policyFlows(time.Now()))
	checkPolicyRows(t, s)
}
