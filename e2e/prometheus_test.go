package e2e

// The Prometheus test: a real `sextant agent` serves /metrics, a real
// Prometheus 2.42 (Debian's package) scrapes it every second, and known
// traffic runs in between: h2c requests with known routes, statuses,
// latencies and trace ids, and gRPC health checks with known status codes.
// The test asks Prometheus's HTTP API, as a dashboard would, and requires
// exact counts, increase()/rate() that match them, histogram_quantile() in
// the bucket of the known latency, and exemplars carrying the trace ids
// that were sent.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/testbed"
)

// promServer is a Prometheus started by the test, with the readers the
// tests need (each fails the test when Prometheus cannot answer).
type promServer struct {
	*testbed.Prometheus
	t *testing.T
}

// startPrometheus runs Prometheus scraping target every second.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	return &promServer{Prometheus: testbed.StartPrometheus(t, targets...), t: t}
}

// valueErr evaluates an instant query of exactly one sample.
func (p *promServer) valueErr(query string, at time.Time) (float64, error) {
	s, err := p.Query(query, at)
	if err != nil {
		return 0, err
	}
	if len(s) != 1 {
		return 0, fmt.Errorf("query %s: %d samples, want one", query, len(s))
	}
	return s[0].Float(), nil
}

func (p *promServer) get(path string, params url.Values, v any) {
	p.t.Helper()
	if err := p.API(path, params, v); err != nil {
		p.t.Fatal(err)
	}
}

// value evaluates an instant query that returns at most one sample (NaN
// for an empty result).
func (p *promServer) value(query string, at time.Time) float64 {
	p.t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	p.get("/api/v1/query", url.Values{"query": {query}, "time": {testbed.Time(at)}}, &data)
	if data.ResultType != "vector" {
		p.t.Fatalf("query %s: result type %s, want vector", query, data.ResultType)
	}
	switch len(data.Result) {
	case 0:
		return math.NaN()
	case 1:
	default:
		p.t.Fatalf("query %s: %d samples, want one", query, len(data.Result))
	}
	s, _ := data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		p.t.Fatalf("query %s: value %v: %v", query, data.Result[0].Value, err)
	}
	return v
}

