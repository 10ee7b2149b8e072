package observer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/ring"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// base is the time of flow 0; flow i starts i seconds later.
var base = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

// flowAt is GET /item/i at base+i s, answered 100 ms later with 200, or
// 500 for every fifth; every tenth flow from 7 on was reset before any
// response (a REQUEST event alone).
func flowAt(i int) *flow.Flow {
	f := &flow.Flow{
		Time: base.Add(time.Duration(i) * time.Second), Latency: 100 * time.Millisecond, Node: "node-a",
		Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "svc",
		Path: fmt.Sprintf("/item/%d", i), Status: 200,
	}
	switch {
	case i%10 == 7:
		f.Status, f.Latency, f.Outcome = 0, 0, flow.OutcomeReset
	case i%5 == 0:
		f.Status = 500
	}
	return f
}

// filled is a ring of capacity flows fed flows 0..n-1 (the last capacity
// of them are held), and its feed.
func filled(n, capacity int) (*ring.Ring[Entry], *Feed) {
	r := NewRing(capacity)
	feed := NewFeed(r, "node-a")
	for i := range n {
		feed.Export(flowAt(i))
	}
	return r, feed
}

// serve starts a server of opts on a bufconn listener and returns a client
// connection to it, closed when the test ends.
func serve(t *testing.T, opts Options) (*Server, *grpc.ClientConn) {
	t.Helper()
	if opts.Log == nil {
		opts.Log = quiet
	}
	srv := New(opts)
	g := grpc.NewServer()
	srv.Register(g)
	ln := bufconn.Listen(1 << 20)
	go g.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown()
		g.Stop()
	})
	return srv, conn
}

// label names an answer: "req 3" / "resp 3" for the events of flow 3,
// "lost SOURCE n" for a lost event.
func label(resp *observerpb.GetFlowsResponse) string {
	if l := resp.GetLostEvents(); l != nil {
		return fmt.Sprintf("lost %s %d", l.GetSource(), l.GetNumEventsLost())
	}
	f := resp.GetFlow()
	kind := "req"
	if f.GetL7().GetType() == flowpb.L7FlowType_RESPONSE {
		kind = "resp"
	}
	url := f.GetL7().GetHttp().GetUrl()
	return kind + " " + url[strings.LastIndexByte(url, '/')+1:]
}

// collect runs GetFlows to its end and returns the labels of its answers.
func collect(t *testing.T, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest) []string {
	t.Helper()
	resps := collectResponses(t, conn, req)
	out := make([]string, len(resps))
	for i, r := range resps {
		out[i] = label(r)
	}
	return out
}

func collectResponses(t *testing.T, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest) []*observerpb.GetFlowsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*observerpb.GetFlowsResponse
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("GetFlows(%v): %v", req, err)
		}
		out = append(out, resp)
	}
}

// events lists the labels of the events of flows from..to, in ring order.
func events(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("req %d", i))
		if i%10 != 7 {
			out = append(out, fmt.Sprintf("resp %d", i))
		}
	}
	return out
}

