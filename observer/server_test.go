package observer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/observer/ring"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// base is the time of event 0; event i happens i seconds later.
var base = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

// event i is a RESPONSE to GET /item/i with status 200, or 500 for every
// fifth event.
func event(i int) *observerpb.GetFlowsResponse {
	code := uint32(200)
	if i%5 == 0 {
		code = 500
	}
	ts := timestamppb.New(base.Add(time.Duration(i) * time.Second))
	f := &flowpb.Flow{
		Time:     ts,
		NodeName: "node-a",
		Type:     flowpb.FlowType_L7,
		Verdict:  flowpb.Verdict_FORWARDED,
		IsReply:  wrapperspb.Bool(true),
		L7: &flowpb.Layer7{
			Type: flowpb.L7FlowType_RESPONSE,
			Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: code, Method: "GET", Url: fmt.Sprintf("http://svc/item/%d", i), Protocol: "HTTP/2",
			}},
		},
		Summary: fmt.Sprintf("HTTP/2 %d 1ms (GET http://svc/item/%d)", code, i),
	}
	return &observerpb.GetFlowsResponse{Time: ts, NodeName: "node-a", ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}}
}

func lost(src flowpb.LostEventSource, n uint64) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		Time: timestamppb.Now(), NodeName: "node-a",
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{Source: src, NumEventsLost: n}},
	}
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

func filled(n, capacity int) *ring.Ring[*observerpb.GetFlowsResponse] {
	r := ring.New[*observerpb.GetFlowsResponse](capacity)
	for i := range n {
		r.Write(event(i))
	}
	return r
}

// collect runs GetFlows to its end and returns the URLs of the flows and
// the lost events.
func collect(t *testing.T, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest) ([]string, []*flowpb.LostEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	var lostEvents []*flowpb.LostEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return urls, lostEvents
		}
		if err != nil {
			t.Fatalf("GetFlows(%v): %v", req, err)
		}
		if l := resp.GetLostEvents(); l != nil {
			lostEvents = append(lostEvents, l)
			continue
		}
		urls = append(urls, resp.GetFlow().GetL7().GetHttp().GetUrl())
	}
}

func items(is ...int) []string {
	out := make([]string, len(is))
	for k, i := range is {
		out[k] = fmt.Sprintf("http://svc/item/%d", i)
	}
	return out
}

func span(from, to int) []string {
	var is []int
	for i := from; i <= to; i++ {
		is = append(is, i)
	}
	return items(is...)
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestGetFlowsHistory(t *testing.T) {
	_, conn := serve(t, Options{Ring: filled(30, 20)}) // holds 10..29
	at := func(i int) *timestamppb.Timestamp { return timestamppb.New(base.Add(time.Duration(i) * time.Second)) }
	for _, tc := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want []string
	}{
		{"last 3", &observerpb.GetFlowsRequest{Number: 3}, span(27, 29)},
		{"number 0 is everything held", &observerpb.GetFlowsRequest{}, span(10, 29)},
		{"more than held", &observerpb.GetFlowsRequest{Number: 100}, span(10, 29)},
		{"first 2", &observerpb.GetFlowsRequest{First: true, Number: 2}, span(10, 11)},
		{"since", &observerpb.GetFlowsRequest{Since: at(25)}, span(25, 29)},
		{"since limits by number from the oldest", &observerpb.GetFlowsRequest{Since: at(20), Number: 2}, span(20, 21)},
		{"until", &observerpb.GetFlowsRequest{Until: at(12)}, span(10, 12)},
		{"since and until", &observerpb.GetFlowsRequest{Since: at(14), Until: at(16)}, span(14, 16)},
		{"last 2 before until", &observerpb.GetFlowsRequest{Until: at(16), Number: 2}, span(15, 16)},
		{"whitelist status", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}}, items(10, 15, 20, 25)},
		{"whitelist counts toward number", &observerpb.GetFlowsRequest{Number: 2, Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}}, items(20, 25)},
		{"whitelist ANDs fields of one filter", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}, HttpPath: []string{"^/item/2"}}}}, items(20, 25)},
		{"whitelist ORs filters", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpPath: []string{"^/item/11$"}}, {HttpPath: []string{"^/item/28$"}}}}, items(11, 28)},
		{"blacklist", &observerpb.GetFlowsRequest{Number: 3, Blacklist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}}, items(27, 28, 29)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := collect(t, conn, tc.req)
			if !equal(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestGetFlowsInvalidArguments(t *testing.T) {
	_, conn := serve(t, Options{Ring: filled(3, 8)})
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
	r := filled(3, 16)
	r.Write(lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 7))
	r.Write(event(3))
	_, conn := serve(t, Options{Ring: r})
	urls, lostEvents := collect(t, conn, &observerpb.GetFlowsRequest{Number: 2, Blacklist: []*flowpb.FlowFilter{{HttpPath: []string{"/item/"}}}})
	if len(urls) != 0 || len(lostEvents) != 1 || lostEvents[0].GetNumEventsLost() != 7 ||
		lostEvents[0].GetSource() != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
		t.Fatalf("flows %v, lost %v; want no flow and the lost event", urls, lostEvents)
	}
	urls, lostEvents = collect(t, conn, &observerpb.GetFlowsRequest{Number: 2})
	if !equal(urls, items(2, 3)) || len(lostEvents) != 1 {
		t.Fatalf("flows %v, lost %v; want items 2, 3 and the lost event between them", urls, lostEvents)
	}
}