// await polls query until it returns want (scrapes are asynchronous).
func (p *promServer) await(query string, want float64, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var got float64
	for time.Now().Before(deadline) {
		if got = p.value(query, time.Now()); got == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	p.t.Fatalf("%s = %v after %v, want %v", query, got, timeout, want)
}

// dump renders the samples of an instant query, for failure messages.
func (p *promServer) dump(query string, at time.Time) string {
	p.t.Helper()
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	p.get("/api/v1/query", url.Values{"query": {query}, "time": {testbed.Time(at)}}, &data)
	var b strings.Builder
	for _, r := range data.Result {
		fmt.Fprintf(&b, "\n  %v = %v", r.Metric, r.Value[1])
	}
	return b.String()
}

type exemplarSeries struct {
	SeriesLabels map[string]string `json:"seriesLabels"`
	Exemplars    []struct {
		Labels map[string]string `json:"labels"`
		Value  string            `json:"value"`
	} `json:"exemplars"`
}

func (p *promServer) exemplars(query string, start, end time.Time) []exemplarSeries {
	p.t.Helper()
	var data []exemplarSeries
	p.get("/api/v1/query_exemplars", url.Values{"query": {query}, "start": {testbed.Time(start)}, "end": {testbed.Time(end)}}, &data)
	return data
}

// The workload server answers /<anything>?sleep=<duration>&status=<code>
// after sleeping that long, with that status.

type promCall struct {
	path        string
	sleep       time.Duration
	status      int
	traceparent string
}

func TestPrometheusGoldenSignals(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.PrometheusBinary(t)
	bin := testbed.Sextant(t)
	tmp := t.TempDir()
	cg := testbed.NewCgroup(t, "prometheus")

	// The workload: an h2c server and a gRPC server in this process (the
	// agent observes every process but itself).
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(testbed.WorkloadHandler), &http2.Server{})}
	go func() { _ = hsrv.Serve(hl) }()
	t.Cleanup(func() { hsrv.Close() })
	hport := strconv.Itoa(hl.Addr().(*net.TCPAddr).Port)

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gsrv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gsrv, hs)
	go func() { _ = gsrv.Serve(gl) }()
	t.Cleanup(gsrv.Stop)
	gport := strconv.Itoa(gl.Addr().(*net.TCPAddr).Port)

	metricsAddr := testbed.FreeAddr(t)
	testbed.StartDaemon(t, "agent", bin, "agent", "--node", "prom-e2e", "--cgroup", cg.Path,
		"--socket", filepath.Join(tmp, "agent.sock"),
		"--metrics-listen", metricsAddr, "--route", "/api/users/{id}", "--metrics-exemplars",
		"--log-level", "debug")
	// /metrics answers once the probes are attached.
	awaitMetrics(t, "http://"+metricsAddr+"/metrics")
	prom := startPrometheus(t, metricsAddr)
	prom.await(`up{job="sextant"}`, 1, 30*time.Second)
	// The workload runs in this process, from now on in the only cgroup
	// the agent observes (Prometheus, started before, is not in it).
	cg.Join(t)

	client := testbed.H2CClient(t)
	do := func(calls []promCall) error {
		var wg sync.WaitGroup
		errs := make(chan error, len(calls))
		for _, c := range calls {
			wg.Go(func() {
				u := fmt.Sprintf("http://%s%s?sleep=%s&status=%d", hl.Addr(), c.path, c.sleep, c.status)
				req, _ := http.NewRequest("GET", u, nil)
				if c.traceparent != "" {
					req.Header.Set("traceparent", c.traceparent)
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.status {
					errs <- fmt.Errorf("%s: status %d, want %d", u, resp.StatusCode, c.status)
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs // nil when none
	}
	run := func(calls []promCall) {
		t.Helper()
		if err := do(calls); err != nil {
			t.Fatalf("workload: %v", err)
		}
	}
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	check := func(okCalls, notFound int) {
		t.Helper()
		for range okCalls {
			if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("health check: %v", err)
			}
		}
		for range notFound {
			_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "nope"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("health check of an unknown service: %v, want NotFound", err)
			}
		}
	}

	// Label sets under test (server side; the client side mirrors them).
	sel := func(route, code string) string {
		return fmt.Sprintf(`server_port=%q,http_route=%q,http_response_status_code=%q`, hport, route, code)
	}
	fast := sel("/api/users/{id}", "200")   // a configured pattern
	slow := sel("/orders/{id}/slow", "503") // automatic collapsing of a number
	slower := sel("/reports/{uuid}", "200") // automatic collapsing of a uuid
	rpcOK := fmt.Sprintf(`server_port=%q,rpc_service="grpc.health.v1.Health",rpc_method="Check",rpc_grpc_status_code="0"`, gport)
	rpcNotFound := fmt.Sprintf(`server_port=%q,rpc_service="grpc.health.v1.Health",rpc_method="Check",rpc_grpc_status_code="5"`, gport)
	count := func(side, sel string) string {
		return fmt.Sprintf(`sum(http_%s_request_duration_seconds_count{%s})`, side, sel)
	}
	rpcCount := func(side, sel string) string {
		return fmt.Sprintf(`sum(rpc_%s_call_duration_seconds_count{%s})`, side, sel)
	}

	// Warm-up: requests for every label set, so that every series exists
	// before the measured traffic (increase() cannot see the first
	// observation of a series that appears with its first scrape). Two
	// rounds: peer_service is learned from the first (the agent names the
	// other end once it has seen both ends of a connection).
	const warm = 2
	for range warm {
		run([]promCall{
			{path: "/api/users/0", status: 200},
			{path: "/orders/0/slow", status: 503},
			{path: "/reports/" + promUUID(), status: 200},
		})
		check(1, 1)
	}
	for _, side := range []string{"server", "client"} {
		for _, s := range []string{fast, slow, slower} {
			prom.await(count(side, s), warm, 30*time.Second)
		}
		prom.await(rpcCount(side, rpcOK), warm, 30*time.Second)
		prom.await(rpcCount(side, rpcNotFound), warm, 30*time.Second)
	}
	// Every sample from now until the traffic holds the warm-up counts:
	// the windows below start here, so that they contain flat samples
	// before the first measured request.
	time.Sleep(1500 * time.Millisecond)
	t0 := time.Now()
	time.Sleep(1500 * time.Millisecond)

	// The measured traffic.
	const nFast, nSlow, nSlower, nOK, nNotFound = 30, 10, 4, 7, 3
	traces := map[string]bool{}
	var calls []promCall
	for i := range nFast {
		id := promHex(16)
		traces[id] = true
		calls = append(calls, promCall{path: fmt.Sprintf("/api/users/%d", 1000+i), status: 200,
			traceparent: "00-" + id + "-" + promHex(8) + "-01"})
	}
	for i := range nSlow {
		calls = append(calls, promCall{path: fmt.Sprintf("/orders/%d/slow", 7000+i), sleep: 300 * time.Millisecond, status: 503})
	}
	for range nSlower {
		calls = append(calls, promCall{path: "/reports/" + promUUID(), sleep: 1200 * time.Millisecond, status: 200})
	}
	// The traced requests go in three batches over three scrapes: a
	// histogram bucket keeps its latest exemplar, so each scrape can carry
	// a new one.
	slowDone := make(chan error, 1)
	go func() { slowDone <- do(calls[nFast:]) }()
	for b := range 3 {
		run(calls[b*nFast/3 : (b+1)*nFast/3])
		time.Sleep(1200 * time.Millisecond)
	}
	if err := <-slowDone; err != nil {
		t.Fatalf("workload: %v", err)
	}
	check(nOK, nNotFound)

	for _, side := range []string{"server", "client"} {
		prom.await(count(side, fast), warm+nFast, 30*time.Second)
		prom.await(count(side, slow), warm+nSlow, 30*time.Second)
		prom.await(count(side, slower), warm+nSlower, 30*time.Second)
		prom.await(rpcCount(side, rpcOK), warm+nOK, 30*time.Second)
		prom.await(rpcCount(side, rpcNotFound), warm+nNotFound, 30*time.Second)
	}
	time.Sleep(2 * time.Second) // flat samples after the traffic
	t1 := time.Now()
	window := int(t1.Sub(t0).Seconds()) // whole seconds, starting at or after t0
	w := fmt.Sprintf("%ds", window)

	for _, side := range []string{"server", "client"} {
		for _, c := range []struct {
			name   string
			series string // a counter expression with {sel} for the label set
			sel    string
			n      int
		}{
			{"fast", "http_" + side + "_request_duration_seconds_count", fast, nFast},
			{"slow", "http_" + side + "_request_duration_seconds_count", slow, nSlow},
			{"slower", "http_" + side + "_request_duration_seconds_count", slower, nSlower},
			{"grpc ok", "rpc_" + side + "_call_duration_seconds_count", rpcOK, nOK},
			{"grpc not found", "rpc_" + side + "_call_duration_seconds_count", rpcNotFound, nNotFound},
		} {
			s := fmt.Sprintf("%s{%s}", c.series, c.sel)
			// Exact: the stored counter went up by exactly the requests sent.
			if got := prom.value(fmt.Sprintf("sum(%s) - sum(%s offset %s)", s, s, w), t1); got != float64(c.n) {
				t.Errorf("%s %s: counter rose by %v over %s, want %d", side, c.name, got, w, c.n)
			}
			// increase() and rate() extrapolate to the window's edges by at
			// most 1.1 scrape intervals on each side (Prometheus's
			// extrapolatedRate): exact up to that factor.
			hi := float64(c.n) * float64(window) / (float64(window) - 2.2)
			inc := prom.value(fmt.Sprintf("sum(increase(%s[%s]))", s, w), t1)
			if inc < float64(c.n)-1e-9 || inc > hi {
				t.Errorf("%s %s: increase() = %v, want %d (≤ %.2f with extrapolation)\nbefore: %s\nafter: %s", side, c.name, inc, c.n, hi,
					prom.dump(s, t0), prom.dump(s, t1))
			}
			t.Logf("%s %s: %d requests: increase()=%.2f over %s", side, c.name, c.n, inc, w)
			rate := prom.value(fmt.Sprintf("sum(rate(%s[%s]))", s, w), t1) * float64(window)
			if math.Abs(rate-inc) > 1e-6 {
				t.Errorf("%s %s: rate()×%s = %v, increase() = %v", side, c.name, w, rate, inc)
			}
		}

		// Latencies land in the bucket of the known sleep.
		for _, c := range []struct {
			name   string
			metric string
			sel    string
			lo, hi float64
		}{
			{"fast", "http_" + side + "_request_duration_seconds_bucket", fast, 0, 0.1},
			{"slow (300ms)", "http_" + side + "_request_duration_seconds_bucket", slow, 0.25, 0.5},
			{"slower (1.2s)", "http_" + side + "_request_duration_seconds_bucket", slower, 1, 2.5},
		} {
			for _, q := range []float64{0.5, 0.99} {
				got := prom.value(fmt.Sprintf("histogram_quantile(%v, sum by (le) (rate(%s{%s}[%s])))", q, c.metric, c.sel, w), t1)
				t.Logf("%s %s: histogram_quantile(%v) = %.3f", side, c.name, q, got)
				if !(got >= c.lo && got <= c.hi) {
					t.Errorf("%s %s: histogram_quantile(%v) = %v, want in [%v, %v]", side, c.name, q, got, c.lo, c.hi)
				}
			}
		}
	}

	// Exemplars: the fast requests carried trace ids; the exemplars
	// Prometheus stored are among them, on the right series.
	ex := prom.exemplars(fmt.Sprintf(`http_server_request_duration_seconds_bucket{%s}`, fast), t0, t1)
	seen := 0
	for _, s := range ex {
		for _, e := range s.Exemplars {
			if !traces[e.Labels["trace_id"]] {
				t.Errorf("exemplar of %v has trace_id %q, not one the test sent", s.SeriesLabels, e.Labels["trace_id"])
			}
			if v, _ := strconv.ParseFloat(e.Value, 64); v > 0.1 {
				t.Errorf("exemplar %v: value %s, the fast requests took less than 0.1s", e.Labels, e.Value)
			}
			seen++
		}
	}
	if seen < 2 {
		t.Errorf("%d exemplars stored for %s, want one per batch of traced requests (3, at least 2)", seen, fast)
	}
	if ex := prom.exemplars(fmt.Sprintf(`http_server_request_duration_seconds_bucket{%s}`, slow), t0, t1); len(ex) != 0 {
		t.Errorf("exemplars on requests without traceparent: %v", ex)
	}
	t.Logf("%d exemplars with the sent trace ids", seen)

	// Self-metrics: records flowed, and the exporter neither dropped nor
	// overflowed anything.
	if v := prom.value(`sum(rate(sextant_probe_records_total[`+w+`]))`, t1); !(v > 0) {
		t.Errorf("sextant_probe_records_total rate = %v, want > 0", v)
	}
	for _, q := range []string{
		`sum(sextant_exporter_dropped_flows_total)`,
		`sum(sextant_metric_overflow_observations_total)`,
	} {
		if v := prom.value(q, t1); v != 0 {
			t.Errorf("%s = %v, want 0", q, v)
		}
	}
}

// awaitMetrics waits for the agent's /metrics to answer.

func awaitMetrics(t *testing.T, u string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent metrics at %s did not answer within 60s: %v", u, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func promHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func promUUID() string {
	h := promHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
