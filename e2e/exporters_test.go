package e2e

// The exporters end to end: real traffic → one `sextant agent` → two
// `sextant relay`s → every sink a user reads, each a real system:
//
//   - Prometheus 2.42 scraping the agent's /metrics,
//   - relay A: ClickHouse 18.16 (native protocol) and Jaeger v2 (OTLP gRPC),
//   - relay B: the embedded store (chDB), read with `sextant query`.
//
// The agent is scoped to one cgroup holding the workload, so that other
// traffic on the host cannot load the relays. The workload is known: h2c
// requests carrying one traceparent, both ends in the cgroup (each request
// seen twice, client and server), and the grpc-go interop client's calls
// from outside the cgroup (seen once, at the server). Every sink must count
// exactly the exchanges sent per observed side, no more and no less, and
// still so after a grace period.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/testbed"
)

// expRoute is the agent's route template for the h2c workload.
const expRoute = "/s/{code}/{size}/e2e-exp/{n}"

// expTimeout bounds every wait for a sink to show the expected counts.
const expTimeout = 60 * time.Second

func TestExporters(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.PrometheusBinary(t)
	testbed.JaegerBinary(t)
	if _, err := os.Stat(testbed.ClickHouseServer); err != nil {
		testbed.Missing(t, "ClickHouse server not installed (apt-get install -y clickhouse-server): %v", err)
	}
	if _, err := os.Stat(filepath.Join(clickhouse.DefaultChDBDir(), "node_modules")); err != nil {
		testbed.Missing(t, "chDB not fetched into %s (go tool task setup): %v", clickhouse.DefaultChDBDir(), err)
	}
	bin := testbed.Sextant(t)
	tmp := t.TempDir()
	// The agent observes only the workload's cgroup: other processes'
	// traffic on a busy host (other tests, benchmarks) would otherwise load
	// both relays and every backend with flows the test does not count.
	cg := testbed.NewCgroup(t, "exporters")

	// The backends.
	ch := testbed.StartClickHouse(t)
	jg := testbed.StartJaeger(t)

	// One agent, on its socket; its route template names the workload's
	// route in every sink (metrics, span names, the route column).
	agentSocket, metricsAddr := filepath.Join(tmp, "agent.sock"), testbed.FreeAddr(t)
	testbed.StartDaemon(t, "agent", bin, "agent", "--node", "e2e-exp", "--cgroup", cg.Path,
		"--socket", agentSocket, "--metrics-listen", metricsAddr, "--route", expRoute)
	awaitMetrics(t, "http://"+metricsAddr+"/metrics") // answers once the probes are attached

	// Relay A: ClickHouse 18.16 and Jaeger. Relay B: the embedded store.
	// Both reach the agent on its socket and serve their own sockets.
	relayA, relayB := filepath.Join(tmp, "relay-a.sock"), filepath.Join(tmp, "relay-b.sock")
	queryB := filepath.Join(tmp, "query-b.sock")
	metricsA, metricsB := testbed.FreeAddr(t), testbed.FreeAddr(t)
	testbed.StartDaemon(t, "relay A", bin, "relay", "--agent", "unix://"+agentSocket, "--socket", relayA,
		"--clickhouse-addr", ch.Addr(), "--otlp-endpoint", jg.OTLPGRPC, "--otlp-insecure",
		"--data-dir", filepath.Join(tmp, "relay-a"), "--query-socket", filepath.Join(tmp, "query-a.sock"), "--metrics-listen", metricsA)
	testbed.StartDaemon(t, "relay B", bin, "relay", "--agent", "unix://"+agentSocket, "--socket", relayB,
		"--data-dir", filepath.Join(tmp, "relay-b"), "--query-socket", queryB, "--metrics-listen", metricsB)
	// A relay subscribes its exporters before it serves, and follows the
	// agent from "now": connected means every later flow reaches them.
	expAwaitRelay(t, "unix://"+relayA)
	expAwaitRelay(t, "unix://"+relayB)
	prom := startPrometheus(t, metricsAddr, metricsA, metricsB)
	prom.await(`count(up{job="sextant"} == 1)`, 3, 30*time.Second)

	// The workload: the h2c client and server and the gRPC server run in
	// the observed cgroup; the gRPC client outside it, so its calls are
	// seen from the server side only (and prove the scope holds).
	h2srv := startInCgroup(t, cg, "h2c-server", "h2c-server", nil)
	h2addr, h2port := serverAddr(t, h2srv)
	gsrv := startInCgroup(t, cg, "grpc-server", "grpc-server", nil)
	gaddr, gport := serverAddr(t, gsrv)

	// n h2c requests on one connection, all in one trace (one parent span
	// each), so Jaeger can return them by trace id. The agent learns a
	// connection's cgroup from /proc when it decodes its first record, so
	// the client pauses after its first request until the agent counted it
	// (a client gone by then would be nobody's; see TestRelayMultiNode).
	const n = 40
	traceID := promHex(16)
	args := clientArgs{Addr: h2addr, H2C: true, PauseAfter: 1}
	for i := range n {
		args.Reqs = append(args.Reqs, reqSpec{Method: "GET", Path: fmt.Sprintf("/s/200/64/e2e-exp/%d", i),
			Header: map[string]string{"traceparent": "00-" + traceID + "-" + promHex(8) + "-01"}})
	}
	h2cli := startInCgroup(t, cg, "http-client", "http-client", args)
	h2cli.expect("PAUSED", 60*time.Second)
	prom.await(fmt.Sprintf(`sum(http_client_request_duration_seconds_count{server_port="%d"})`, h2port), 1, expTimeout)
	h2cli.send("go")
	finishClient(t, h2cli, args)

	// The grpc-go interop client: unary, streaming, errors, a deadline.
	g0 := time.Now()
	gcli := startPeer(t, "grpc-client", grpcArgs{Addr: gaddr})
	var calls []grpcCall
	gcli.expectJSON(&calls, 2*time.Minute)
	gcli.waitExit(30 * time.Second)
	g1 := time.Now()
	m := int64(len(calls))
	if m == 0 {
		t.Fatal("grpc client made no calls")
	}
	t.Logf("sent %d h2c requests to %s and %d gRPC calls to %s", n, h2addr, m, gaddr)

	// Each sink, as a function returning its counts; want is what the
	// workload implies. Every check polls until equal, and all are checked
	// again after a grace period (late duplicates would show then).
	httpWhere := fmt.Sprintf("destination_port = %d AND path LIKE '/s/200/64/e2e-exp/%%'", h2port)
	grpcWhere := fmt.Sprintf("destination_port = %d AND grpc_service = 'grpc.testing.TestService'", gport)
	sqlCounts := func(table string) string {
		return fmt.Sprintf("SELECT countIf(%[2]s), countIf(%[2]s AND observer = 'server'), countIf(%[2]s AND trace_id = '%[3]s'), "+
			"countIf(%[2]s AND route = '%[5]s'), countIf(%[4]s), countIf(%[4]s AND observer = 'server') FROM %[1]s",
			table, httpWhere, traceID, grpcWhere, expRoute)
	}
	flows := int64(2*n) + m // every exchange the agent saw: h2c both sides, gRPC server side
	checks := []struct {
		name string
		want []int64
		got  func() ([]int64, error)
	}{
		{"prometheus http_{server,client}_request_duration_seconds_count", []int64{n, n}, func() ([]int64, error) {
			return expPromCounts(prom, fmt.Sprintf(`http_%%s_request_duration_seconds_count{server_port="%d"}`, h2port))
		}},
		// The client side is out of scope: no series at all.
		{"prometheus rpc_{server,client}_call_duration_seconds_count", []int64{m, -1}, func() ([]int64, error) {
			return expPromCounts(prom, fmt.Sprintf(`rpc_%%s_call_duration_seconds_count{server_port="%d"}`, gport))
		}},
		// The route label comes from the agent's route stage.
		{"prometheus http_route", []int64{n, n}, func() ([]int64, error) {
			return expPromCounts(prom, fmt.Sprintf(`http_%%s_request_duration_seconds_count{server_port="%d",http_route="%s"}`, h2port, expRoute))
		}},
		// http: all, server side, in the trace, with the route; grpc: all,
		// server side.
		{"clickhouse 18.16 sextant.flows", []int64{2 * n, n, 2 * n, 2 * n, m, m}, func() ([]int64, error) {
			return expClickHouseCounts(ch, sqlCounts("sextant.flows"))
		}},
		// http: spans in the trace, server spans, with the service name,
		// named "GET <route>" with http.route (server) or url.template
		// (client); grpc: spans of the service in the client's time window,
		// server spans, named by their method.
		{"jaeger spans", []int64{2 * n, n, 2 * n, 2 * n, m, m, m}, func() ([]int64, error) {
			return expJaegerCounts(jg, traceID, h2port, gport, g0.Add(-time.Second), g1.Add(time.Second))
		}},
		{"embedded store (sextant query)", []int64{2 * n, n, 2 * n, 2 * n, m, m}, func() ([]int64, error) {
			return expQueryCounts(bin, "unix://"+queryB, sqlCounts("flows"))
		}},
		// The relays' own /metrics, scraped by the same Prometheus: every
		// flow reached each sink (two history stores, one OTLP), each relay
		// merged every event the agent wrote, and nothing was dropped.
		{"relay /metrics", []int64{2 * flows, flows, 0, 0, 0}, func() ([]int64, error) {
			var out []int64
			for _, q := range []string{
				`sum(sextant_exporter_flows_total{component="relay",exporter="clickhouse"})`,
				`sum(sextant_exporter_flows_total{component="relay",exporter="otlp"})`,
				`sum(sextant_relay_events_merged_total{component="relay"}) - 2 * sum(sextant_ring_written_total{component="agent"})`,
				`sum(sextant_exporter_dropped_flows_total{component="relay"})`,
				`sum(sextant_relay_subscription_dropped_events_total{component="relay"})`,
			} {
				v, err := prom.valueErr(q, time.Now())
				if err != nil {
					return nil, err
				}
				out = append(out, int64(v))
			}
			return out, nil
		}},
	}
	// Every sink is checked even when an earlier one failed: the report
	// then says which parts of the pipeline work.
	passed := make([]bool, len(checks))
	for i, c := range checks {
		deadline := time.Now().Add(expTimeout)
		for {
			got, err := c.got()
			if err == nil && fmt.Sprint(got) == fmt.Sprint(c.want) {
				t.Logf("%s: %v", c.name, got)
				passed[i] = true
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v (err %v) after %v, want %v", c.name, got, err, expTimeout, c.want)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	time.Sleep(grace + time.Second) // > one Prometheus scrape and one export batch
	for i, c := range checks {
		if !passed[i] {
			continue
		}
		if got, err := c.got(); err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s after a grace period: %v (err %v), want %v", c.name, got, err, c.want)
		}
	}
}

// expPromCounts evaluates the server and the client side of a counter
// selector (%s = side), summed; an absent series counts as -1.
func expPromCounts(p *promServer, selector string) ([]int64, error) {
	var out []int64
	for _, side := range []string{"server", "client"} {
		v := p.value("sum("+fmt.Sprintf(selector, side)+")", time.Now())
		if v != v { // NaN: no series yet
			out = append(out, -1)
			continue
		}
		out = append(out, int64(v))
	}
	return out, nil
}

// expAwaitRelay waits until the relay serves and reports the agent connected.
func expAwaitRelay(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay %s not serving after 90s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	awaitNodes(t, client, map[string]relaypb.NodeState{"e2e-exp": relaypb.NodeState_NODE_CONNECTED}, 90*time.Second)
}

// expQueryCounts runs SQL through `sextant query -o json` against a relay
// and returns the first row as integers.
func expQueryCounts(bin, relay, sql string) ([]int64, error) {
	cmd := exec.Command(bin, "query", "--relay", relay, "--timeout", "20s", "-o", "json", sql)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("sextant query: %w (%s)", err, out)
	}
	var res clickhouse.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("decode %s: %w", out, err)
	}
	if len(res.Rows) != 1 {
		return nil, fmt.Errorf("%d rows: %s", len(res.Rows), out)
	}
	var vals []int64
	for _, v := range res.Rows[0] {
		x, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil {
			return nil, fmt.Errorf("value %v: %w", v, err)
		}
		vals = append(vals, int64(x))
	}
	return vals, nil
}

