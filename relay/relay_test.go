package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/serve"
)

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) observerpb.ObserverClient {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return observerpb.NewObserverClient(conn)
}

// Three agents with interleaved histories and live traffic, plus one that
// stays quiet: every event arrives once, in time order; the quiet agent
// holds the others back no longer than the sort window.
func TestMergeInTimeOrder(t *testing.T) {
	agents := []*testAgent{startAgent(t, "node1", nil), startAgent(t, "node2", nil), startAgent(t, "node3", nil)}
	quiet := startAgent(t, "node4", nil)

	base := time.Now().Add(-time.Minute)
	var want []string
	// History: each agent's ring in time order, interleaved across agents,
	// and agent 3 with a burst older than everything else.
	for k := range 300 {
		for i, a := range agents {
			want = append(want, a.write(base.Add(time.Duration(k*3+i)*time.Millisecond)))
		}
	}
	for k := range 50 {
		want = append(want, agents[2].write(base.Add(-time.Second+time.Duration(k)*time.Millisecond)))
	}

	opts := Options{Since: base.Add(-time.Hour), SortWindow: 300 * time.Millisecond}
	for _, a := range append(agents, quiet) {
		opts.Agents = append(opts.Agents, a.addrs[0])
	}
	r, addr := startRelay(t, opts, nil)
	sub := read(t, r.Subscribe())
	client := dial(t, addr, nil)
	waitNodes(t, client, map[string]relaypb.NodeState{
		"node1": relaypb.NodeState_NODE_CONNECTED, "node2": relaypb.NodeState_NODE_CONNECTED,
		"node3": relaypb.NodeState_NODE_CONNECTED, "node4": relaypb.NodeState_NODE_CONNECTED,
	})
	// Live: the agents write concurrently, each in its own time order.
	done := make(chan []string, len(agents))
	for i, a := range agents {
		go func() {
			var w []string
			for range 200 {
				w = append(w, a.write(time.Now()))
				time.Sleep(time.Duration(i+1) * 500 * time.Microsecond)
			}
			done <- w
		}()
	}
	for range agents {
		want = append(want, <-done...)
	}

	got := collect(t, sub, len(want), 30*time.Second, time.Second)
	checkOnceInOrder(t, got, want)
	st := r.Stats()
	if st.Late != 0 || sub.sub.Dropped() != 0 {
		t.Errorf("stats %+v, dropped %d: want no late or dropped event", st, sub.sub.Dropped())
	}

	// The same stream through the relay's Observer API.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: uint64(len(want))})
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	var last time.Time
	for {
		e, err := stream.Recv()
		if err != nil {
			break
		}
		url := e.GetFlow().GetL7().GetHttp().GetUrl()
		served = append(served, url[strings.Index(url, "/items/"):])
		if ts := e.GetTime().AsTime(); ts.Before(last) {
			t.Errorf("served event %s older than the one before", url)
		} else {
			last = ts
		}
	}
	if fmt.Sprint(sortedCopy(served)) != fmt.Sprint(sortedCopy(want)) {
		t.Errorf("served %d events, want %d, once each", len(served), len(want))
	}

	status, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if status.GetNumConnectedNodes().GetValue() != 4 || status.GetNumUnavailableNodes().GetValue() != 0 || status.GetNumFlows() != uint64(len(want)) {
		t.Errorf("status: connected %v unavailable %v flows %d; want 4, 0, %d",
			status.GetNumConnectedNodes(), status.GetNumUnavailableNodes(), status.GetNumFlows(), len(want))
	}
}

