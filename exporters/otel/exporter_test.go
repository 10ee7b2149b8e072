package otel

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/route"
)

// testRouter is the agent's route stage, which names each flow's route
// before it reaches an exporter.
var testRouter, _ = route.New(nil, 0)

func testRoute(p string) string { return testRouter.Route(p) }

func withRoutes(fs map[string]*flow.Flow) map[string]*flow.Flow {
	for _, f := range fs {
		testRouter.Enrich(f)
	}
	return fs
}

func status(c uint32) *uint32 { return &c }

const (
	containerID = "4f1c3a5e9d2b7c8a6e0f1d2c3b4a59687766554433221100ffeeddccbbaa9988"
	// containerService is the service a container is named by (flow.Process.Service).
	containerService = "4f1c3a5e9d2b"
	// One request seen by both ends: the caller's traceparent.
	tidShared    = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerShared = "00f067aa0ba902b7"
	tpShared     = "00-" + tidShared + "-" + callerShared + "-01"
	tidGRPC      = "0af7651916cd43dd8448eb211c80319c"
	callerGRPC   = "b7ad6b7169203331"
	tpGRPC       = "00-" + tidGRPC + "-" + callerGRPC + "-01"
	tidGRPC2     = "11112222333344445555666677778888"
	callerGRPC2  = "0123456789abcdef"
	tpGRPC2      = "00-" + tidGRPC2 + "-" + callerGRPC2 + "-01"
)

var (
	frontend = flow.Process{PID: 101, Comm: "frontend", Exe: "/usr/bin/frontend"}
	backend  = flow.Process{PID: 202, Comm: "backend", Exe: "/srv/backend", ContainerID: containerID,
		Cgroup: "/kubepods/pod1/" + containerID}
	shop = flow.Process{PID: 303, Comm: "shop-srv"} // no exe: named by comm
)

// knownFlows is one of each case the span mapping distinguishes.
func knownFlows(base time.Time) map[string]*flow.Flow {
	cli := netip.MustParseAddrPort("10.0.0.1:40000")
	srv := netip.MustParseAddrPort("10.0.0.2:8080")
	ua := flow.Header{Name: "user-agent", Value: "frontend/1.0"}
	return withRoutes(map[string]*flow.Flow{
		// The same GET seen by the client and by the server.
		"client": {Time: base.Add(123), Latency: 12 * time.Millisecond, TTFB: 4 * time.Millisecond, Node: "node-a",
			Observer: flow.SideClient, Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "backend:8080",
			Path: "/users/42?page=2&sig=s3cr3t", Status: 200, ResponseBytes: 512, RequestHeaders: []flow.Header{ua},
			TraceParent: tpShared, Source: cli, Destination: srv, Process: frontend, ConnID: 7, StreamID: 3},
		"server": {Time: base.Add(time.Millisecond + 456), Latency: 10 * time.Millisecond, TTFB: 3 * time.Millisecond,
			Node: "node-b", Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Scheme: "http",
			Authority: "backend:8080", Path: "/users/42?page=2&sig=s3cr3t", Status: 200, ResponseBytes: 512,
			RequestHeaders: []flow.Header{ua}, TraceParent: tpShared, Source: cli, Destination: srv, Process: backend,
			ConnID: 9, StreamID: 3},
		// No traceparent, HTTP/1.1, a 503, an authority without port.
		"http1-503": {Time: base.Add(2 * time.Millisecond), Latency: 30 * time.Millisecond, Node: "node-b",
			Observer: flow.SideServer, Protocol: "HTTP/1.1", Method: "POST", Authority: "shop", Path: "/orders",
			Status: 503, RequestBytes: 77, ResponseBytes: 19, Source: netip.MustParseAddrPort("10.0.0.3:51000"),
			Destination: netip.MustParseAddrPort("10.0.0.2:8081"), Process: shop, ConnID: 11},
		// gRPC server with a server-fault code.
		"grpc-unavailable": {Time: base.Add(3 * time.Millisecond), Latency: 40 * time.Millisecond, Node: "node-b",
			Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "greeter:50051",
			Path: "/helloworld.Greeter/SayHello", Status: 200, TraceParent: tpGRPC, Source: cli,
			Destination: netip.MustParseAddrPort("10.0.0.2:50051"), Process: backend, ConnID: 12, StreamID: 1,
			GRPC: &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: status(14),
				StatusSource: "trailers", Message: "backend down", RequestMessages: 1, ResponseMessages: 0}},
		// NOT_FOUND: the caller's problem, an error only on the client side.
		"grpc-notfound-server": {Time: base.Add(4*time.Millisecond + 500*time.Microsecond), Latency: 5 * time.Millisecond,
			Node: "node-b", Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Scheme: "http",
			Authority: "greeter:50051", Path: "/helloworld.Greeter/SayHello", Status: 200, TraceParent: tpGRPC2,
			Source: cli, Destination: netip.MustParseAddrPort("10.0.0.2:50051"), Process: backend, ConnID: 13, StreamID: 5,
			GRPC: &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: status(5), StatusSource: "trailers",
				Message: "no such user", RequestMessages: 1}},
		"grpc-notfound-client": {Time: base.Add(4 * time.Millisecond), Latency: 7 * time.Millisecond, Node: "node-a",
			Observer: flow.SideClient, Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "greeter:50051",
			Path: "/helloworld.Greeter/SayHello", Status: 200, TraceParent: tpGRPC2, Source: cli,
			Destination: netip.MustParseAddrPort("10.0.0.2:50051"), Process: frontend, ConnID: 14, StreamID: 5,
			GRPC: &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: status(5), StatusSource: "trailers",
				Message: "no such user", RequestMessages: 1}},
		// A 404 is an error for the client.
		"client-404": {Time: base.Add(5 * time.Millisecond), Latency: 2 * time.Millisecond, Node: "node-a",
			Observer: flow.SideClient, Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "backend:8080",
			Path: "/missing", Status: 404, Source: cli, Destination: srv, Process: frontend, ConnID: 7, StreamID: 5},
		// Reset by the client before any response: no status, an error.
		"reset": {Time: base.Add(6 * time.Millisecond), Latency: 100 * time.Millisecond, Node: "node-b",
			Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "shop:8081",
			Path: "/slow", Source: cli, Destination: netip.MustParseAddrPort("10.0.0.2:8081"), Process: shop, ConnID: 15,
			StreamID: 1, Outcome: flow.OutcomeReset, ResetCode: 8, ResetBy: flow.SideClient},
		// An all-zero trace id is invalid: a new trace, no parent.
		"bad-traceparent": {Time: base.Add(7 * time.Millisecond), Latency: time.Millisecond, Node: "node-b",
			Observer: flow.SideServer, Protocol: "HTTP/2", Method: "BREW", Scheme: "http", Authority: "shop:8081",
			Path: "/pot", Status: 418, TraceParent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
			Source: cli, Destination: netip.MustParseAddrPort("10.0.0.2:8081"), Process: shop, ConnID: 16, StreamID: 3},
	})
}

