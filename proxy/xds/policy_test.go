package xds_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/proxy/access"
	"github.com/sextant/sextant/proxy/config"
	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

type recorder struct {
	mu  sync.Mutex
	got []access.Record
}

func (r *recorder) sink(rec access.Record) {
	r.mu.Lock()
	r.got = append(r.got, rec)
	r.mu.Unlock()
}

func (r *recorder) records() []access.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// L7 rules (as the policy stage feeds them) become RBAC on a grpc-go xDS
// server: allowed calls pass, the others get PERMISSION_DENIED, and each
// decision is a record with its verdict and policy.
func TestRBACOnXDSServer(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	rec := &recorder{}
	sinkID := "rbac-" + t.Name()
	defer access.RegisterSink(sinkID, rec.sink)()
	cp := xdstest.StartControlPlane(t, pxds.Options{AuditSink: sinkID})
	srv := xdstest.StartXDSBackend(t, cp, "rbac-srv", nil)
	// The policy stage's input: CiliumNetworkPolicy rules.http.
	l7 := []config.Doc[*config.L7Policy]{{Origin: config.Origin{File: "policy-stage"}, Obj: &config.L7Policy{
		Spec: config.L7PolicySpec{Servers: []string{srv.Addr.String()}, HTTP: []config.HTTPRule{
			{Method: "POST", Path: "/grpc.testing.TestService/UnaryCall", Headers: []string{"x-team: blue"}},
			{Path: "/grpc.testing.TestService/EmptyCall", HeaderMatches: []config.HeaderMatch{{Name: "x-admin"}}},
		}}}}}
	l7[0].Obj.Name, l7[0].Obj.Namespace = "echo-l7", "default"
	if _, err := cp.ApplyL7(l7); err != nil {
		t.Fatal(err)
	}
	srv.WaitServing(t)

	cc, err := grpc.NewClient(srv.Addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md := func(kv ...string) context.Context { return metadata.AppendToOutgoingContext(ctx, kv...) }
	cases := []struct {
		name string
		do   func() error
		want codes.Code
	}{
		{"unary blue", func() error { _, err := client.UnaryCall(md("x-team", "blue"), &testpb.SimpleRequest{}); return err }, codes.OK},
		{"unary red", func() error { _, err := client.UnaryCall(md("x-team", "red"), &testpb.SimpleRequest{}); return err }, codes.PermissionDenied},
		{"unary no header", func() error { _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); return err }, codes.PermissionDenied},
		{"empty admin", func() error { _, err := client.EmptyCall(md("x-admin", "1"), &testpb.Empty{}); return err }, codes.Unimplemented},
		{"empty", func() error { _, err := client.EmptyCall(ctx, &testpb.Empty{}); return err }, codes.PermissionDenied},
	}
	const rounds = 10
	denied, allowed := 0, 0
	for range rounds {
		for _, c := range cases {
			if got := status.Code(c.do()); got != c.want {
				t.Fatalf("%s: %v, want %v", c.name, got, c.want)
			}
			if c.want == codes.PermissionDenied {
				denied++
			} else {
				allowed++
			}
		}
	}
	// Each decision a record: denials DROPPED / POLICY_DENIED with the
	// policy in denied_by, the rest FORWARDED by the rule's policy.
	var drops, forwards int
	for _, r := range rec.records() {
		d := r.Decision
		switch d.Verdict {
		case access.VerdictDropped:
			drops++
			if d.DropReason != access.DropReasonPolicyDenied || !slices.Equal(d.DeniedBy, []string{"default/echo-l7"}) ||
				r.Flow.Destination != srv.Addr || r.Flow.GRPC == nil || *r.Flow.GRPC.Status != uint32(codes.PermissionDenied) {
				t.Errorf("denial record %+v", r)
			}
		case access.VerdictForwarded:
			forwards++
			if !slices.Equal(d.AllowedBy, []string{"default/echo-l7"}) {
				t.Errorf("allowed record %+v", r)
			}
		}
	}
	if drops != denied || forwards != allowed {
		t.Errorf("records: %d dropped, %d forwarded; calls: %d denied, %d allowed", drops, forwards, denied, allowed)
	}
	// sextant's flows of the same calls at the server: the denied ones
	// answered PERMISSION_DENIED.
	atServer := func(f *flow.Flow) bool { return f.Observer == flow.SideServer && f.Destination == srv.Addr }
	fl := pl.Await(atServer, denied+allowed)
	byStatus := map[int]int{}
	for _, f := range fl {
		byStatus[xdstest.GRPCStatus(f)]++
	}
	if byStatus[int(codes.PermissionDenied)] != denied || len(fl) != denied+allowed {
		t.Errorf("observed %d flows by grpc-status %v; want %d PERMISSION_DENIED of %d", len(fl), byStatus, denied, denied+allowed)
	}
}

