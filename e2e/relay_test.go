package e2e

// The multi-node test: three `sextant agent` processes on this host, each
// scoped to its own cgroup v2 subtree (one "node" each), behind one
// `sextant relay`. Every node's workload runs inside its node's cgroup, so
// each agent sees only its node's traffic; the test reads the relay's
// Observer API and requires every flow of every node exactly once, all in
// time order, also across an agent killed and restarted mid-stream.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/testbed"
)

// startInCgroup starts peer role (named name in logs) inside cgroup dir: a
// shell moves itself there, then execs the peer, so that every connection
// of the peer belongs to the cgroup from its first byte.
func startInCgroup(t *testing.T, cg *testbed.Cgroup, role, name string, args any) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := cg.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+role, peerArgsEnv+"="+string(raw))
	return startProc(t, name, cmd)
}

// finishClient waits for the client's result and requires every request
// to have succeeded.
func finishClient(t *testing.T, p *proc, args clientArgs) {
	t.Helper()
	var res clientResult
	p.expectJSON(&res, 60*time.Second)
	p.waitExit(10 * time.Second)
	for i, r := range res.Results {
		if r.Err != "" || r.Status != 200 {
			t.Fatalf("%s request %d (%s): status %d error %q", p.name, i, args.Reqs[i].Path, r.Status, r.Err)
		}
	}
}

// relayStream follows the relay's merged stream.
type relayStream struct {
	mu     sync.Mutex
	events []*observerpb.GetFlowsResponse
	err    error
}

func followRelay(t *testing.T, client observerpb.ObserverClient) *relayStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatalf("relay GetFlows: %v", err)
	}
	s := &relayStream{}
	go func() {
		for {
			e, err := stream.Recv()
			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			s.events = append(s.events, e)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *relayStream) snapshot() ([]*observerpb.GetFlowsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*observerpb.GetFlowsResponse(nil), s.events...), s.err
}

// marked returns the flow events whose URL carries one of the markers.
func marked(events []*observerpb.GetFlowsResponse, markers map[string]bool) []*observerpb.GetFlowsResponse {
	var out []*observerpb.GetFlowsResponse
	for _, e := range events {
		if markers[marker(e.GetFlow())] {
			out = append(out, e)
		}
	}
	return out
}

// marker is the last path segment of a workload URL: "<node>-<phase>-<i>".
func marker(f *flowpb.Flow) string {
	url := f.GetL7().GetHttp().GetUrl()
	if i := strings.LastIndexByte(url, '/'); i >= 0 && strings.Contains(url, "/s/200/") {
		return url[i+1:]
	}
	return ""
}