// ---------------------------------------------------------------------------
// ClickHouse 18.16 (testbed.StartClickHouse).

// expClickHouseCounts runs a one-row query over the HTTP interface
// (independent of the code under test) and returns its values.
func expClickHouseCounts(c *testbed.ClickHouse, sql string) ([]int64, error) {
	body, err := c.Query(sql) // fails e.g. while the table is not created yet
	if err != nil {
		return nil, err
	}
	var vals []int64
	for _, f := range strings.Fields(body) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("clickhouse answered %q: %w", body, err)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// ---------------------------------------------------------------------------
// Jaeger v2 (testbed.StartJaeger).

func expGetJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", u, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// expSpan is a span of the query API v3 (OTLP/JSON), reduced to what the
// counts need.
type expSpan struct {
	name    string
	kind    int // OTLP: 2 server, 3 client
	attrs   map[string]string
	service string
}

func expSpans(u string) ([]expSpan, error) {
	type kv struct {
		Key   string `json:"key"`
		Value struct {
			String *string `json:"stringValue"`
			Int    *string `json:"intValue"`
		} `json:"value"`
	}
	flat := func(kvs []kv) map[string]string {
		m := map[string]string{}
		for _, a := range kvs {
			switch {
			case a.Value.String != nil:
				m[a.Key] = *a.Value.String
			case a.Value.Int != nil:
				m[a.Key] = *a.Value.Int
			}
		}
		return m
	}
	var r struct {
		Result struct {
			ResourceSpans []struct {
				Resource struct {
					Attributes []kv `json:"attributes"`
				} `json:"resource"`
				ScopeSpans []struct {
					Spans []struct {
						Name       string `json:"name"`
						Kind       int    `json:"kind"`
						Attributes []kv   `json:"attributes"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		} `json:"result"`
	}
	if err := expGetJSON(u, &r); err != nil {
		return nil, err
	}
	var out []expSpan
	for _, rs := range r.Result.ResourceSpans {
		svc := flat(rs.Resource.Attributes)["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				out = append(out, expSpan{name: s.Name, kind: s.Kind, attrs: flat(s.Attributes), service: svc})
			}
		}
	}
	return out, nil
}

// counts returns, for the h2c requests: spans in the trace, server spans,
// spans whose service is the workload's executable (e2e.test: the test
// binary re-executed; docs/otel.md's service.name rule gives its exe base
// name, or comm, which is the same); and for the gRPC calls: spans of
// service e2e.test in [from, to] to the gRPC server's port, server spans.
func expJaegerCounts(j *testbed.Jaeger, traceID string, h2port, gport uint16, from, to time.Time) ([]int64, error) {
	const service = "e2e.test"
	spans, err := expSpans(j.Query + "/api/v3/traces/" + traceID + "?raw_traces=true")
	if err != nil && !strings.Contains(err.Error(), "404") {
		return nil, err
	}
	var all, server, named, routed int64
	for _, s := range spans {
		if s.attrs["server.port"] != strconv.Itoa(int(h2port)) || !strings.HasPrefix(s.attrs["url.path"], "/s/200/64/e2e-exp/") {
			continue
		}
		all++
		if s.kind == 2 {
			server++
		}
		if s.service == service {
			named++
		}
		// Server spans carry http.route, client spans url.template.
		if s.name == "GET "+expRoute && (s.kind == 2 && s.attrs["http.route"] == expRoute || s.kind == 3 && s.attrs["url.template"] == expRoute) {
			routed++
		}
	}
	q := url.Values{
		"query.service_name":   {service},
		"query.start_time_min": {from.UTC().Format(time.RFC3339Nano)},
		"query.start_time_max": {to.UTC().Format(time.RFC3339Nano)},
		"query.num_traces":     {"20000"}, // other e2e.test processes may trace too
		"query.raw_traces":     {"true"},
	}
	spans, err = expSpans(j.Query + "/api/v3/traces?" + q.Encode())
	if err != nil && !strings.Contains(err.Error(), "404") {
		return nil, err
	}
	var gall, gserver, gnamed int64
	for _, s := range spans {
		if s.service != service || s.attrs["server.port"] != strconv.Itoa(int(gport)) || s.attrs["rpc.service"] != "grpc.testing.TestService" {
			continue
		}
		gall++
		if s.kind == 2 {
			gserver++
		}
		if s.name == "grpc.testing.TestService/"+s.attrs["rpc.method"] {
			gnamed++
		}
	}
	return []int64{all, server, named, routed, gall, gserver, gnamed}, nil
}
