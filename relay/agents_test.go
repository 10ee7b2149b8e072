package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

// testAgent is a real Observer API server over a ring the test fills: what
// an agent serves, without the probes.
type testAgent struct {
	t     *testing.T
	name  string
	ring  *ring.Ring[*observerpb.GetFlowsResponse]
	addrs []string // listening addresses (host:port)
	tls   *tls.Config

	mu  sync.Mutex
	srv *grpc.Server
	seq atomic.Uint64
}

// startAgent serves a new ring on 127.0.0.1, on a free port.
func startAgent(t *testing.T, name string, serverTLS *tls.Config) *testAgent {
	t.Helper()
	return startAgentAt(t, name, serverTLS, "0", "127.0.0.1")
}

// startAgentAt serves a new ring on each of hosts, all on port (a free one
// when "0").
func startAgentAt(t *testing.T, name string, serverTLS *tls.Config, port string, hosts ...string) *testAgent {
	t.Helper()
	a := &testAgent{t: t, name: name, ring: newRing(1 << 16), tls: serverTLS}
	for _, h := range hosts {
		ln, err := net.Listen("tcp", net.JoinHostPort(h, port))
		if err != nil {
			t.Fatalf("agent %s listen: %v", name, err)
		}
		_, port, _ = net.SplitHostPort(ln.Addr().String())
		a.addrs = append(a.addrs, ln.Addr().String())
		ln.Close()
	}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func newRing(capacity int) *ring.Ring[*observerpb.GetFlowsResponse] {
	return ring.New[*observerpb.GetFlowsResponse](capacity)
}

// start serves on the agent's addresses (again, after stop).
func (a *testAgent) start() {
	a.t.Helper()
	var opts []grpc.ServerOption
	if a.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(a.tls)))
	}
	srv := grpc.NewServer(opts...)
	observer.New(observer.Options{
		Ring: a.ring,
		Node: a.name,
		Nodes: func() []*observerpb.Node {
			return []*observerpb.Node{{Name: a.name, State: relaypb.NodeState_NODE_CONNECTED}}
		},
	}).Register(srv)
	for _, addr := range a.addrs {
		var ln net.Listener
		var err error
		// The port was just released by stop; the kernel may need a moment.
		for range 50 {
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			a.t.Fatalf("agent %s listen %s: %v", a.name, addr, err)
		}
		go func() { _ = srv.Serve(ln) }()
	}
	a.mu.Lock()
	a.srv = srv
	a.mu.Unlock()
}

func (a *testAgent) stop() {
	a.mu.Lock()
	srv := a.srv
	a.srv = nil
	a.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// write adds a flow event at time t to the agent's ring.
func (a *testAgent) write(t time.Time) *observerpb.GetFlowsResponse {
	n := a.seq.Add(1)
	ts := timestamppb.New(t)
	e := &observerpb.GetFlowsResponse{
		Time:     ts,
		NodeName: a.name,
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
			Time:     ts,
			Uuid:     fmt.Sprintf("%s-%d", a.name, n),
			NodeName: a.name,
			Type:     flowpb.FlowType_L7,
			Verdict:  flowpb.Verdict_FORWARDED,
			IP:       &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
				SourcePort: 40000 + uint32(n%20000), DestinationPort: 8080,
			}}},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "GET", Url: "http://svc.example/items/" + fmt.Sprint(n), Protocol: "HTTP/2",
			}}},
			Summary: "HTTP/2 GET http://svc.example/items",
		}},
	}
	a.ring.Write(e)
	return e
}

// startRelay runs a relay until the test ends and serves it on loopback
// (plaintext, or with serverTLS). It returns the relay and its address.
func startRelay(t *testing.T, opts Options, serverTLS *tls.Config) (*Relay, string) {
	t.Helper()
	if opts.Log == nil {
		opts.Log = testLogger(t)
	}
	// The test agents serve plaintext on loopback: allowed here, on
	// purpose (mTLS has its own test).
	opts.AllowInsecure = opts.AllowInsecure || opts.AgentTLS == nil
	r, err := New(opts)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	var gopts []grpc.ServerOption
	if serverTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	srv := grpc.NewServer(gopts...)
	r.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("relay Run did not return within 10s of cancel")
		}
		srv.Stop()
	})
	return r, ln.Addr().String()
}

// collect reads n events from s (failing after timeout), then makes sure
// no extra event follows within grace.
func collect(t *testing.T, s *Subscription, n int, timeout, grace time.Duration) []*observerpb.GetFlowsResponse {
	t.Helper()
	var got []*observerpb.GetFlowsResponse
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case e, ok := <-s.Events():
			if !ok {
				t.Fatalf("subscription closed after %d of %d events", len(got), n)
			}
			got = append(got, e)
		case <-deadline:
			t.Fatalf("%d of %d events after %v", len(got), n, timeout)
		}
	}
	extra := time.After(grace)
	for {
		select {
		case e := <-s.Events():
			t.Errorf("extra event %s %s", e.GetNodeName(), e.GetFlow().GetUuid())
		case <-extra:
			return got
		}
	}
}

// checkOnceInOrder requires want (by UUID) to be delivered exactly once each
// and the events to be in time order.
func checkOnceInOrder(t *testing.T, got []*observerpb.GetFlowsResponse, want []*observerpb.GetFlowsResponse) {
	t.Helper()
	count := map[string]int{}
	for i, e := range got {
		count[e.GetFlow().GetUuid()]++
		if i > 0 && e.GetTime().AsTime().Before(got[i-1].GetTime().AsTime()) {
			t.Errorf("event %d (%s %s) older than event %d (%s %s)", i, e.GetFlow().GetUuid(), e.GetTime().AsTime().Format(time.StampMicro),
				i-1, got[i-1].GetFlow().GetUuid(), got[i-1].GetTime().AsTime().Format(time.StampMicro))
		}
	}
	for _, w := range want {
		id := w.GetFlow().GetUuid()
		if count[id] != 1 {
			t.Errorf("event %s delivered %d times", id, count[id])
		}
		delete(count, id)
	}
	for id, c := range count {
		t.Errorf("unexpected event %s (%d times)", id, c)
	}
}

// nodeStates asks the relay's own Observer API for its nodes.
func nodeStates(t *testing.T, client observerpb.ObserverClient) map[string]relaypb.NodeState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatalf("relay GetNodes: %v", err)
	}
	out := map[string]relaypb.NodeState{}
	for _, n := range resp.GetNodes() {
		out[n.GetName()] = n.GetState()
	}
	return out
}

// waitNodes polls the relay's GetNodes until it reports want exactly.
func waitNodes(t *testing.T, client observerpb.ObserverClient, want map[string]relaypb.NodeState) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got map[string]relaypb.NodeState
	for time.Now().Before(deadline) {
		got = nodeStates(t, client)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nodes %v, want %v", got, want)
}
