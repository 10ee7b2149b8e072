package prometheus

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/route"
)

// testExporter names each flow's route first, as the agent's route stage
// does before any exporter sees a flow.
type testExporter struct {
	*Exporter
	routes *route.Router
}

func (e testExporter) Export(f *flow.Flow) {
	e.routes.Enrich(f)
	e.Exporter.Export(f)
}

func newTestExporter(t *testing.T, cfg Config, routes ...string) (testExporter, *prom.Registry) {
	t.Helper()
	reg := prom.NewRegistry()
	cfg.Registerer = reg
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.New(routes, 0)
	if err != nil {
		t.Fatal(err)
	}
	return testExporter{e, r}, reg
}

func closeExporter(t *testing.T, e testExporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// series returns the metric of family name whose labels include want.
func series(t *testing.T, reg *prom.Registry, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.Metric {
			have := map[string]string{}
			for _, lp := range m.Label {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func sampleCount(ms []*dto.Metric) uint64 {
	var n uint64
	for _, m := range ms {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func labelsOf(m *dto.Metric) map[string]string {
	have := map[string]string{}
	for _, lp := range m.Label {
		have[lp.GetName()] = lp.GetValue()
	}
	return have
}

var (
	clientAddr = netip.MustParseAddrPort("10.0.0.1:40000")
	serverAddr = netip.MustParseAddrPort("10.0.0.2:8080")
)

func httpFlow(side flow.Side, path string, status uint32, latency time.Duration) *flow.Flow {
	f := &flow.Flow{
		Observer: side, Protocol: "HTTP/2", Method: "GET", Scheme: "http",
		Authority: "api.example:8080", Path: path, Status: status, Latency: latency,
		RequestBytes: 10, ResponseBytes: 300,
		Source: clientAddr, Destination: serverAddr,
		Outcome: flow.OutcomeComplete,
	}
	if side == flow.SideServer {
		f.Process = flow.Process{PID: 2, Exe: "/usr/bin/users-api", Comm: "users-api"}
	} else {
		f.Process = flow.Process{PID: 1, Comm: "frontend", ContainerID: "0123456789abcdef0123456789abcdef"}
	}
	return f
}

func TestHTTPMetrics(t *testing.T) {
	e, reg := newTestExporter(t, Config{}, "/api/users/{name}")
	// The server side is observed first, so the client flows that follow
	// know their peer.
	e.Export(httpFlow(flow.SideServer, "/api/users/alice?x=1", 200, 20*time.Millisecond))
	e.Export(httpFlow(flow.SideServer, "/api/users/bob", 200, 30*time.Millisecond))
	e.Export(httpFlow(flow.SideServer, "/orders/12", 503, 2*time.Second))
	e.Export(httpFlow(flow.SideClient, "/orders/13", 404, time.Second))
	odd := httpFlow(flow.SideServer, "/x", 0, time.Millisecond)
	odd.Method, odd.Outcome = "BREW", flow.OutcomeReset
	e.Export(odd)
	closeExporter(t, e)

	users := series(t, reg, "http_server_request_duration_seconds", map[string]string{"http_route": "/api/users/{name}"})
	if len(users) != 1 || sampleCount(users) != 2 {
		t.Fatalf("/api/users/{name}: %d series, %d samples, want 1 series of 2", len(users), sampleCount(users))
	}
	want := map[string]string{
		"observer": "server", "service": "users-api", "peer_service": "",
		"http_request_method": "GET", "http_response_status_code": "200", "http_route": "/api/users/{name}",
		"server_address": "10.0.0.2", "server_port": "8080",
		"network_protocol_version": "2", "error_type": "",
	}
	if got := labelsOf(users[0]); !sameLabels(got, want) {
		t.Errorf("labels %v, want %v", got, want)
	}
	if h := users[0].GetHistogram(); h.GetSampleSum() < 0.049 || h.GetSampleSum() > 0.051 {
		t.Errorf("sum %v, want 0.05", h.GetSampleSum())
	}
	// 20ms and 30ms both fall in (0.025, 0.05].
	for _, b := range users[0].GetHistogram().Bucket {
		want := uint64(0)
		if b.GetUpperBound() >= 0.05 {
			want = 2
		} else if b.GetUpperBound() >= 0.025 {
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}

	orders := series(t, reg, "http_server_request_duration_seconds", map[string]string{"http_route": "/orders/{id}"})
	if len(orders) != 1 || labelsOf(orders[0])["error_type"] != "503" {
		t.Fatalf("/orders/{id} server: %v", orders)
	}
	client := series(t, reg, "http_client_request_duration_seconds", map[string]string{"http_route": "/orders/{id}"})
	if len(client) != 1 {
		t.Fatalf("/orders/{id} client: %d series", len(client))
	}
	cl := labelsOf(client[0])
	if cl["service"] != "0123456789ab" || cl["peer_service"] != "users-api" || cl["error_type"] != "404" || cl["observer"] != "client" {
		t.Errorf("client labels %v: want service 0123456789ab (short container id), peer_service users-api, error_type 404", cl)
	}
	other := series(t, reg, "http_server_request_duration_seconds", map[string]string{"http_request_method": "_OTHER"})
	if len(other) != 1 || labelsOf(other[0])["error_type"] != "reset" || labelsOf(other[0])["http_response_status_code"] != "" {
		t.Errorf("unknown method / reset: %v", other)
	}
	sizes := series(t, reg, "http_server_response_body_size_bytes", map[string]string{"http_route": "/api/users/{name}"})
	if len(sizes) != 1 || sizes[0].GetHistogram().GetSampleSum() != 600 {
		t.Errorf("response body sizes: %v", sizes)
	}
	if n := sampleCount(series(t, reg, "rpc_server_call_duration_seconds", nil)); n != 0 {
		t.Errorf("%d RPC observations for plain HTTP", n)
	}
}

func sameLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return len(got) == len(want)
}

func TestGRPCMetrics(t *testing.T) {
	e, reg := newTestExporter(t, Config{})
	st := uint32(5)
	f := httpFlow(flow.SideServer, "/grpc.testing.TestService/UnaryCall", 200, 40*time.Millisecond)
	f.Method = "POST"
	f.GRPC = &flow.GRPC{Service: "grpc.testing.TestService", Method: "UnaryCall", Status: &st}
	e.Export(f)
	closeExporter(t, e)
	rpc := series(t, reg, "rpc_server_call_duration_seconds", nil)
	if len(rpc) != 1 || sampleCount(rpc) != 1 {
		t.Fatalf("rpc series: %v", rpc)
	}
	want := map[string]string{
		"observer": "server", "service": "users-api", "peer_service": "", "rpc_system": "grpc",
		"rpc_service": "grpc.testing.TestService", "rpc_method": "UnaryCall", "rpc_grpc_status_code": "5",
		"server_address": "10.0.0.2", "server_port": "8080", "error_type": "5",
	}
	if got := labelsOf(rpc[0]); !sameLabels(got, want) {
		t.Errorf("labels %v, want %v", got, want)
	}
	h := series(t, reg, "http_server_request_duration_seconds", map[string]string{"http_route": "/grpc.testing.TestService/UnaryCall"})
	if sampleCount(h) != 1 {
		t.Errorf("gRPC call not in the HTTP histogram under its /service/method route")
	}
}

func TestSeriesLimit(t *testing.T) {
	e, reg := newTestExporter(t, Config{MaxSeries: 3})
	for i := range 10 {
		e.Export(httpFlow(flow.SideServer, fmt.Sprintf("/r%c", 'a'+i), 200, time.Millisecond))
	}
	e.Export(httpFlow(flow.SideServer, "/ra", 200, time.Millisecond)) // an existing series still counts there
	closeExporter(t, e)
	for _, name := range []string{"http_server_request_duration_seconds", "http_server_request_body_size_bytes", "http_server_response_body_size_bytes"} {
		all := series(t, reg, name, nil)
		if len(all) != 4 {
			t.Errorf("%s: %d series, want 3 + the overflow series", name, len(all))
		}
		ov := series(t, reg, name, map[string]string{"http_route": overflow, "service": overflow, "observer": overflow})
		if len(ov) != 1 || sampleCount(ov) != 7 {
			t.Errorf("%s: overflow series %v, want 7 observations", name, ov)
		}
		if n := sampleCount(series(t, reg, name, map[string]string{"http_route": "/ra"})); n != 2 {
			t.Errorf("%s /ra: %d observations, want 2", name, n)
		}
		if c := series(t, reg, "sextant_metric_overflow_observations_total", map[string]string{"metric": name}); len(c) != 1 || c[0].GetCounter().GetValue() != 7 {
			t.Errorf("%s: overflow counter %v, want 7", name, c)
		}
		if g := series(t, reg, "sextant_metric_series", map[string]string{"metric": name}); len(g) != 1 || g[0].GetGauge().GetValue() != 3 {
			t.Errorf("%s: series gauge %v, want 3", name, g)
		}
	}
	// The client side has its own limit, untouched.
	if c := series(t, reg, "sextant_metric_overflow_observations_total", map[string]string{"metric": "http_client_request_duration_seconds"}); c[0].GetCounter().GetValue() != 0 {
		t.Errorf("client overflow counted %v", c[0].GetCounter().GetValue())
	}
}

// TestQueueAccounting: whatever the worker keeps up with, every flow is
// either observed or counted as dropped.
func TestQueueAccounting(t *testing.T) {
	e, reg := newTestExporter(t, Config{QueueSize: 4})
	const n = 20000
	f := httpFlow(flow.SideServer, "/q", 200, time.Millisecond)
	for range n {
		e.Export(f)
	}
	closeExporter(t, e)
	_, _, dropped := e.QueueStats()
	got := sampleCount(series(t, reg, "http_server_request_duration_seconds", nil))
	if got+dropped != n {
		t.Fatalf("observed %d + dropped %d != exported %d", got, dropped, n)
	}
	if d := series(t, reg, "sextant_exporter_dropped_flows_total", nil); d[0].GetCounter().GetValue() != float64(dropped) {
		t.Fatalf("dropped counter %v, want %d", d[0].GetCounter().GetValue(), dropped)
	}
	t.Logf("observed %d, dropped %d", got, dropped)
}

// TestExemplars: a flow with a traceparent leaves its trace id as an
// exemplar, visible in the OpenMetrics exposition the handler serves.
func TestExemplars(t *testing.T) {
	e, reg := newTestExporter(t, Config{Exemplars: true})
	f := httpFlow(flow.SideServer, "/traced", 200, 60*time.Millisecond)
	f.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.Export(f)
	closeExporter(t, e)

	body := scrapeOpenMetrics(t, reg)
	var line string
	for l := range strings.Lines(string(body)) {
		if strings.HasPrefix(l, "http_server_request_duration_seconds_bucket{") && strings.Contains(l, `le="0.075"`) {
			line = l
		}
	}
	if !strings.Contains(line, `# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.06`) {
		t.Fatalf("no exemplar on the 0.075 bucket: %q", line)
	}
}

// TestObserveNoAllocs: once a series exists, observing a flow allocates
// nothing (the worker runs once per flow).
func TestObserveNoAllocs(t *testing.T) {
	e, _ := newTestExporter(t, Config{})
	defer closeExporter(t, e)
	f := httpFlow(flow.SideServer, "/api/users/42?x=1", 200, 20*time.Millisecond)
	e.observe(f)
	if n := testing.AllocsPerRun(1000, func() { e.observe(f) }); n != 0 {
		t.Fatalf("%v allocations per flow, want 0", n)
	}
}

// Without Exemplars (the default) no trace id leaves /metrics: it is a
// header value, and /metrics is readable by whoever reaches it.
func TestNoExemplarsByDefault(t *testing.T) {
	e, reg := newTestExporter(t, Config{})
	f := httpFlow(flow.SideServer, "/traced?token=s3cr3t", 200, 60*time.Millisecond)
	f.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.Export(f)
	closeExporter(t, e)
	body := scrapeOpenMetrics(t, reg)
	for _, leak := range []string{"4bf92f3577b34da6a3ce929d0e0e4736", "s3cr3t", "api.example"} {
		if strings.Contains(body, leak) {
			t.Errorf("/metrics carries %q", leak)
		}
	}
}

// scrapeOpenMetrics reads the handler as Prometheus does when it asks for
// OpenMetrics (the only format with exemplars).
func scrapeOpenMetrics(t *testing.T, reg *prom.Registry) string {
	t.Helper()
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("content type %q, want OpenMetrics", ct)
	}
	return string(body)
}
