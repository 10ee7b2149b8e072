package xds_test

// Each feature proven with real xDS clients (grpc-go's xds package)
// against the proxy's control plane: by the clients' own counts and by
// the flows sextant's probes and collector observe of the same traffic.

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/flow"
	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

func TestMain(m *testing.M) { os.Exit(xdstest.Main(m)) }

const unary = "/grpc.testing.TestService/UnaryCall"

func backendDoc(b *xdstest.Backend) string {
	return fmt.Sprintf(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: %s}
spec:
  endpoints: [{address: %s, port: %d}]
---
`, b.Name, b.Addr.Addr(), b.Addr.Port())
}

func backendsDoc(bs ...*xdstest.Backend) string {
	var s strings.Builder
	for _, b := range bs {
		s.WriteString(backendDoc(b))
	}
	return s.String()
}

// policyDoc is backend b, a GRPCRoute name (hostname name.test) to it,
// and a TrafficPolicy with spec lines policy targeting the route (or,
// onBackend, the Backend).
func policyDoc(b *xdstest.Backend, name string, onBackend bool, policy string) string {
	target := "{group: gateway.networking.k8s.io, kind: GRPCRoute, name: " + name + "}"
	if onBackend {
		target = "{group: proxy.sextant.io, kind: Backend, name: " + b.Name + "}"
	}
	return backendDoc(b) + fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: %[1]s}
spec:
  hostnames: [%[1]s.test]
  rules:
  - backendRefs: [{name: %[2]s}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: %[1]s}
spec:
  targetRefs: [%[3]s]
  %[4]s
`, name, b.Name, target, policy)
}

// call makes one UnaryCall and returns who answered ("" on error).
func call(ctx context.Context, cc *grpc.ClientConn, md ...string) (string, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	resp, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		return "", err
	}
	return resp.GetHostname(), nil
}

func callN(t *testing.T, cc *grpc.ClientConn, n int, md ...string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range n {
		who, err := call(ctx, cc, md...)
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		counts[who]++
	}
	return counts
}

// waitFor calls until one lands on backend want (a config change has
// reached the client); returns how many calls it took per backend.
func waitFor(t *testing.T, cc *grpc.ClientConn, want string, md ...string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	transient := 0
	for {
		who, err := call(ctx, cc, md...)
		// grpc-go can route a call to a cluster of the new route before its
		// cluster manager has that cluster's picker (the two updates race
		// inside the client): such a call fails Unavailable "unknown
		// cluster selected for RPC" while the change lands. Nothing a
		// control plane can order away (a weight-0 cluster is not built);
		// docs/proxy.md says so. A few, only during the switch, are fine.
		if err != nil && strings.Contains(err.Error(), "unknown cluster selected for RPC") && transient < 20 {
			transient++
			t.Logf("call while the change lands: %v", err)
			continue
		}
		if err != nil {
			t.Fatalf("call while waiting for %s: %v", want, err)
		}
		counts[who]++
		if who == want {
			return counts
		}
	}
}

func add(into map[string]int, from map[string]int) {
	for k, v := range from {
		into[k] += v
	}
}

func TestWeightedSplitShiftedLive(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a, b := xdstest.StartBackend(t, "split-a", nil), xdstest.StartBackend(t, "split-b", nil)
	route := func(wa, wb int) string {
		return backendsDoc(a, b) + fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: split}
spec:
  hostnames: [split.test]
  rules:
  - backendRefs:
    - {name: split-a, weight: %d}
    - {name: split-b, weight: %d}
`, wa, wb)
	}
	cp.Apply(t, route(100, 0))
	cc := cp.Dial(t, "client-split", "split.test")
	total := map[string]int{}

	c := callN(t, cc, 500)
	add(total, c)
	if c["split-a"] != 500 {
		t.Errorf("100/0: %v", c)
	}

	cp.Apply(t, route(90, 10))
	add(total, waitFor(t, cc, "split-b"))
	const n = 2000
	c = callN(t, cc, n)
	add(total, c)
	// Binomial(2000, 0.1): mean 200, sd 13.4; ±5 sd is a false alarm
	// once in 3.5 million runs.
	mean, sd := n*0.1, math.Sqrt(n*0.1*0.9)
	if got := float64(c["split-b"]); math.Abs(got-mean) > 5*sd || c["split-a"]+c["split-b"] != n {
		t.Errorf("90/10 over %d calls: %v (split-b within %.0f±%.0f)", n, c, mean, 5*sd)
	}
	t.Logf("90/10: %v", c)

	cp.Apply(t, route(0, 100))
	// Once one call reached b after the change, a gets none: wait until a
	// call lands on b with a run of 20 after it.
	for {
		w := waitFor(t, cc, "split-b")
		add(total, w)
		r := callN(t, cc, 20)
		add(total, r)
		if r["split-b"] == 20 {
			break
		}
	}
	c = callN(t, cc, 500)
	add(total, c)
	if c["split-b"] != 500 {
		t.Errorf("0/100: %v", c)
	}
	if a.Calls() != total["split-a"] || b.Calls() != total["split-b"] {
		t.Errorf("backends received %d/%d, clients counted %v", a.Calls(), b.Calls(), total)
	}
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: total["split-a"], b: total["split-b"]})
}

func TestHeaderRouting(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a, b := xdstest.StartBackend(t, "hdr-a", nil), xdstest.StartBackend(t, "hdr-b", nil)
	cp.Apply(t, backendsDoc(a, b)+`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: hdr}
