package forward_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
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
	"github.com/sextant/sextant/proxy/forward"
	"github.com/sextant/sextant/proxy/redirect"
	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

func TestMain(m *testing.M) { os.Exit(xdstest.Main(m)) }

const mark = 0x5e7a

func listen(t *testing.T) (net.Listener, netip.AddrPort) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l, netip.MustParseAddrPort(l.Addr().String())
}

func startForwarder(t *testing.T, cp *xdstest.ControlPlane, node string, l net.Listener, front func(netip.AddrPort) (string, bool), failOpen bool) *forward.Forwarder {
	t.Helper()
	f, err := forward.New(forward.Config{
		Listener: l, Bootstrap: cp.Bootstrap(node), OriginalDst: redirect.SockoptOriginalDst,
		Front: front, FailOpen: failOpen, Mark: mark, Log: slog.Default(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	})
	return f
}

// The transparent path end to end: an unmodified grpc-go client dials a
// backend's real address; the eBPF redirect sends the connection to the
// forwarder, whose xDS server applies RBAC and whose xDS client routes
// the call as the control plane says — to another backend, split, by
// header — and the answer comes back. Proven by the client's counts and
// by the flows sextant observes at each backend and at the forwarder.
func TestTransparentPath(t *testing.T) {
	cg := xdstest.Cgroup(t)
	pl := xdstest.StartPipeline(t)
	rec := []access.Record{}
	recCh := make(chan access.Record, 1000)
	defer access.RegisterSink("forward-"+t.Name(), func(r access.Record) { recCh <- r })()

	// The forwarder's listener first: its address is in the L7 policy.
	fl, fwdAddr := listen(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{AuditSink: "forward-" + t.Name()})

	a := xdstest.StartBackend(t, "tp-a", nil)
	b := xdstest.StartBackend(t, "tp-b", func(ctx context.Context, _ *xdstest.Backend) error {
		if xdstest.Header(ctx, "x-fail") != "" {
			return status.Error(codes.NotFound, "asked to fail")
		}
		return nil
	})
	set, err := config.Parse(map[string][]byte{"tp.yaml": []byte(fmt.Sprintf(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: tp-a}
spec:
  endpoints: [{address: 127.0.0.1, port: %d}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: tp-b}
spec:
  endpoints: [{address: 127.0.0.1, port: %d}]
---
# Clients dialing tp-a's address: x-pin: a stays on a; the rest is split.
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: tp}
spec:
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: tp-a}]
  rules:
  - matches: [{headers: [{name: x-pin, value: a}]}]
    backendRefs: [{name: tp-a}]
  - backendRefs: [{name: tp-a, weight: 50}, {name: tp-b, weight: 50}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: L7Policy
metadata: {name: forwarder-l7}
spec:
  servers: [%s]
  http:
  - {method: POST, path: "/grpc.testing.TestService/(UnaryCall|FullDuplexCall)"}
`, a.Addr.Port(), b.Addr.Port(), fwdAddr))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Server.Apply(set); err != nil {
		t.Fatal(err)
	}
	fronts := pxds.Redirects(set)
	fw := startForwarder(t, cp, "forwarder", fl, func(d netip.AddrPort) (string, bool) { n, ok := fronts[d]; return n, ok }, false)

	r, err := redirect.Load(redirect.Options{Cgroup: cg, SkipMark: mark})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	routes := map[netip.AddrPort]netip.AddrPort{}
	for dst := range fronts {
		routes[dst] = fwdAddr
	}
	if err := r.Set(routes); err != nil {
		t.Fatal(err)
	}

	// The unmodified client: plain grpc-go, the backend's real address.
	cc, err := grpc.NewClient(a.Addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	// The forwarder serves once its xDS server has its listener.
	for {
		_, err := client.UnaryCall(cctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err == nil {
			break
		}
		if cctx.Err() != nil {
			t.Fatalf("no call through the forwarder within 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	counts := map[string]int{}
	const n = 400
	for range n {
		resp, err := client.UnaryCall(cctx, &testpb.SimpleRequest{})
		if err != nil {
			t.Fatalf("call through the forwarder: %v", err)
		}
		counts[resp.GetHostname()]++
	}
	// 50/50 over 400: 200 ± 5 sd (10).
	if counts["tp-b"] < 150 || counts["tp-b"] > 250 || counts["tp-a"]+counts["tp-b"] != n {
		t.Errorf("split through the forwarder: %v", counts)
	}
	for range 100 {
		resp, err := client.UnaryCall(metadata.AppendToOutgoingContext(cctx, "x-pin", "a"), &testpb.SimpleRequest{})
		if err != nil || resp.GetHostname() != "tp-a" {
			t.Fatalf("x-pin: a → %v %v", resp.GetHostname(), err)
		}
	}
	// A stream of raw messages each way.
	stream, err := client.FullDuplexCall(metadata.AppendToOutgoingContext(cctx, "x-pin", "a"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		body := []byte(fmt.Sprint("message ", i))
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || string(resp.GetPayload().GetBody()) != string(body) {
			t.Fatalf("stream echo %d: %q %v", i, resp.GetPayload().GetBody(), err)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream end: %v", err)
	}
	if a.Streams() != 1 {
		t.Errorf("tp-a received %d streams, want the pinned one", a.Streams())
	}
	// Upstream statuses pass through unchanged.
	for {
		_, err := client.UnaryCall(metadata.AppendToOutgoingContext(cctx, "x-fail", "1"), &testpb.SimpleRequest{})
		if status.Code(err) == codes.NotFound {
			if status.Convert(err).Message() != "asked to fail" {
				t.Errorf("status message %q", status.Convert(err).Message())
			}
			break
		}
		if err != nil {
			t.Fatalf("x-fail: %v", err)
		}
	}
	// RBAC on the forwarder's xDS server: EmptyCall is not allowed.
	const denied = 5
	for range denied {
		if _, err := client.EmptyCall(cctx, &testpb.Empty{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("EmptyCall through the forwarder: %v, want PERMISSION_DENIED", err)
		}
	}
	drops := 0
	for len(recCh) > 0 {
		rec = append(rec, <-recCh)
	}
	for _, r := range rec {
		if r.Decision.Verdict == access.VerdictDropped {
			drops++
			if !slices.Equal(r.Decision.DeniedBy, []string{"default/forwarder-l7"}) || r.Flow.Path != "/grpc.testing.TestService/EmptyCall" {
				t.Errorf("denial %+v", r)
			}
		}
	}
	if drops != denied {
		t.Errorf("%d denial records, want %d", drops, denied)
	}

	st, err := r.Stats()
	if err != nil || st.Redirected == 0 || st.Answered != st.Redirected {
		t.Errorf("redirect stats %+v %v: every redirected connection's original destination answered", st, err)
	}
	t.Logf("redirect %+v, forwarder %+v, split %v", st, fw.Stats(), counts)

	// sextant's flows: each backend observed exactly the calls it got,
	// and the forwarder (server side of the redirected connection)
	// observed every call the client made.
	xdstest.RequireFlows(t, pl, "/grpc.testing.TestService/UnaryCall", map[*xdstest.Backend]int{a: a.Calls(), b: b.Calls()})
	atForwarder := pl.Await(func(f *flow.Flow) bool {
		return f.Observer == flow.SideServer && f.Destination == fwdAddr && f.Path == "/grpc.testing.TestService/EmptyCall"
	}, denied)
	if len(atForwarder) != denied {
		t.Errorf("sextant observed %d EmptyCall flows at the forwarder, want %d", len(atForwarder), denied)
	}
	for _, f := range atForwarder {
		if xdstest.GRPCStatus(f) != int(codes.PermissionDenied) {
			t.Errorf("forwarder flow status %d", xdstest.GRPCStatus(f))
		}
	}
}

// Without a route for a redirected destination: fail-closed refuses the
// call (UNAVAILABLE), fail-open sends it straight to its destination.
func TestFailOpenAndClosed(t *testing.T) {
	cg := xdstest.Cgroup(t)
	closedL, closedAddr := listen(t)
	openL, openAddr := listen(t)
	// Each forwarder's xDS server needs its listener (no L7 rules).
	cp := xdstest.StartControlPlane(t, pxds.Options{Servers: []netip.AddrPort{closedAddr, openAddr}})
	none := func(netip.AddrPort) (string, bool) { return "", false }
	startForwarder(t, cp, "fwd-closed", closedL, none, false)
	openFw := startForwarder(t, cp, "fwd-open", openL, none, true)
	dClosed := xdstest.StartBackend(t, "fc-closed", nil)
	dOpen := xdstest.StartBackend(t, "fc-open", nil)

	r, err := redirect.Load(redirect.Options{Cgroup: cg, SkipMark: mark})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Set(map[netip.AddrPort]netip.AddrPort{dClosed.Addr: closedAddr, dOpen.Addr: openAddr}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dialCall := func(addr netip.AddrPort) error {
		cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		return err
	}
	if err := dialCall(dClosed.Addr); status.Code(err) != codes.Unavailable {
		t.Errorf("fail-closed: %v, want UNAVAILABLE", err)
	}
	if dClosed.Calls() != 0 {
		t.Errorf("fail-closed let %d calls through", dClosed.Calls())
	}
	if err := dialCall(dOpen.Addr); err != nil {
		t.Errorf("fail-open: %v", err)
	}
	if dOpen.Calls() != 1 || openFw.Stats().Direct != 1 {
		t.Errorf("fail-open: backend got %d calls, forwarder sent %d direct", dOpen.Calls(), openFw.Stats().Direct)
	}
}