// A configuration the translation cannot check fully (a raw Envoy
// resource grpc-go refuses) is NACKed by the client: the NACK shows in
// the status and metrics, and the client keeps serving the last version
// it accepted. A bad input is rejected before anything is served.
func TestNACKKeepsLastGood(t *testing.T) {
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "nack-a", nil)
	raw := func(filters string) string {
		return backendDoc(a) + fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: raw.test
    apiListener:
      apiListener:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        statPrefix: raw
        httpFilters: %s
        routeConfig:
          name: raw
          virtualHosts:
          - name: raw
            domains: ["*"]
            routes:
            - match: {prefix: /}
              route: {cluster: default/nack-a}
`, filters)
	}
	router := `[{name: envoy.filters.http.router, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
	cp.Apply(t, raw(router))
	cc := cp.Dial(t, "client-nack", "raw.test")
	callN(t, cc, 10)

	// grpc-go has no local rate limiting and refuses a filter it does not
	// know unless it is marked optional.
	limited := `[{name: envoy.filters.http.local_ratelimit, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, statPrefix: rl}},
     {name: envoy.filters.http.router, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
	res := cp.Apply(t, raw(limited))
	deadline := time.Now().Add(30 * time.Second)
	var node pxds.NodeStatus
	for time.Now().Before(deadline) {
		for _, n := range cp.Status().Nodes {
			if n.ID == "client-nack" {
				node = n
			}
		}
		if node.NACKs > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if node.NACKs == 0 || node.LastNACK == nil {
		t.Fatalf("no NACK recorded: %+v", node)
	}
	if node.LastNACK.Version != res.Version || node.LastNACK.TypeURL != "type.googleapis.com/envoy.config.listener.v3.Listener" {
		t.Errorf("NACK %+v, want listener version %s", node.LastNACK, res.Version)
	}
	t.Logf("NACK surfaced: %+v", *node.LastNACK)
	if node.Acked["listener"] == res.Version {
		t.Errorf("listener version %s both ACKed and NACKed", res.Version)
	}
	// The client keeps the version it accepted; the server holds the
	// node back on it instead of re-sending what it refused.
	if c := callN(t, cc, 20); c["nack-a"] != 20 {
		t.Errorf("after the NACK: %v", c)
	}
	for _, n := range cp.Status().Nodes {
		if n.ID == "client-nack" && (n.NACKs != 1 || n.Rejected != res.Version || n.Version == res.Version) {
			t.Errorf("node after the NACK: %d NACKs, held back from %q, on %q (want 1 NACK, held back from %s)", n.NACKs, n.Rejected, n.Version, res.Version)
		}
	}

	// A bad input: rejected with file:line, the served version unchanged.
	before := cp.Status().Version
	bad, err := config.Parse(map[string][]byte{"bad.yaml": []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: bad}
spec:
  hostnames: [raw.test]
  rules:
  - backendRefs: [{name: nowhere}]
`)})
	if err == nil {
		_, err = cp.Server.Apply(bad)
	}
	if err == nil {
		t.Fatal("bad input accepted")
	}
	t.Logf("rejected: %v", err)
	if st := cp.Status(); st.Version != before {
		t.Errorf("version %s after a rejected input, want %s", st.Version, before)
	}
	if c := callN(t, cc, 20); c["nack-a"] != 20 {
		t.Errorf("after a rejected input: %v", c)
	}
	// A clash between a raw resource and a generated one is a rejection
	// of the whole input too.
	clash, err := config.Parse(map[string][]byte{"clash.yaml": []byte(raw(router) + `---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: clash}
spec:
  hostnames: [raw.test]
  rules:
  - backendRefs: [{name: nack-a}]
`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Server.Apply(clash); err == nil {
		t.Error("a raw listener and a route front of the same name were both accepted")
	} else {
		t.Logf("clash rejected: %v", err)
	}
	if n := len(cp.Status().Rejected); n != 1 {
		t.Errorf("%d rejections in status, want 1 (the parse error never reached the server)", n)
	}
}