spec:
  hostnames: [hdr.test]
  rules:
  - matches:
    - headers: [{name: x-canary, value: "yes"}]
    backendRefs: [{name: hdr-b}]
  - backendRefs: [{name: hdr-a}]
`)
	cc := cp.Dial(t, "client-hdr", "hdr.test")
	if c := callN(t, cc, 200, "x-canary", "yes"); c["hdr-b"] != 200 {
		t.Errorf("x-canary: yes → %v", c)
	}
	if c := callN(t, cc, 200, "x-canary", "no"); c["hdr-a"] != 200 {
		t.Errorf("x-canary: no → %v", c)
	}
	if c := callN(t, cc, 200); c["hdr-a"] != 200 {
		t.Errorf("no header → %v", c)
	}
	fl := xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: 400, b: 200})
	for bk, want := range map[*xdstest.Backend]func(string) bool{b: func(v string) bool { return v == "yes" }, a: func(v string) bool { return v != "yes" }} {
		for _, f := range fl[bk] {
			if v := header(f, "x-canary"); !want(v) {
				t.Errorf("%s observed a call with x-canary %q", bk.Name, v)
				break
			}
		}
	}
}

func header(f *flow.Flow, name string) string {
	for _, h := range f.RequestHeaders {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// failFirst fails the first attempt of every request id with UNAVAILABLE.
func failFirst() xdstest.Handler {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(ctx context.Context, _ *xdstest.Backend) error {
		id := xdstest.Header(ctx, "x-request-id")
		mu.Lock()
		defer mu.Unlock()
		if !seen[id] {
			seen[id] = true
			return status.Error(codes.Unavailable, "first attempt fails")
		}
		return nil
	}
}

func TestRetries(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "retry-a", failFirst())
	cp.Apply(t, policyDoc(a, "retry", false, "retry: {on: [unavailable], attempts: 2, backoff: 1ms}"))
	cc := cp.Dial(t, "client-retry", "retry.test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 50
	for i := range n {
		if _, err := call(ctx, cc, "x-request-id", fmt.Sprint(i)); err != nil {
			t.Fatalf("call %d failed despite the retry policy: %v", i, err)
		}
	}
	if a.Calls() != 2*n {
		t.Errorf("backend saw %d attempts, want %d (each call retried once)", a.Calls(), 2*n)
	}
	fl := xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: 2 * n})[a]
	byStatus := map[int]int{}
	for _, f := range fl {
		byStatus[xdstest.GRPCStatus(f)]++
	}
	if byStatus[int(codes.Unavailable)] != n || byStatus[0] != n {
		t.Errorf("observed attempts by grpc-status: %v, want %d UNAVAILABLE and %d OK", byStatus, n, n)
	}
}

func TestStreamTimeout(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	slow := xdstest.StartBackend(t, "timeout-a", func(ctx context.Context, _ *xdstest.Backend) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return nil
		}
	})
	cp.Apply(t, policyDoc(slow, "timeout", false, "timeout: {request: 200ms}"))
	cc := cp.Dial(t, "client-timeout", "timeout.test")
	const n = 5
	for range n {
		// No deadline of the caller's own: the route's limit applies.
		_, err := call(context.Background(), cc)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("want DEADLINE_EXCEEDED from the route's 200ms limit, got %v", err)
		}
	}
	// The server side saw each call with the grpc-timeout the client's
	// route imposed, and the client's reset when it expired.
	for _, f := range xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{slow: n})[slow] {
		to := header(f, "grpc-timeout")
		d, err := time.ParseDuration(strings.NewReplacer("m", "ms", "u", "us", "n", "ns", "S", "s").Replace(to))
		if err != nil || d > 200*time.Millisecond || d <= 0 {
			t.Errorf("observed grpc-timeout %q, want at most 200ms", to)
		}
		if f.Outcome != flow.OutcomeReset && xdstest.GRPCStatus(f) != int(codes.DeadlineExceeded) {
			t.Errorf("observed outcome %v status %d, want a reset or DEADLINE_EXCEEDED", f.Outcome, xdstest.GRPCStatus(f))
		}
	}
}

func TestFaultInjection(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "fault-a", nil)
	doc := func(fault string) string { return policyDoc(a, "fault", false, "fault: "+fault) }
	cp.Apply(t, doc("{abort: {percent: 30, grpcStatus: 8}}"))
	cc := cp.Dial(t, "client-fault", "fault.test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 1000
	aborted := 0
	for range n {
		_, err := call(ctx, cc)
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			aborted++
		default:
			t.Fatalf("call: %v", err)
		}
	}
	mean, sd := n*0.3, math.Sqrt(n*0.3*0.7)
	if math.Abs(float64(aborted)-mean) > 5*sd {
		t.Errorf("aborted %d of %d, want %.0f±%.0f", aborted, n, mean, 5*sd)
	}
	if a.Calls() != n-aborted {
		t.Errorf("backend received %d, want the %d calls not aborted", a.Calls(), n-aborted)
	}
	// Aborted calls never leave the client: sextant sees only the others.
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: n - aborted})

	cp.Apply(t, doc("{delay: {percent: 100, fixedDelay: 150ms}}"))
	// Wait for the first delayed call (the new policy reached the
	// client; until then 70% of calls pass undelayed).
	for {
		start := time.Now()
		_, err := call(ctx, cc)
		if ctx.Err() != nil {
			t.Fatal("the delay policy never reached the client")
		}
		if err == nil && time.Since(start) >= 150*time.Millisecond {
			break
		}
	}
	for range 5 {
		start := time.Now()
		if _, err := call(ctx, cc); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("call took %v, under the injected 150ms delay", d)
		}
	}
}

func TestCircuitBreaking(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	release := make(chan struct{})
	a := xdstest.StartBackend(t, "cb-a", func(ctx context.Context, _ *xdstest.Backend) error {
		if xdstest.Header(ctx, "x-hold") != "" {
			<-release
		}
		return nil
	})
	cp.Apply(t, policyDoc(a, "cb", true, "circuitBreaker: {maxRequests: 2}"))
	cc := cp.Dial(t, "client-cb", "cb.test")
	callN(t, cc, 1) // connected
	var wg sync.WaitGroup
	held := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := call(context.Background(), cc, "x-hold", "1")
			held <- err
		}()
	}
	for a.Calls() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	// Two requests in flight: the third is refused by the client itself.
	const over = 10
	for range over {
		_, err := call(context.Background(), cc)
		if status.Code(err) != codes.Unavailable {
			t.Errorf("with 2 in flight and maxRequests 2, want UNAVAILABLE, got %v", err)
		}
	}
	close(release)
	wg.Wait()
	for range 2 {
		if err := <-held; err != nil {
			t.Errorf("held call: %v", err)
		}
	}
	callN(t, cc, 10) // the breaker closed again
	if a.Calls() != 1+2+10 {
		t.Errorf("backend received %d calls, want 13 (the %d refused never left the client)", a.Calls(), over)
	}
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: 13})
}

func TestOutlierDetectionEjects(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	bad := xdstest.StartBackend(t, "od-bad", func(context.Context, *xdstest.Backend) error {
		return status.Error(codes.Unavailable, "always failing")
	})
	good := xdstest.StartBackend(t, "od-good", nil)
	cp.Apply(t, fmt.Sprintf(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: od}
spec:
  endpoints: [{address: 127.0.0.1, port: %d}, {address: 127.0.0.1, port: %d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: od}
spec:
  hostnames: [od.test]
  rules:
  - backendRefs: [{name: od}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: od}
spec:
  targetRefs: [{group: proxy.sextant.io, kind: Backend, name: od}]
  outlierDetection:
    interval: 100ms
    baseEjectionTime: 5m
    maxEjectionPercent: 50
    failurePercentage: {threshold: 50, minimumHosts: 2, requestVolume: 10}
`, bad.Addr.Port(), good.Addr.Port()))
	cc := cp.Dial(t, "client-od", "od.test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Until ejection, round robin alternates and the bad one fails.
	failures, run := 0, 0
	for run < 100 {
		if _, err := call(ctx, cc); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("not ejected within 60s (%d failures)", failures)
			}
			failures++
			run = 0
			continue
		}
		run++
	}
	badCalls := bad.Calls()
	if c := callN(t, cc, 300); c["od-good"] != 300 {
		t.Errorf("after ejection: %v", c)
	}
	if bad.Calls() != badCalls || badCalls != failures {
		t.Errorf("ejected backend received %d calls (then %d); clients saw %d failures", badCalls, bad.Calls(), failures)
	}
	fl := xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{bad: failures, good: good.Calls()})
	for _, f := range fl[bad] {
		if xdstest.GRPCStatus(f) != int(codes.Unavailable) {
			t.Errorf("observed status %d at the failing backend", xdstest.GRPCStatus(f))
			break
		}
	}
}

