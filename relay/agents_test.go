package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/link"
	"github.com/sextant/sextant/observer/ring"
)

// testAgent serves what an agent serves, without the probes: a ring of
// flows the test fills through the agent's feed, as the Observer API and
// the link, on the same gRPC server.
type testAgent struct {
	t     *testing.T
	name  string
	ring  *ring.Ring[observer.Entry]
	feed  *observer.Feed
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
	a := &testAgent{t: t, name: name, ring: observer.NewRing(1 << 16), tls: serverTLS}
	a.feed = observer.NewFeed(a.ring, name)
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
	link.NewServer(a.ring, a.name).Register(srv)
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

// write adds a flow at time t to the agent's ring: a request without
// response, so one event at t. It returns the flow's key (its path).
func (a *testAgent) write(t time.Time) string {
	n := a.seq.Add(1)
	key := fmt.Sprintf("/items/%s-%d", a.name, n)
	a.feed.Export(&flow.Flow{
		Time: t, Node: a.name, Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Scheme: "http",
		Authority: "svc.example", Path: key, Outcome: flow.OutcomeReset,
		Source:      netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+n%20000)),
		Destination: netip.MustParseAddrPort("10.0.0.2:8080"),
	})
	return key
}

// writeAnswered adds a flow at time t answered after latency (a request
// and a response event), with the headers and process a real one has.
func (a *testAgent) writeAnswered(t time.Time, latency time.Duration) string {
	n := a.seq.Add(1)
	key := fmt.Sprintf("/items/%s-%d", a.name, n)
	a.feed.Export(&flow.Flow{
		Time: t, Latency: latency, TTFB: latency / 2, Node: a.name, Observer: flow.SideServer, Protocol: "HTTP/2",
		Method: "GET", Scheme: "http", Authority: "svc.example", Path: key, Route: "/items/{id}", Status: 200,
		RequestHeaders:  []flow.Header{{Name: "user-agent", Value: "h2load nghttp2/1.52.0"}, {Name: "accept", Value: "*/*"}},
		ResponseHeaders: []flow.Header{{Name: "content-type", Value: "text/plain"}, {Name: "content-length", Value: "128"}},
		ResponseBytes:   128,
		Source:          netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+n%20000)),
		Destination:     netip.MustParseAddrPort("10.0.0.2:8080"),
		Process:         flow.Process{PID: 4242, Comm: "nghttpd", Exe: "/usr/bin/nghttpd", CgroupID: 77, Cgroup: "/sextant/bench"},
		ConnID:          n % 4, StreamID: uint32(2*n + 1),
	})
	return key
}

// key names a merged event: its flow's key, and "+resp" for a response.
func key(e observer.Entry) string {
	if e.Flow == nil {
		return fmt.Sprintf("lost %s %d", e.Lost.Source, e.Lost.Count)
	}
	if e.Half == observer.ResponseHalf {
		return e.Flow.Path + "+resp"
	}
	return e.Flow.Path
}

// eventTime is the time of a merged event.
func eventTime(e observer.Entry) time.Time {
	switch {
	case e.Flow == nil:
		return e.Lost.Time
	case e.Half == observer.ResponseHalf:
		return hubble.ResponseTime(e.Flow)
	}
	return e.Flow.Time
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

// reader reads a subscription on a goroutine of its own, so that tests
// can wait for its events with a timeout.
type reader struct {
	sub *Subscription
	ch  chan observer.Entry
}

func read(t *testing.T, sub *Subscription) *reader {
	rd := &reader{sub: sub, ch: make(chan observer.Entry, 1<<16)}
	go func() {
		defer close(rd.ch)
		buf := make([]observer.Entry, 64)
		for {
			n, ok := sub.Read(buf)
			for _, e := range buf[:n] {
				rd.ch <- e
			}
			if !ok {
				return
			}
		}
	}()
	t.Cleanup(sub.Close)
	return rd
}

// collect reads n events (failing after timeout), then makes sure no extra
// event follows within grace.
func collect(t *testing.T, rd *reader, n int, timeout, grace time.Duration) []observer.Entry {
	t.Helper()
	var got []observer.Entry
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case e, ok := <-rd.ch:
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
		case e := <-rd.ch:
			t.Errorf("extra event %s", key(e))
		case <-extra:
			return got
		}
	}
}

// checkOnceInOrder requires each of want (keys) to be delivered exactly
// once, nothing else, and the events to be in time order.
func checkOnceInOrder(t *testing.T, got []observer.Entry, want []string) {
	t.Helper()
	count := map[string]int{}
	for i, e := range got {
		count[key(e)]++
		if i > 0 && eventTime(e).Before(eventTime(got[i-1])) {
			t.Errorf("event %d (%s %s) older than event %d (%s %s)", i, key(e), eventTime(e).Format(time.StampMicro),
				i-1, key(got[i-1]), eventTime(got[i-1]).Format(time.StampMicro))
		}
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("event %s delivered %d times", w, count[w])
		}
		delete(count, w)
	}
	for k, c := range count {
		t.Errorf("unexpected event %s (%d times)", k, c)
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