// TestJaeger sends known flows through both OTLP protocols to a real Jaeger
// v2 and reads spans back from its query API and metrics from its
// Prometheus exporter.
func TestJaeger(t *testing.T) {
	j := startJaeger(t)
	ctx := context.Background()
	newExp := func(endpoint, protocol string) *Exporter {
		e, err := New(ctx, Config{Endpoint: endpoint, Protocol: protocol, Insecure: true, Compression: "gzip",
			BatchTimeout: 50 * time.Millisecond, MetricInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	viaGRPC := newExp(j.OTLPGRPC, ProtocolGRPC)
	viaHTTP := newExp(j.OTLPHTTP, ProtocolHTTP)

	base := time.Now().Add(-time.Minute)
	flows := knownFlows(base)
	// Each protocol carries one side of the shared requests, so joining a
	// trace does not depend on arriving together.
	grpcSide := []string{"client", "grpc-unavailable", "grpc-notfound-client", "client-404"}
	httpSide := []string{"server", "http1-503", "grpc-notfound-server", "reset", "bad-traceparent"}
	for _, k := range grpcSide {
		viaGRPC.Export(flows[k])
	}
	// A policy verdict is received, but no span (nor request metric).
	viaGRPC.Export(&flow.Flow{Kind: flow.KindPolicyVerdict, Time: base, Node: "node-a", Destination: netip.MustParseAddrPort("10.0.0.2:8080"),
		Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDenied, Direction: flow.Egress, Proto: 6, Count: 1}})
	for _, k := range httpSide {
		viaHTTP.Export(flows[k])
	}
	closeExporter(t, viaGRPC)
	closeExporter(t, viaHTTP)
	closeExporter(t, viaHTTP) // again: the first result, no second shutdown
	for name, e := range map[string]*Exporter{"grpc": viaGRPC, "http": viaHTTP} {
		st := e.Stats()
		want := map[string]int{"grpc": len(grpcSide), "http": len(httpSide)}[name]
		received := map[string]int{"grpc": len(grpcSide) + 1, "http": len(httpSide)}[name]
		if st.Received != uint64(received) || st.SpansSent != uint64(want) || st.Dropped != 0 || st.ExportErrors != 0 ||
			st.MetricExportErrors != 0 || st.MetricExports == 0 {
			t.Errorf("%s exporter stats %+v, want %d received and sent, nothing dropped or failed, metrics exported", name, st, want)
		}
	}

	// The shared request: two spans in the caller's trace, both children of
	// the caller's span (the traceparent's parent-id), each with its own id.
	shared := j.trace(t, tidShared, 2)
	if len(shared) != 2 {
		t.Fatalf("trace %s: %d spans, want 2: %+v", tidShared, len(shared), shared)
	}
	byKind := map[int]gotSpan{}
	for _, s := range shared {
		byKind[s.Kind] = s
	}
	client, server := byKind[3], byKind[2]
	for _, s := range []gotSpan{client, server} {
		if s.TraceID != tidShared || s.ParentSpanID != callerShared || s.SpanID == callerShared || len(s.SpanID) != 16 {
			t.Errorf("span %q kind %d: trace %s span %s parent %s; want trace %s, parent %s, a new span id",
				s.Name, s.Kind, s.TraceID, s.SpanID, s.ParentSpanID, tidShared, callerShared)
		}
		if s.Name != "GET /users/{id}" || s.StatusCode != 0 || s.Scope != "github.com/sextant/sextant/exporters/otel" {
			t.Errorf("span kind %d: name %q status %d scope %q; want GET /users/{id}, unset, our scope", s.Kind, s.Name, s.StatusCode, s.Scope)
		}
	}
	if client.SpanID == server.SpanID {
		t.Errorf("client and server spans share span id %s", client.SpanID)
	}
	checkTimes(t, client, flows["client"])
	checkTimes(t, server, flows["server"])
	checkAttrs(t, "client span", client.Attrs, map[string]string{
		"http.request.method": "GET", "http.response.status_code": "200", "url.scheme": "http",
		"url.path": "/users/42", "url.query": "page=2&sig=REDACTED", "url.full": "http://backend:8080/users/42?page=2&sig=REDACTED",
		"url.template": "/users/{id}", "server.address": "backend", "server.port": "8080",
		"client.address": "10.0.0.1", "client.port": "40000", "network.peer.address": "10.0.0.2", "network.peer.port": "8080",
		"network.protocol.name": "http", "network.protocol.version": "2", "user_agent.original": "frontend/1.0",
		"http.request.body.size": "0", "http.response.body.size": "512",
		"sextant.observer": "client", "sextant.outcome": "complete", "sextant.conn_id": "7", "sextant.http2.stream_id": "3",
	}, "http.route", "error.type")
	checkAttrs(t, "server span", server.Attrs, map[string]string{
		"http.request.method": "GET", "http.response.status_code": "200", "url.scheme": "http", "url.path": "/users/42",
		"http.route": "/users/{id}", "server.address": "backend", "server.port": "8080",
		"client.address": "10.0.0.1", "client.port": "40000", "network.peer.address": "10.0.0.1", "network.peer.port": "40000",
		"user_agent.original": "frontend/1.0", "http.response.body.size": "512", "sextant.observer": "server",
	}, "url.full", "url.template", "error.type")
	checkAttrs(t, "client resource", client.Resource, map[string]string{
		"service.name": "frontend", "process.pid": "101", "process.executable.path": "/usr/bin/frontend",
		"process.executable.name": "frontend", "process.command": "frontend", "host.name": "node-a",
	}, "container.id")
	checkAttrs(t, "server resource", server.Resource, map[string]string{
		"service.name": containerService, "container.id": containerID, "process.pid": "202",
		"process.executable.path": "/srv/backend", "process.linux.cgroup": "/kubepods/pod1/" + containerID, "host.name": "node-b",
	})

	// gRPC, server fault: error with grpc-message.
	g := j.trace(t, tidGRPC, 1)
	if len(g) != 1 {
		t.Fatalf("trace %s: %d spans, want 1", tidGRPC, len(g))
	}
	if s := g[0]; s.Name != "helloworld.Greeter/SayHello" || s.Kind != 2 || s.ParentSpanID != callerGRPC ||
		s.StatusCode != 2 || s.StatusMessage != "backend down" {
		t.Errorf("grpc server span %+v: want helloworld.Greeter/SayHello, server, parent %s, error \"backend down\"", s, callerGRPC)
	}
	checkTimes(t, g[0], flows["grpc-unavailable"])
	checkAttrs(t, "grpc span", g[0].Attrs, map[string]string{
		"rpc.system": "grpc", "rpc.service": "helloworld.Greeter", "rpc.method": "SayHello", "rpc.grpc.status_code": "14",
		"error.type": "UNAVAILABLE", "server.address": "greeter", "server.port": "50051",
		"sextant.grpc.status_source": "trailers", "sextant.grpc.request_messages": "1",
	}, "http.route")

	// NOT_FOUND: unset on the server, error on the client, one trace.
	g2 := j.trace(t, tidGRPC2, 2)
	for _, s := range g2 {
		wantCode := map[int]int{2: 0, 3: 2}[s.Kind]
		if s.StatusCode != wantCode || s.ParentSpanID != callerGRPC2 || s.Attrs["rpc.grpc.status_code"] != "5" {
			t.Errorf("NOT_FOUND span kind %d: status %d parent %s code %s; want status %d, parent %s, code 5",
				s.Kind, s.StatusCode, s.ParentSpanID, s.Attrs["rpc.grpc.status_code"], wantCode, callerGRPC2)
		}
	}

	// Flows without a usable traceparent start their own traces.
	from, to := base.Add(-time.Second), base.Add(time.Second)
	shopSpans := j.service(t, "shop-srv", from, to, 3)
	if len(shopSpans) != 3 {
		t.Fatalf("service shop-srv: %d spans, want 3", len(shopSpans))
	}
	byName := map[string]gotSpan{}
	for _, s := range shopSpans {
		byName[s.Name] = s
		if s.ParentSpanID != "" || s.TraceID == "00000000000000000000000000000000" || len(s.TraceID) != 32 {
			t.Errorf("span %q: trace %s parent %q; want a new trace, no parent", s.Name, s.TraceID, s.ParentSpanID)
		}
		if s.Resource["service.name"] != "shop-srv" || s.Resource["process.command"] != "shop-srv" {
			t.Errorf("span %q resource %v: want service.name from comm", s.Name, s.Resource)
		}
	}
	if s, ok := byName["POST /orders"]; !ok || s.StatusCode != 2 {
		t.Errorf("POST /orders: %+v; want an error span", s)
	} else {
		checkTimes(t, s, flows["http1-503"])
		checkAttrs(t, "http1 span", s.Attrs, map[string]string{
			"http.response.status_code": "503", "error.type": "503", "network.protocol.version": "1.1",
			"server.address": "shop", "server.port": "8081", "http.request.body.size": "77", "http.response.body.size": "19",
		}, "url.scheme")
	}
	if s, ok := byName["GET /slow"]; !ok || s.StatusCode != 2 {
		t.Errorf("GET /slow: %+v; want an error span", s)
	} else {
		checkAttrs(t, "reset span", s.Attrs, map[string]string{
			"error.type": "reset", "sextant.outcome": "reset", "sextant.http2.reset_code": "8", "sextant.http2.reset_by": "client",
		}, "http.response.status_code")
	}
	if s, ok := byName["HTTP /pot"]; !ok || s.StatusCode != 0 {
		t.Errorf("BREW /pot: %+v; want span \"HTTP /pot\" (unknown method), 418 not an error for a server", s)
	} else {
		checkAttrs(t, "BREW span", s.Attrs, map[string]string{"http.request.method": "_OTHER", "http.request.method_original": "BREW"})
	}
	frontSpans := j.service(t, "frontend", from, to, 3)
	for _, s := range frontSpans {
		if s.Name == "GET /missing" && (s.StatusCode != 2 || s.Attrs["error.type"] != "404") {
			t.Errorf("client 404 span: status %d error.type %q; want error, 404", s.StatusCode, s.Attrs["error.type"])
		}
	}

	// Metrics: one observation per flow in each service's histograms.
	m := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if got := j.metric(t, name, labels); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
	srvLabels := map[string]string{"service_name": containerService, "http_request_method": "GET", "http_route": "/users/{id}",
		"http_response_status_code": "200", "server_address": "backend", "server_port": "8080", "network_protocol_version": "2"}
	m("http_server_request_duration_seconds_count", srvLabels, 1)
	m("http_server_request_duration_seconds_sum", srvLabels, 0.010)
	m("http_server_request_duration_seconds_bucket", merge(srvLabels, "le", "0.005"), 0)
	m("http_server_request_duration_seconds_bucket", merge(srvLabels, "le", "0.01"), 1)
	m("http_server_response_body_size_bytes_sum", srvLabels, 512)
	cliLabels := map[string]string{"service_name": "frontend", "http_request_method": "GET", "http_route": "/users/{id}", "http_response_status_code": "200"}
	m("http_client_request_duration_seconds_count", cliLabels, 1)
	m("http_client_request_duration_seconds_sum", cliLabels, 0.012)
	m("http_client_request_duration_seconds_count", map[string]string{"service_name": "frontend", "http_response_status_code": "404", "error_type": "404"}, 1)
	m("http_server_request_duration_seconds_count", map[string]string{"service_name": "shop-srv", "http_request_method": "POST", "error_type": "503", "network_protocol_version": "1.1"}, 1)
	m("rpc_server_call_duration_seconds_count", map[string]string{"service_name": containerService, "rpc_system": "grpc",
		"rpc_service": "helloworld.Greeter", "rpc_method": "SayHello", "rpc_grpc_status_code": "14", "error_type": "UNAVAILABLE"}, 1)
	m("rpc_server_call_duration_seconds_sum", map[string]string{"service_name": containerService, "rpc_grpc_status_code": "14"}, 0.040)
	m("rpc_client_call_duration_seconds_count", map[string]string{"service_name": "frontend", "rpc_grpc_status_code": "5", "error_type": "NOT_FOUND"}, 1)
	if _, ok := scrape(j.Metrics, "http_server_request_duration_seconds_count", map[string]string{"rpc_system": "grpc"}); ok {
		t.Error("gRPC flows recorded in the HTTP histograms")
	}
}

func merge(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// checkTimes: the span covers the exchange exactly, to the nanosecond, and
// marks the response headers.
func checkTimes(t *testing.T, s gotSpan, f *flow.Flow) {
	t.Helper()
	if s.Start != f.Time.UnixNano() || s.End != f.Time.Add(f.Latency).UnixNano() {
		t.Errorf("span %q: [%d, %d], want [%d, %d]", s.Name, s.Start, s.End, f.Time.UnixNano(), f.Time.Add(f.Latency).UnixNano())
	}
	if f.TTFB > 0 && s.Events[responseHeadersEvent] != f.Time.Add(f.TTFB).UnixNano() {
		t.Errorf("span %q: response headers event at %d, want %d", s.Name, s.Events[responseHeadersEvent], f.Time.Add(f.TTFB).UnixNano())
	}
}

func checkAttrs(t *testing.T, what string, got, want map[string]string, absent ...string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
	for _, k := range absent {
		if v, ok := got[k]; ok {
			t.Errorf("%s: %s = %q, want absent", what, k, v)
		}
	}
}

// TestUnreachableBackend: with nothing listening, Export never blocks, the
// queue stays bounded and every flow it could not hold is counted, failed
// exports are counted, and Close returns when its context ends.
func TestUnreachableBackend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	e, err := New(context.Background(), Config{Endpoint: dead, Insecure: true, Traces: true, MaxQueueSize: 4,
		MaxExportBatchSize: 1, BatchTimeout: time.Hour, ExportTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f := knownFlows(time.Now())["server"]
	e.Export(f) // the worker takes it and blocks exporting it (retrying until ExportTimeout)
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Queued != 0 {
		if time.Now().After(deadline) {
			t.Fatal("worker did not take the first flow")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // into ExportSpans
	for range 100 {
		e.Export(f)
	}
	st := e.Stats()
	if st.Received != 101 || st.Queued != 4 || st.Dropped != 96 {
		t.Errorf("while the backend is unreachable: %+v; want 101 received, 4 queued, 96 dropped", st)
	}
	waitSent(t, e, 1)
	if st := e.Stats(); st.ExportErrors == 0 || st.SpansFailed == 0 || st.LastError == "" {
		t.Errorf("after the first export: %+v; want a counted failure and its error", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.Close(ctx); err == nil {
		t.Error("Close with 4 unsendable spans queued and a 500ms context returned nil")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v, want about its context's 500ms", d)
	}
	e.Export(f)
	if st := e.Stats(); st.Dropped < 97 {
		t.Errorf("Export after Close: dropped %d, want it counted", st.Dropped)
	}
}