// An agent that goes away is reported unavailable and redialed; when it
// comes back (same ring: a network partition, so the resumed stream
// overlaps what was delivered) every event is still delivered exactly once.
func TestReconnectWithoutDuplicates(t *testing.T) {
	a1, a2 := startAgent(t, "node1", nil), startAgent(t, "node2", nil)
	opts := Options{Agents: []string{a1.addrs[0], a2.addrs[0]}, SortWindow: 100 * time.Millisecond,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	r, addr := startRelay(t, opts, nil)
	sub := read(t, r.Subscribe())
	client := dial(t, addr, nil)
	both := map[string]relaypb.NodeState{"node1": relaypb.NodeState_NODE_CONNECTED, "node2": relaypb.NodeState_NODE_CONNECTED}
	waitNodes(t, client, both)

	var want []string
	write := func(n int) {
		for range n {
			want = append(want, a1.write(time.Now()), a2.write(time.Now()))
			time.Sleep(200 * time.Microsecond)
		}
	}
	write(100)
	checkOnceInOrder(t, collect(t, sub, len(want), 10*time.Second, 0), want)
	want = want[:0]

	a1.stop()
	waitNodes(t, client, map[string]relaypb.NodeState{"node1": relaypb.NodeState_NODE_UNAVAILABLE, "node2": relaypb.NodeState_NODE_CONNECTED})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumConnectedNodes().GetValue() != 1 || st.GetNumUnavailableNodes().GetValue() != 1 || len(st.GetUnavailableNodes()) != 1 || st.GetUnavailableNodes()[0] != "node1" {
		t.Errorf("status while node1 is away: connected %v unavailable %v %v", st.GetNumConnectedNodes(), st.GetNumUnavailableNodes(), st.GetUnavailableNodes())
	}
	// Both keep producing; node2's events keep flowing meanwhile.
	write(100)
	n2 := 0
	for _, e := range want {
		if strings.Contains(e, "node2") {
			n2++
		}
	}
	collected := collect(t, sub, n2, 10*time.Second, 0)

	a1.start()
	waitNodes(t, client, both)
	write(100)
	collected = append(collected, collect(t, sub, len(want)-n2, 15*time.Second, time.Second)...)
	// node1's events of the outage arrive after node2's newer ones: count
	// them, order is checked per node only here.
	byNode := map[string][]observer.Entry{}
	for _, e := range collected {
		byNode[e.Flow.Node] = append(byNode[e.Flow.Node], e)
	}
	wantByNode := map[string][]string{}
	for _, e := range want {
		n := strings.TrimPrefix(e[:strings.LastIndexByte(e, '-')], "/items/")
		wantByNode[n] = append(wantByNode[n], e)
	}
	for _, n := range []string{"node1", "node2"} {
		checkOnceInOrder(t, byNode[n], wantByNode[n])
	}
	if r.Stats().Resumed == 0 {
		t.Error("node1 came back with the same ring, yet its stream did not resume at the cursor: the test did not test")
	}
	t.Logf("stats %+v", r.Stats())
}

// An agent that is never reachable is listed by its address as
// unavailable; the others are served regardless.
func TestUnreachableAgent(t *testing.T) {
	a := startAgent(t, "node1", nil)
	gone := startAgent(t, "never", nil)
	gone.stop()
	r, addr := startRelay(t, Options{Agents: []string{a.addrs[0], gone.addrs[0]}, SortWindow: 50 * time.Millisecond}, nil)
	sub := read(t, r.Subscribe())
	client := dial(t, addr, nil)
	waitNodes(t, client, map[string]relaypb.NodeState{"node1": relaypb.NodeState_NODE_CONNECTED, gone.addrs[0]: relaypb.NodeState_NODE_UNAVAILABLE})
	want := []string{a.write(time.Now())}
	checkOnceInOrder(t, collect(t, sub, 1, 10*time.Second, 200*time.Millisecond), want)
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

// fakeResolver answers from a table the test changes.
type fakeResolver struct {
	addrs chan []string // next answers; the last one sticks
	cur   []string
}

func (f *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	select {
	case a := <-f.addrs:
		f.cur = a
	default:
	}
	if f.cur == nil {
		return nil, errors.New("no such host")
	}
	return f.cur, nil
}

// A DNS name resolving to several addresses is several agents; it is
// re-resolved, agents come and go with their addresses, and two addresses
// of the same agent do not double its events.
func TestDNSAgents(t *testing.T) {
	a1 := startAgent(t, "node1", nil)
	_, port, _ := net.SplitHostPort(a1.addrs[0])
	a2 := startAgentAt(t, "node2", nil, port, "127.0.0.2", "127.0.0.3") // one agent, two addresses
	res := &fakeResolver{addrs: make(chan []string, 4)}
	opts := Options{Agents: []string{"agents.test:" + port}, Resolver: res, ResolveInterval: 20 * time.Millisecond,
		AllowInsecure: true, SortWindow: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	r, addr := startRelay(t, opts, nil)
	client := dial(t, addr, nil)
	waitNodes(t, client, map[string]relaypb.NodeState{"agents.test:" + port: relaypb.NodeState_NODE_UNAVAILABLE})

	res.addrs <- []string{"127.0.0.1"}
	waitNodes(t, client, map[string]relaypb.NodeState{"node1": relaypb.NodeState_NODE_CONNECTED})

	res.addrs <- []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	waitNodes(t, client, map[string]relaypb.NodeState{"node1": relaypb.NodeState_NODE_CONNECTED, "node2": relaypb.NodeState_NODE_CONNECTED})
	sub := read(t, r.Subscribe())
	var want []string
	for range 50 {
		want = append(want, a1.write(time.Now()), a2.write(time.Now()))
	}
	checkOnceInOrder(t, collect(t, sub, len(want), 10*time.Second, 500*time.Millisecond), want)

	res.addrs <- []string{"127.0.0.2"}
	waitNodes(t, client, map[string]relaypb.NodeState{"node2": relaypb.NodeState_NODE_CONNECTED})
	// node2 may have been streamed through 127.0.0.3, which just went: it
	// resumes through 127.0.0.2 without losing or repeating events.
	want = want[:0]
	for range 50 {
		want = append(want, a2.write(time.Now()))
	}
	checkOnceInOrder(t, collect(t, sub, len(want), 10*time.Second, 500*time.Millisecond), want)
}

// A subscriber that does not read loses the oldest events once the
// relay's ring laps it, counted, and neither blocks the merge nor costs
// other subscribers anything.
func TestSlowSubscriptionLosesCounted(t *testing.T) {
	a := startAgent(t, "node1", nil)
	r, _ := startRelay(t, Options{Agents: []string{a.addrs[0]}, SortWindow: 50 * time.Millisecond, RingSize: 40}, nil)
	slow := r.Subscribe()
	fast := read(t, r.Subscribe())
	waitConnected(t, r, 1)
	var want []string
	for range 3 { // bursts the ring holds, so that the fast reader keeps up
		var burst []string
		base := time.Now()
		for i := range 30 {
			burst = append(burst, a.write(base.Add(time.Duration(i)*time.Microsecond)))
		}
		checkOnceInOrder(t, collect(t, fast, len(burst), 10*time.Second, 100*time.Millisecond), burst)
		want = append(want, burst...)
	}
	if fast.sub.Dropped() != 0 {
		t.Errorf("fast subscriber dropped %d", fast.sub.Dropped())
	}
	buf := make([]observer.Entry, 100)
	n, ok := slow.Read(buf)
	if !ok || slow.Dropped() != 50 {
		t.Fatalf("slow subscriber: read %d (ok %v), dropped %d; want 50 dropped", n, ok, slow.Dropped())
	}
	checkOnceInOrder(t, buf[:n], want[50:])
	slow.Close()
	if n, ok := slow.Read(buf); ok || n != 0 {
		t.Errorf("closed subscription still delivers (%d, %v)", n, ok)
	}
	// The relay goes on for the others.
	want = []string{a.write(time.Now())}
	checkOnceInOrder(t, collect(t, fast, 1, 10*time.Second, 0), want)
}

func waitConnected(t *testing.T, r *Relay, n uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r.Status().GetNumConnectedNodes().GetValue() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("connected nodes %v, want %d", r.Status().GetNumConnectedNodes(), n)
}

// Loopback is not authentication: plaintext to any TCP agent, loopback
// included, needs explicit consent; unix sockets are secured by their mode.
func TestPlaintextNeedsConsent(t *testing.T) {
	for _, a := range []string{"10.1.2.3:4244", "agents.example:4244", "localhost:4244", "127.0.0.1:4244", "[::1]:4244"} {
		if _, err := New(Options{Agents: []string{a}}); !errors.Is(err, serve.ErrPlaintext) {
			t.Errorf("plaintext to %s: %v, want ErrPlaintext", a, err)
		}
		if _, err := New(Options{Agents: []string{a}, AllowInsecure: true}); err != nil {
			t.Errorf("plaintext to %s allowed explicitly: %v", a, err)
		}
	}
	if _, err := New(Options{Agents: []string{"unix:///var/run/sextant/observer.sock"}}); err != nil {
		t.Errorf("agent on a unix socket: %v", err)
	}
	if _, err := New(Options{Agents: []string{"4244"}}); err == nil {
		t.Error("agent address without host accepted")
	}
}

// mTLS both ways: agent ↔ relay and client ↔ relay. A relay holding
// another CA's certificates never gets the agent's events; a client without
// a certificate, or with another CA's, is refused by the relay.
func TestMutualTLS(t *testing.T) {
	good, other := t.TempDir(), t.TempDir()
	for _, d := range []string{good, other} {
		if _, err := certs.Generate(d, certs.GenerateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	files := func(dir, side string) certs.Files {
		return certs.Files{Cert: filepath.Join(dir, side+".crt"), Key: filepath.Join(dir, side+".key"), CA: filepath.Join(dir, certs.CAFile)}
	}
	serverTLS, err := certs.ServerConfig(files(good, "server"))
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "node1", serverTLS)
	goodClient, err := certs.ClientConfig(files(good, "client"), "")
	if err != nil {
		t.Fatal(err)
	}
	otherClient, err := certs.ClientConfig(files(other, "client"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Another CA's client certificate, though it trusts the right CA.
	foreignCert := files(other, "client")
	foreignCert.CA = filepath.Join(good, certs.CAFile)
	foreignClient, err := certs.ClientConfig(foreignCert, "")
	if err != nil {
		t.Fatal(err)
	}

	r, addr := startRelay(t, Options{Agents: []string{a.addrs[0]}, AgentTLS: goodClient, SortWindow: 50 * time.Millisecond}, serverTLS)
	waitConnected(t, r, 1)
	sub := read(t, r.Subscribe())
	want := []string{a.write(time.Now())}
	checkOnceInOrder(t, collect(t, sub, 1, 10*time.Second, 0), want)

	for name, cfg := range map[string]*tlsConfig{"wrong CA": {otherClient}, "foreign client certificate": {foreignClient}} {
		t.Run("relay with "+name, func(t *testing.T) {
			bad, _ := startRelay(t, Options{Agents: []string{a.addrs[0]}, AgentTLS: cfg.c, SortWindow: 50 * time.Millisecond,
				Since: time.Now().Add(-time.Hour)}, nil)
			badSub := read(t, bad.Subscribe())
			time.Sleep(time.Second)
			if st := bad.Status(); st.GetNumConnectedNodes().GetValue() != 0 || st.GetNumUnavailableNodes().GetValue() != 1 {
				t.Errorf("status %v", st)
			}
			select {
			case e := <-badSub.ch:
				t.Errorf("got an event through a refused connection: %v", e)
			default:
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dial(t, addr, credentials.NewTLS(goodClient)).ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err != nil {
		t.Errorf("client with the right certificate: %v", err)
	}
	noCert := goodClient.Clone()
	noCert.Certificates = nil
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate":      credentials.NewTLS(noCert),
		"client trusting another CA": credentials.NewTLS(otherClient),
		"foreign client certificate": credentials.NewTLS(foreignClient),
		"plaintext":                  insecure.NewCredentials(),
	} {
		if _, err := dial(t, addr, creds).ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err == nil {
			t.Errorf("%s: relay answered", name)
		}
	}
}

type tlsConfig struct{ c *tls.Config }