func TestGetFieldMask(t *testing.T) {
	_, conn := serve(t, Options{Ring: filled(2, 8)})
	stream, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), &observerpb.GetFlowsRequest{
		Number: 1, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"time", "l7.http.url"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	f := resp.GetFlow()
	if f.GetL7().GetHttp().GetUrl() != "http://svc/item/1" || f.GetTime() == nil {
		t.Fatalf("masked flow lacks the fields asked for: %v", f)
	}
	if f.GetSummary() != "" || f.GetNodeName() != "" || f.GetL7().GetHttp().GetCode() != 0 || f.GetVerdict() != 0 {
		t.Fatalf("masked flow has fields not asked for: %v", f)
	}
	if resp.GetNodeName() != "node-a" {
		t.Fatalf("response node name = %q, want node-a", resp.GetNodeName())
	}
}

// waitSubscribers waits until the ring has n followers.
func waitSubscribers(t *testing.T, r *ring.Ring[*observerpb.GetFlowsResponse], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Subscribers < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d followers after 10s, want %d", r.Stats().Subscribers, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recvURLs(t *testing.T, stream observerpb.Observer_GetFlowsClient, n int) []string {
	t.Helper()
	var urls []string
	for len(urls) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", urls, err)
		}
		if f := resp.GetFlow(); f != nil {
			urls = append(urls, f.GetL7().GetHttp().GetUrl())
		}
	}
	return urls
}

func TestGetFlowsFollow(t *testing.T) {
	r := filled(5, 64)
	_, conn := serve(t, Options{Ring: r})
	client := observerpb.NewObserverClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Follow alone starts now: no history.
	fromNow, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	// Follow with Number: that much history first, then new flows.
	withHistory, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Follow with a filter.
	errors500, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"500"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Follow with until: ends at the first flow after it.
	untilStream, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, Until: timestamppb.New(base.Add(6 * time.Second))})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 4)
	for i := 5; i < 12; i++ {
		r.Write(event(i))
	}
	if got := recvURLs(t, fromNow, 3); !equal(got, span(5, 7)) {
		t.Errorf("follow: %v, want %v", got, span(5, 7))
	}
	if got := recvURLs(t, withHistory, 4); !equal(got, span(3, 6)) {
		t.Errorf("follow with number 2: %v, want %v", got, span(3, 6))
	}
	if got := recvURLs(t, errors500, 2); !equal(got, items(5, 10)) {
		t.Errorf("follow with filter: %v, want %v", got, items(5, 10))
	}
	got := recvURLs(t, untilStream, 2)
	if _, err := untilStream.Recv(); !errors.Is(err, io.EOF) || !equal(got, span(5, 6)) {
		t.Errorf("follow with until: %v then %v, want %v then EOF", got, err, span(5, 6))
	}
}

// A follower that cannot keep up loses events, and is told how many: what
// it received plus what it was told it lost is exactly what was written.
func TestGetFlowsFollowerLostEvents(t *testing.T) {
	r := ring.New[*observerpb.GetFlowsResponse](16)
	_, conn := serve(t, Options{Ring: r, FollowBuffer: 1, Node: "node-a"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 1)
	const total = 20000
	for i := range total {
		r.Write(event(i))
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
		if i <= last {
			t.Fatalf("item %d after %d: out of order", i, last)
		}
		last = i
		received++
	}
	if received+lostCount != total || lostCount == 0 {
		t.Fatalf("received %d + lost %d, want %d with some loss", received, lostCount, total)
	}
}

// Shutdown ends follow streams after they sent what was queued for them.
func TestShutdownDrainsFollowers(t *testing.T) {
	r := ring.New[*observerpb.GetFlowsResponse](16)
	srv, conn := serve(t, Options{Ring: r})
	stream, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 1)
	r.Write(event(1))
	r.Write(event(2))
	srv.Shutdown()
	got := recvURLs(t, stream, 2)
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) || !equal(got, items(1, 2)) {
		t.Fatalf("%v then %v; want items 1, 2 then EOF", got, err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: HealthService})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after shutdown: %v %v, want NOT_SERVING", h, err)
	}
}

func TestStatusNodesHealth(t *testing.T) {
	r := ring.New[*observerpb.GetFlowsResponse](100)
	now := time.Now()
	for i := range 30 {
		e := event(i)
		e.Time = timestamppb.New(now.Add(-time.Duration(i) * time.Second))
		e.GetFlow().Time = e.Time
		r.Write(e)
	}
	r.Write(lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 3))
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
	if st.GetNumFlows() != 31 || st.GetMaxFlows() != 100 || st.GetSeenFlows() != 31 || st.GetUptimeNs() == 0 || st.GetVersion() == "" {
		t.Fatalf("status %v", st)
	}
	// 30 flows within the last minute.
	if rate := st.GetFlowsRate(); rate < 0.49 || rate > 0.51 {
		t.Fatalf("flows rate %v, want 0.5/s", rate)
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
	var events []*observerpb.GetFlowsResponse
	for i := 10; i >= 1; i-- { // 10 flows over the last 10 s
		e := event(i)
		e.Time = timestamppb.New(now.Add(-time.Duration(i) * time.Second))
		events = append(events, e)
	}
	if got := flowRate(events, true, now); got < 0.99 || got > 1.01 {
		t.Fatalf("wrapped ring: rate %v, want 1/s over the 10 s it covers", got)
	}
	if got := flowRate(events, false, now); got < 0.16 || got > 0.17 {
		t.Fatalf("unwrapped ring: rate %v, want 10/60", got)
	}
}