func labels(ls ...string) []string { return ls }

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// The ring keeps flows; each read builds the Hubble events with Hubble's
// semantics: a flow is a REQUEST and (when answered) a RESPONSE event,
// Number counts events, filters and since/until apply per event.
func TestGetFlowsHistory(t *testing.T) {
	r, _ := filled(30, 10) // holds flows 20..29: 19 events (27 has no response)
	_, conn := serve(t, Options{Ring: r})
	at := func(i int) *timestamppb.Timestamp { return timestamppb.New(base.Add(time.Duration(i) * time.Second)) }
	var uuidOf23 string
	for _, resp := range collectResponses(t, conn, &observerpb.GetFlowsRequest{}) {
		if label(resp) == "req 23" {
			uuidOf23 = resp.GetFlow().GetUuid()
		}
	}
	for _, tc := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want []string
	}{
		{"last 3 events", &observerpb.GetFlowsRequest{Number: 3}, labels("resp 28", "req 29", "resp 29")},
		{"number 0 is everything held", &observerpb.GetFlowsRequest{}, events(20, 29)},
		{"more than held", &observerpb.GetFlowsRequest{Number: 100}, events(20, 29)},
		{"first 3", &observerpb.GetFlowsRequest{First: true, Number: 3}, labels("req 20", "resp 20", "req 21")},
		{"since, per event", &observerpb.GetFlowsRequest{Since: at(25)}, events(25, 29)},
		{"since limits by number from the oldest", &observerpb.GetFlowsRequest{Since: at(25), Number: 3}, labels("req 25", "resp 25", "req 26")},
		{"until: a response after it is left out", &observerpb.GetFlowsRequest{Until: at(22)}, append(events(20, 21), "req 22")},
		{"since and until", &observerpb.GetFlowsRequest{Since: at(24), Until: at(26)}, labels("req 24", "resp 24", "req 25", "resp 25", "req 26")},
		{"last 2 before until", &observerpb.GetFlowsRequest{Until: at(26), Number: 2}, labels("resp 25", "req 26")},
		{"whitelist status: responses", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}}, labels("resp 20", "resp 25")},
		{"whitelist counts toward number", &observerpb.GetFlowsRequest{Number: 1, Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}}, labels("resp 25")},
		{"whitelist ANDs fields of one filter", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}, HttpPath: []string{"^/item/2"}}}}, labels("resp 20", "resp 25")},
		{"whitelist ORs filters", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpPath: []string{"^/item/21$"}}, {HttpPath: []string{"^/item/27$"}}}}, labels("req 21", "resp 21", "req 27")},
		{"blacklist", &observerpb.GetFlowsRequest{Number: 3, Blacklist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"200"}}}}, labels("req 27", "req 28", "req 29")},
		{"replies only", &observerpb.GetFlowsRequest{Number: 2, Whitelist: []*flowpb.FlowFilter{{Reply: []bool{true}}}}, labels("resp 28", "resp 29")},
		{"one event by its UUID", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{Uuid: []string{uuidOf23}}}}, labels("req 23")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := collect(t, conn, tc.req); !equal(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// The same event read twice, by any client, has the same UUID; the two
// events of a flow differ.
func TestEventUUIDsAreStable(t *testing.T) {
	r, _ := filled(4, 8)
	_, conn := serve(t, Options{Ring: r})
	first := collectResponses(t, conn, &observerpb.GetFlowsRequest{})
	again := collectResponses(t, conn, &observerpb.GetFlowsRequest{})
	seen := map[string]string{}
	for i := range first {
		id := first[i].GetFlow().GetUuid()
		if id == "" || id != again[i].GetFlow().GetUuid() {
			t.Fatalf("event %d: UUID %q then %q", i, id, again[i].GetFlow().GetUuid())
		}
		if other, dup := seen[id]; dup {
			t.Fatalf("%s and %s share UUID %s", other, label(first[i]), id)
		}
		seen[id] = label(first[i])
	}
}

func TestGetFlowsInvalidArguments(t *testing.T) {
	r, _ := filled(3, 8)
	_, conn := serve(t, Options{Ring: r})
	for _, req := range []*observerpb.GetFlowsRequest{
		{First: true, Follow: true},
		{Whitelist: []*flowpb.FlowFilter{{HttpPath: []string{"("}}}},
		{Blacklist: []*flowpb.FlowFilter{{HttpPath: []string{"("}}}},
		{Since: &timestamppb.Timestamp{Nanos: -1}},
		{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"no_such_field"}}},
	} {
		stream, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetFlows(%v): %v, want InvalidArgument", req, err)
		}
	}
}

// Lost events in the ring reach every reader, whatever the filters, and do
// not count toward Number.
func TestGetFlowsLostEventsInRing(t *testing.T) {
	r, feed := filled(3, 16)
	feed.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 7)
	feed.Export(flowAt(3))
	_, conn := serve(t, Options{Ring: r})
	if got := collect(t, conn, &observerpb.GetFlowsRequest{Number: 2, Blacklist: []*flowpb.FlowFilter{{HttpPath: []string{"/item/"}}}}); !equal(got, labels("lost PERF_EVENT_RING_BUFFER 7")) {
		t.Fatalf("got %v; want the lost event alone", got)
	}
	if got := collect(t, conn, &observerpb.GetFlowsRequest{Number: 3}); !equal(got, labels("resp 2", "lost PERF_EVENT_RING_BUFFER 7", "req 3", "resp 3")) {
		t.Fatalf("got %v; want the last 3 events and the lost event among them", got)
	}
}