func TestRingHashSticky(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	bs := []*xdstest.Backend{xdstest.StartBackend(t, "rh-1", nil), xdstest.StartBackend(t, "rh-2", nil), xdstest.StartBackend(t, "rh-3", nil)}
	var eps []string
	for _, b := range bs {
		eps = append(eps, fmt.Sprintf("{address: 127.0.0.1, port: %d}", b.Addr.Port()))
	}
	cp.Apply(t, `apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: rh}
spec:
  endpoints: [`+strings.Join(eps, ", ")+`]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rh}
spec:
  hostnames: [rh.test]
  rules:
  - backendRefs: [{name: rh}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: rh}
spec:
  targetRefs: [{group: proxy.sextant.io, kind: Backend, name: rh}]
  loadBalancer: {policy: RingHash, hashHeader: x-user}
`)
	cc := cp.Dial(t, "client-rh", "rh.test")
	const users, per = 30, 10
	owner := map[string]string{}
	used := map[string]bool{}
	// Ring hash connects lazily: the first calls of a user may wait for
	// the connection, never go elsewhere.
	for u := range users {
		c := callN(t, cc, per, "x-user", fmt.Sprint("user-", u))
		if len(c) != 1 {
			t.Errorf("user-%d spread over %v", u, c)
		}
		for who := range c {
			owner[fmt.Sprint("user-", u)] = who
			used[who] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("%d users all hashed to %v", users, used)
	}
	want := map[*xdstest.Backend]int{}
	for _, b := range bs {
		want[b] = b.Calls()
	}
	// sextant's flows agree: each user's calls observed at one backend,
	// the one the client saw answering.
	for b, fl := range xdstest.RequireFlows(t, pl, unary, want) {
		for _, f := range fl {
			if u := header(f, "x-user"); owner[u] != b.Name {
				t.Errorf("%s observed at %s, owned by %s", u, b.Name, owner[u])
			}
		}
	}
}

// A DNS backend: grpc-go resolves the LOGICAL_DNS cluster's name itself.
func TestDNSBackend(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "dns-a", nil)
	cp.Apply(t, fmt.Sprintf(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: dns-a}
spec:
  dns: {hostname: localhost, port: %d}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: dns}
spec:
  hostnames: [dns.test]
  rules:
  - backendRefs: [{name: dns-a}]
`, a.Addr.Port()))
	cc := cp.Dial(t, "client-dns", "dns.test")
	if c := callN(t, cc, 50); c["dns-a"] != 50 {
		t.Errorf("DNS backend: %v", c)
	}
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: 50})
}

// An HTTPRoute serves gRPC clients too: path matches, GEP-1731 retry
// codes mapped to gRPC statuses (503 → unavailable), and its request
// timeout as the stream limit.
func TestHTTPRouteForGRPCClients(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "hr-a", failFirst())
	b := xdstest.StartBackend(t, "hr-b", func(ctx context.Context, _ *xdstest.Backend) error {
		<-ctx.Done()
		return ctx.Err()
	})
	res := cp.Apply(t, backendsDoc(a, b)+`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hr}
spec:
  hostnames: [hr.test]
  rules:
  - matches: [{path: {type: Exact, value: /grpc.testing.TestService/UnaryCall}, headers: [{name: x-slow, value: "1"}]}]
    backendRefs: [{name: hr-b}]
    timeouts: {request: 100ms}
  - matches: [{path: {type: PathPrefix, value: /grpc.testing.TestService/}}]
    backendRefs: [{name: hr-a}]
    retry: {codes: [503], attempts: 1, backoff: 1ms}
`)
	for _, w := range res.Warnings {
		if w.Profile == pxds.GRPC {
			t.Errorf("unexpected gRPC warning: %s", w)
		}
	}
	cc := cp.Dial(t, "client-hr", "hr.test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 20
	for i := range n {
		if who, err := call(ctx, cc, "x-request-id", fmt.Sprint(i)); err != nil || who != "hr-a" {
			t.Fatalf("call %d: %q %v (want hr-a after one retry)", i, who, err)
		}
	}
	if _, err := call(ctx, cc, "x-slow", "1"); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("x-slow: %v, want DEADLINE_EXCEEDED from the route's 100ms", err)
	}
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: 2 * n, b: 1})
}