// awaitMarked waits until want events carrying markers arrived (each
// exchange is a request and a response event), then a little longer for
// duplicates to show.
func (s *relayStream) awaitMarked(t *testing.T, markers map[string]bool) []*observerpb.GetFlowsResponse {
	t.Helper()
	want := 2 * len(markers)
	deadline := time.Now().Add(flowTimeout)
	for {
		events, err := s.snapshot()
		if err != nil {
			t.Fatalf("relay stream: %v", err)
		}
		if len(marked(events, markers)) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workload events through the relay after %v", len(marked(events, markers)), want, flowTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(grace)
	events, _ := s.snapshot()
	return marked(events, markers)
}

// checkExactlyOnce requires one request and one response event per marker,
// from the node the marker names, and nothing else.
func checkExactlyOnce(t *testing.T, events []*observerpb.GetFlowsResponse, markers map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	for _, e := range events {
		f := e.GetFlow()
		m := marker(f)
		node := m[:strings.IndexByte(m, '-')]
		if f.GetNodeName() != node || e.GetNodeName() != node {
			t.Errorf("event of %s says node %q / %q", m, f.GetNodeName(), e.GetNodeName())
		}
		seen[m+" "+f.GetL7().GetType().String()]++
	}
	for m := range markers {
		for _, typ := range []string{"REQUEST", "RESPONSE"} {
			if n := seen[m+" "+typ]; n != 1 {
				t.Errorf("%s %s delivered %d times, want once", m, typ, n)
			}
		}
	}
	if len(events) != 2*len(markers) {
		t.Errorf("%d workload events, want %d", len(events), 2*len(markers))
	}
}

// checkTimeOrder requires the merged stream to be in time order.
func checkTimeOrder(t *testing.T, events []*observerpb.GetFlowsResponse) {
	t.Helper()
	bad := 0
	for i := 1; i < len(events); i++ {
		prev, cur := events[i-1].GetTime().AsTime(), events[i].GetTime().AsTime()
		if cur.Before(prev) {
			if bad < 10 {
				t.Errorf("event %d (%s %s) is %v older than event %d (%s %s)", i, events[i].GetNodeName(), marker(events[i].GetFlow()),
					prev.Sub(cur), i-1, events[i-1].GetNodeName(), marker(events[i-1].GetFlow()))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d events out of time order", bad)
	}
}

func relayNodes(t *testing.T, client observerpb.ObserverClient) map[string]relaypb.NodeState {
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

func awaitNodes(t *testing.T, client observerpb.ObserverClient, want map[string]relaypb.NodeState, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := relayNodes(t, client)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay nodes %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRelayMultiNode(t *testing.T) {
	testbed.RequireRoot(t)
	bin := testbed.Sextant(t)
	tmp := t.TempDir()

	// The workload's server runs outside every node: only the clients are
	// observed, one node each.
	server := startPeer(t, "h2c-server", nil)
	serverAddrStr, _ := serverAddr(t, server)

	nodes := []string{"node1", "node2", "node3"}
	// Each node: a cgroup, and an agent observing only it, on its socket.
	cgroups := map[string]*testbed.Cgroup{}
	agents := map[string]*testbed.Daemon{}
	socket := func(n string) string { return filepath.Join(tmp, n+".sock") }
	startNodeAgent := func(n string) *testbed.Daemon {
		return testbed.StartDaemon(t, "agent "+n, bin, "agent", "--node", n, "--cgroup", cgroups[n].Path,
			"--metrics-listen", "", "--socket", socket(n), "--log-level", "debug")
	}
	for _, n := range nodes {
		cgroups[n] = testbed.NewCgroup(t, "relay-"+n)
		agents[n] = startNodeAgent(n)
	}

	relaySocket := filepath.Join(tmp, "relay.sock")
	args := []string{"relay", "--socket", relaySocket, "--log-level", "debug", "--store", "none", "--metrics-listen", ""}
	for _, n := range nodes {
		args = append(args, "--agent", "unix://"+socket(n))
	}
	testbed.StartDaemon(t, "relay", bin, args...)
	conn, err := grpc.NewClient("unix://"+relaySocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)
	connected := map[string]relaypb.NodeState{}
	for _, n := range nodes {
		connected[n] = relaypb.NodeState_NODE_CONNECTED
	}
	// The agents serve once their probes are attached: connected means
	// observing.
	awaitRelay := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(awaitRelay) {
			t.Fatalf("relay not serving: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	awaitNodes(t, client, connected, 90*time.Second)
	stream := followRelay(t, client)

	// A workload runs reqs sequential requests on one HTTP/2 connection
	// from each of the given nodes at once, each request marked with its
	// node, phase and index.
	//
	// The agent learns a connection's cgroup from /proc when it decodes the
	// connection's first record; a client that has exited by then is
	// nobody's (a collector limit). So each client pauses after its first
	// request until the relay delivered it, which also proves the node is
	// observed before the bulk of its traffic.
	all := map[string]bool{}
	type running struct {
		markers map[string]bool
		procs   []*proc
		args    []clientArgs
	}
	startWorkload := func(phase string, reqs int, on ...string) *running {
		t.Helper()
		w := &running{markers: map[string]bool{}}
		for _, n := range on {
			args := clientArgs{Addr: serverAddrStr, H2C: true, PauseAfter: 1}
			for i := range reqs {
				m := fmt.Sprintf("%s-%s-%d", n, phase, i)
				w.markers[m], all[m] = true, true
				args.Reqs = append(args.Reqs, reqSpec{Method: "GET", Path: "/s/200/64/" + m})
			}
			w.procs = append(w.procs, startInCgroup(t, cgroups[n], "http-client", n+" "+phase, args))
			w.args = append(w.args, args)
		}
		for i, p := range w.procs {
			p.expect("PAUSED", 60*time.Second)
			first := w.args[i].Reqs[0].Path
			stream.awaitMarked(t, map[string]bool{first[strings.LastIndexByte(first, '/')+1:]: true})
		}
		for _, p := range w.procs {
			p.send("go")
		}
		return w
	}
	finish := func(w *running) map[string]bool {
		t.Helper()
		for i, p := range w.procs {
			finishClient(t, p, w.args[i])
		}
		return w.markers
	}

	// Phase 1: all three nodes at once.
	p1 := finish(startWorkload("p1", 30, nodes...))
	checkExactlyOnce(t, stream.awaitMarked(t, p1), p1)

	// Phase 2: node2's agent dies while the others keep streaming; the
	// relay keeps serving them and reports node2 unavailable.
	w2 := startWorkload("p2", 200, "node1", "node3")
	agents["node2"].Kill()
	p2 := finish(w2)
	awaitNodes(t, client, map[string]relaypb.NodeState{
		"node1": relaypb.NodeState_NODE_CONNECTED, "node2": relaypb.NodeState_NODE_UNAVAILABLE, "node3": relaypb.NodeState_NODE_CONNECTED,
	}, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumConnectedNodes().GetValue() != 2 || st.GetNumUnavailableNodes().GetValue() != 1 {
		t.Errorf("relay status with node2 down: %d connected, %d unavailable (%v)",
			st.GetNumConnectedNodes().GetValue(), st.GetNumUnavailableNodes().GetValue(), st.GetUnavailableNodes())
	}
	checkExactlyOnce(t, stream.awaitMarked(t, p2), p2)

	// Phase 3: node2's agent is back (same name and address): the relay
	// reconnects, and all three nodes' flows flow again, none twice.
	agents["node2"] = startNodeAgent("node2")
	awaitNodes(t, client, connected, 90*time.Second)
	p3 := finish(startWorkload("p3", 30, nodes...))
	checkExactlyOnce(t, stream.awaitMarked(t, p3), p3)

	// The whole merged stream: every workload event once, in time order.
	final := stream.awaitMarked(t, all)
	checkExactlyOnce(t, final, all)
	events, _ := stream.snapshot()
	checkTimeOrder(t, events)
	lost := 0
	for _, e := range events {
		if e.GetLostEvents() != nil {
			lost++
			t.Logf("lost event: %v", e.GetLostEvents())
		}
	}
	t.Logf("relay delivered %d events (%d workload, %d lost-event notices)", len(events), len(final), lost)
}