func TestGetFieldMask(t *testing.T) {
	r, _ := filled(2, 8)
	_, conn := serve(t, Options{Ring: r})
	resps := collectResponses(t, conn, &observerpb.GetFlowsRequest{
		Number: 1, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"time", "l7.http.url"}},
	})
	if len(resps) != 1 {
		t.Fatalf("%d answers, want 1", len(resps))
	}
	f := resps[0].GetFlow()
	if f.GetL7().GetHttp().GetUrl() != "http://svc/item/1" || f.GetTime() == nil {
		t.Fatalf("masked flow lacks the fields asked for: %v", f)
	}
	if f.GetSummary() != "" || f.GetNodeName() != "" || f.GetL7().GetHttp().GetCode() != 0 || f.GetVerdict() != 0 || f.GetUuid() != "" {
		t.Fatalf("masked flow has fields not asked for: %v", f)
	}
	if resps[0].GetNodeName() != "node-a" {
		t.Fatalf("response node name = %q, want node-a", resps[0].GetNodeName())
	}
}

// waitSubscribers waits until the ring has n followers.
func waitSubscribers(t *testing.T, r *ring.Ring[Entry], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Subscribers < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d followers after 10s, want %d", r.Stats().Subscribers, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recv(t *testing.T, stream observerpb.Observer_GetFlowsClient, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, label(resp))
	}
	return got
}

func TestGetFlowsFollow(t *testing.T) {
	r, feed := filled(5, 64)
	_, conn := serve(t, Options{Ring: r})
	client := observerpb.NewObserverClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow := func(req *observerpb.GetFlowsRequest) observerpb.Observer_GetFlowsClient {
		req.Follow = true
		s, err := client.GetFlows(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Follow alone starts now: no history.
	fromNow := follow(&observerpb.GetFlowsRequest{})
	// Follow with Number: that many events of history first, then new ones.
	withHistory := follow(&observerpb.GetFlowsRequest{Number: 2})
	errors500 := follow(&observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}})
	// Until: ends at the first flow event after it.
	untilStream := follow(&observerpb.GetFlowsRequest{Until: timestamppb.New(base.Add(6 * time.Second))})
	waitSubscribers(t, r, 4)
	for i := 5; i < 12; i++ {
		feed.Export(flowAt(i))
	}
	if got := recv(t, fromNow, 3); !equal(got, labels("req 5", "resp 5", "req 6")) {
		t.Errorf("follow: %v", got)
	}
	if got := recv(t, withHistory, 4); !equal(got, labels("req 4", "resp 4", "req 5", "resp 5")) {
		t.Errorf("follow with number 2: %v", got)
	}
	if got := recv(t, errors500, 2); !equal(got, labels("resp 5", "resp 10")) {
		t.Errorf("follow with filter: %v", got)
	}
	got := recv(t, untilStream, 3)
	if _, err := untilStream.Recv(); !errors.Is(err, io.EOF) || !equal(got, labels("req 5", "resp 5", "req 6")) {
		t.Errorf("follow with until: %v then %v, want up to req 6 then EOF", got, err)
	}
	// One flow at a time: each read lands in the same slot of the
	// follower's buffer, every event must still be its own flow's.
	if got := recv(t, fromNow, 10); !equal(got, events(6, 11)[1:]) {
		t.Errorf("follow: %v", got)
	}
	for i := 12; i < 16; i++ {
		feed.Export(flowAt(i))
		if got := recv(t, fromNow, 2); !equal(got, events(i, i)) {
			t.Errorf("follow, flow %d alone: %v", i, got)
		}
	}
}

