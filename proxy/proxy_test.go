package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sextant/sextant/proxy"
	"github.com/sextant/sextant/proxy/access"
	"github.com/sextant/sextant/proxy/envoy"
	"github.com/sextant/sextant/proxy/xdstest"
	"github.com/sextant/sextant/testbed"
)

func TestMain(m *testing.M) { os.Exit(xdstest.Main(m)) }

func backend(b *xdstest.Backend) string {
	return fmt.Sprintf("apiVersion: proxy.sextant.io/v1alpha1\nkind: Backend\nmetadata: {name: %s}\nspec:\n  endpoints: [{address: 127.0.0.1, port: %d}]\n---\n", b.Name, b.Addr.Port())
}

func grpcFront(to string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: node-a}]
  rules:
  - backendRefs: [{name: ` + to + `}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: node-c}]
  rules:
  - backendRefs: [{name: node-b}]
`
}

// The composition the agent runs, without an Envoy binary: GRPCRoute
// fronts go through the forwarder, HTTPRoute fronts (which need Envoy)
// are left alone and the status says why; a changed file applies, a
// bad one is rejected and the last good one stays.
func TestNodeProxyWithoutEnvoy(t *testing.T) {
	cg := xdstest.Cgroup(t)
	t.Setenv("PATH", "/usr/bin:/bin") // no envoy there
	a, b, c := xdstest.StartBackend(t, "node-a", nil), xdstest.StartBackend(t, "node-b", nil), xdstest.StartBackend(t, "node-c", nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "routes.yaml")
	write := func(s string) {
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write(backend(a) + backend(b) + backend(c) + grpcFront("node-b"))
	fwd := netip.MustParseAddrPort(testbed.FreeAddr(t))
	p, err := proxy.New(proxy.Config{Files: []string{dir}, StateDir: t.TempDir(), Cgroup: cg, ForwarderAddr: fwd, Node: "n1"},
		func(access.Record) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	who := func(addr netip.AddrPort) string {
		cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		resp, err := testgrpc.NewTestServiceClient(cc).UnaryCall(cctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			return "error: " + err.Error()
		}
		return resp.GetHostname()
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if cctx.Err() != nil {
				t.Fatalf("%s: not within 60s; status %+v", what, p.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("a's address routed to b", func() bool { return who(a.Addr) == "node-b" })
	if got := who(c.Addr); got != "node-c" {
		t.Errorf("HTTP front without Envoy: dialing node-c reached %q, want node-c itself (not redirected)", got)
	}
	st := p.Status()
	if st.Envoy.State != envoy.StateMissing || !strings.Contains(st.Envoy.LastError, "no Envoy binary") {
		t.Errorf("Envoy status %+v", st.Envoy)
	}
	if _, ok := st.Redirected[c.Addr.String()]; ok || st.Redirected[a.Addr.String()] != fwd.String() {
		t.Errorf("redirected %v", st.Redirected)
	}

	// A bad file: rejected, the routes in force stay.
	write(backend(a) + "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  bogus: 1\n")
	eventually("rejection shown", func() bool {
		return strings.Contains(p.Status().LoadError, "routes.yaml:11: spec.bogus: unknown field")
	})
	if got := who(a.Addr); got != "node-b" {
		t.Errorf("after a rejected file: %q", got)
	}
	// A good change applies.
	write(backend(a) + backend(b) + backend(c) + grpcFront("node-a"))
	eventually("a's address routed to a", func() bool { return who(a.Addr) == "node-a" })
	if st := p.Status(); st.LoadError != "" || st.Forwarder.Calls == 0 || st.Redirect == nil || st.Redirect.Redirected == 0 {
		t.Errorf("status %+v", st)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: node-b}
spec:
  endpoints: [{address: 127.0.0.1, port: 1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  hostnames: [web]
  rules:
  - matches: [{queryParams: [{name: q, value: "1"}]}]
    backendRefs: [{name: node-b}]
`), 0o644)
	r, err := proxy.Validate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Summary != "1 HTTPRoute, 1 Backend" || len(r.Warnings) != 1 || r.Warnings[0].At != filepath.Join(dir, "a.yaml")+":13" {
		t.Errorf("report %+v", r)
	}
	var out strings.Builder
	r.Write(&out)
	if want := "valid: 1 HTTPRoute, 1 Backend\nenvoy profile: 2 listeners, 1 routes, 2 clusters, 1 endpoints\ngrpc profile: 1 listeners, 0 routes, 1 clusters, 1 endpoints\nwarning: "; !strings.HasPrefix(out.String(), want) {
		t.Errorf("report:\n%s", out.String())
	}
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte("apiVersion: proxy.sextant.io/v1alpha1\nkind: Backend\nmetadata: {name: x}\nspec: {endpoint: []}\n"), 0o644)
	if _, err := proxy.Validate(dir); err == nil || !strings.Contains(err.Error(), "b.yaml:4: spec.endpoint: unknown field") {
		t.Errorf("bad file: %v", err)
	}
}