// A follower that cannot keep up loses events, and is told how many (in
// events: two per answered flow): what it received plus what it was told
// it lost is exactly what was written.
func TestGetFlowsFollowerLostEvents(t *testing.T) {
	r := NewRing(16)
	feed := NewFeed(r, "node-a")
	_, conn := serve(t, Options{Ring: r, Node: "node-a"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 1)
	const flows = 20000
	total := uint64(0)
	for i := range flows {
		f := flowAt(i)
		feed.Export(f)
		total += Entry{Flow: f}.Events()
	}
	var received, lostCount uint64
	last := -1
	for received+lostCount < total {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("received %d, lost %d of %d: %v", received, lostCount, total, err)
		}
		if l := resp.GetLostEvents(); l != nil {
			if l.GetSource() != flowpb.LostEventSource_HUBBLE_RING_BUFFER || resp.GetNodeName() != "node-a" {
				t.Fatalf("lost event %v from %q, want source HUBBLE_RING_BUFFER from node-a", l, resp.GetNodeName())
			}
			lostCount += l.GetNumEventsLost()
			continue
		}
		var i int
		fmt.Sscanf(resp.GetFlow().GetL7().GetHttp().GetUrl(), "http://svc/item/%d", &i)
		if i < last {
			t.Fatalf("item %d after %d: out of order", i, last)
		}
		last = i
		received++
	}
	if received+lostCount != total || lostCount == 0 {
		t.Fatalf("received %d + lost %d, want %d with some loss", received, lostCount, total)
	}
}

// Shutdown ends follow streams after they sent what was written before.
func TestShutdownDrainsFollowers(t *testing.T) {
	r := NewRing(16)
	feed := NewFeed(r, "node-a")
	srv, conn := serve(t, Options{Ring: r})
	stream, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 1)
	feed.Export(flowAt(1))
	feed.Export(flowAt(2))
	srv.Shutdown()
	got := recv(t, stream, 4)
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) || !equal(got, events(1, 2)) {
		t.Fatalf("%v then %v; want the events of flows 1, 2 then EOF", got, err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: HealthService})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after shutdown: %v %v, want NOT_SERVING", h, err)
	}
}

// ServerStatus counts events, as Hubble does: two per answered flow.
func TestStatusNodesHealth(t *testing.T) {
	r := NewRing(100)
	feed := NewFeed(r, "node-a")
	now := time.Now()
	for i := range 30 { // 30 flows within the last minute, all answered
		f := flowAt(1)
		f.Time = now.Add(-time.Duration(i+1) * time.Second)
		feed.Export(f)
	}
	feed.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 3)
	_, conn := serve(t, Options{
		Ring: r,
		Nodes: func() []*observerpb.Node {
			return []*observerpb.Node{{Name: "node-a"}}
		},
	})
	client := observerpb.NewObserverClient(conn)
	st, err := client.ServerStatus(context.Background(), &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumFlows() != 61 || st.GetMaxFlows() != 200 || st.GetSeenFlows() != 61 || st.GetUptimeNs() == 0 || st.GetVersion() == "" {
		t.Fatalf("status %v", st)
	}
	if feed.Seen() != 60 {
		t.Fatalf("feed saw %d flow events, want 60", feed.Seen())
	}
	// 60 flow events within the last minute.
	if rate := st.GetFlowsRate(); rate < 0.99 || rate > 1.01 {
		t.Fatalf("flows rate %v, want 1/s", rate)
	}
	nodes, err := client.GetNodes(context.Background(), &observerpb.GetNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetName() != "node-a" {
		t.Fatalf("GetNodes: %v %v", nodes, err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: HealthService})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v, want SERVING", h, err)
	}
}

func TestFlowRateWrappedRing(t *testing.T) {
	now := time.Now()
	var entries []Entry
	for i := 10; i >= 1; i-- { // 10 unanswered flows over the last 10 s
		entries = append(entries, Entry{Flow: &flow.Flow{Time: now.Add(-time.Duration(i) * time.Second)}})
	}
	if got := flowRate(expand(entries), true, now); got < 0.99 || got > 1.01 {
		t.Fatalf("wrapped ring: rate %v, want 1/s over the 10 s it covers", got)
	}
	if got := flowRate(expand(entries), false, now); got < 0.16 || got > 0.17 {
		t.Fatalf("unwrapped ring: rate %v, want 10/60", got)
	}
}

func TestLostNoticeCPU(t *testing.T) {
	r := lostResponse(&Lost{Time: base, Node: "n", Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, Count: 3, CPU: 1})
	l := r.GetLostEvents()
	if l.GetSource() != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER || l.GetNumEventsLost() != 3 || l.GetCpu().GetValue() != 1 ||
		!r.GetTime().AsTime().Equal(base) || r.GetNodeName() != "n" {
		t.Errorf("lost event = %v", r)
	}
	if l := lostResponse(&Lost{Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, Count: 1, CPU: -1}).GetLostEvents(); l.GetCpu() != nil {
		t.Errorf("cpu -1 must be unset: %v", l)
	}
}
