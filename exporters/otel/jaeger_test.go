package otel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// jaeger is a real Jaeger v2 (bin/jaeger, built from tools/jaeger) with
// memory storage, every port on 127.0.0.1. Its OTLP receiver takes traces
// into storage and metrics into Jaeger's bundled Prometheus exporter, so
// both signals are read back from a real backend.
type jaeger struct {
	otlpGRPC, otlpHTTP string // host:port
	query              string // base URL of the query API
	metrics            string // URL of the Prometheus exporter's /metrics
	log                *bytes.Buffer
}

var buildJaeger sync.Once

// jaegerBinary returns bin/jaeger. When it is missing the test skips, but
// under CI=true it builds it (≈8 min cold; `go tool task tools` does the
// same ahead of time).
func jaegerBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", "jaeger")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if os.Getenv("CI") != "true" {
		t.Skipf("%s missing: build it with `cd tools/jaeger && go build -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger` (CI=true builds it)", bin)
	}
	buildJaeger.Do(func() {
		t.Logf("building %s from tools/jaeger (several minutes when cold)", bin)
		cmd := exec.Command("go", "build", "-o", bin, "github.com/jaegertracing/jaeger/cmd/jaeger")
		cmd.Dir = filepath.Join(root, "tools", "jaeger")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("build jaeger: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("jaeger binary: %v", err)
	}
	return bin
}

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/sextant/sextant\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root (go.mod of github.com/sextant/sextant) not found")
		}
		dir = parent
	}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%d
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 1000000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
  prometheus:
    endpoint: 127.0.0.1:%d
    resource_to_telemetry_conversion:
      enabled: true
`

// startJaeger runs Jaeger until the test ends.
func startJaeger(t testing.TB) *jaeger {
	t.Helper()
	bin := jaegerBinary(t)
	p := freePorts(t, 6)
	health, query, queryGRPC, grpcPort, httpPort, prom := p[0], p[1], p[2], p[3], p[4], p[5]
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, health, query, queryGRPC, grpcPort, httpPort, prom), 0o644); err != nil {
		t.Fatal(err)
	}
	j := &jaeger{
		otlpGRPC: fmt.Sprintf("127.0.0.1:%d", grpcPort),
		otlpHTTP: fmt.Sprintf("127.0.0.1:%d", httpPort),
		query:    fmt.Sprintf("http://127.0.0.1:%d", query),
		metrics:  fmt.Sprintf("http://127.0.0.1:%d/metrics", prom),
		log:      new(bytes.Buffer),
	}
	cmd := exec.Command(bin, "--config", "file:"+cfg)
	cmd.Stdout, cmd.Stderr = j.log, j.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("jaeger log:\n%s", j.log)
		}
	})

	// Ready when the health check says so and the OTLP ports accept.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("jaeger exited early:\n%s", j.log)
		default:
		}
		var st struct{ Healthy bool }
		if getJSON(fmt.Sprintf("http://127.0.0.1:%d/status", health), &st) == nil && st.Healthy && dialable(j.otlpGRPC) && dialable(j.otlpHTTP) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger not ready after 60s:\n%s", j.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// The query API v3 answers in OTLP/JSON (ids hex, times in ns, untouched
// with raw_traces=true).
type v3Traces struct {
	Result struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []otlpKV `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Scope struct {
					Name string `json:"name"`
				} `json:"scope"`
				Spans []struct {
					TraceID      string   `json:"traceId"`
					SpanID       string   `json:"spanId"`
					ParentSpanID string   `json:"parentSpanId"`
					Name         string   `json:"name"`
					Kind         int      `json:"kind"`
					Start        string   `json:"startTimeUnixNano"`
					End          string   `json:"endTimeUnixNano"`
					Attributes   []otlpKV `json:"attributes"`
					Events       []struct {
						Name string `json:"name"`
						Time string `json:"timeUnixNano"`
					} `json:"events"`
					Status struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"status"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	} `json:"result"`
}

type otlpKV struct {
	Key   string `json:"key"`
	Value struct {
		String *string `json:"stringValue"`
		Int    *string `json:"intValue"`
		Bool   *bool   `json:"boolValue"`
		Array  *struct {
			Values []struct {
				String *string `json:"stringValue"`
			} `json:"values"`
		} `json:"arrayValue"`
	} `json:"value"`
}

// gotSpan is one span as Jaeger returned it, flattened for assertions
// (attribute values as strings; arrays joined with ",").
type gotSpan struct {
	TraceID, SpanID, ParentSpanID, Name string
	Kind                                int // OTLP: 2 server, 3 client
	Start, End                          int64
	Attrs, Resource                     map[string]string
	Events                              map[string]int64
	StatusCode                          int // OTLP: 0 unset, 1 ok, 2 error
	StatusMessage                       string
	Scope                               string
}

func flatten(kvs []otlpKV) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.Value
		switch {
		case v.String != nil:
			m[kv.Key] = *v.String
		case v.Int != nil:
			m[kv.Key] = *v.Int
		case v.Bool != nil:
			m[kv.Key] = strconv.FormatBool(*v.Bool)
		case v.Array != nil:
			var parts []string
			for _, e := range v.Array.Values {
				if e.String != nil {
					parts = append(parts, *e.String)
				}
			}
			m[kv.Key] = strings.Join(parts, ",")
		}
	}
	return m
}

func (r *v3Traces) spans(t testing.TB) []gotSpan {
	var out []gotSpan
	for _, rs := range r.Result.ResourceSpans {
		res := flatten(rs.Resource.Attributes)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g := gotSpan{TraceID: s.TraceID, SpanID: s.SpanID, ParentSpanID: s.ParentSpanID, Name: s.Name, Kind: s.Kind,
					Attrs: flatten(s.Attributes), Resource: res, Events: map[string]int64{},
					StatusCode: s.Status.Code, StatusMessage: s.Status.Message, Scope: ss.Scope.Name}
				var err error
				if g.Start, err = strconv.ParseInt(s.Start, 10, 64); err != nil {
					t.Fatalf("span %s start %q: %v", s.Name, s.Start, err)
				}
				if g.End, err = strconv.ParseInt(s.End, 10, 64); err != nil {
					t.Fatalf("span %s end %q: %v", s.Name, s.End, err)
				}
				for _, ev := range s.Events {
					g.Events[ev.Name], _ = strconv.ParseInt(ev.Time, 10, 64)
				}
				out = append(out, g)
			}
		}
	}
	return out
}

// trace fetches one trace by id, waiting until it has want spans (Jaeger
// stores asynchronously).
func (j *jaeger) trace(t testing.TB, traceID string, want int) []gotSpan {
	t.Helper()
	u := j.query + "/api/v3/traces/" + traceID + "?raw_traces=true"
	var spans []gotSpan
	deadline := time.Now().Add(10 * time.Second)
	for {
		var r v3Traces
		if err := getJSON(u, &r); err == nil {
			if spans = r.spans(t); len(spans) >= want {
				return spans
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s: %d spans after 10s, want %d", traceID, len(spans), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// service fetches the traces of a service that started in [from, to].
func (j *jaeger) service(t testing.TB, name string, from, to time.Time, want int) []gotSpan {
	t.Helper()
	q := url.Values{
		"query.service_name":   {name},
		"query.start_time_min": {from.UTC().Format(time.RFC3339Nano)},
		"query.start_time_max": {to.UTC().Format(time.RFC3339Nano)},
		"query.num_traces":     {"1000"},
		"query.raw_traces":     {"true"},
	}
	u := j.query + "/api/v3/traces?" + q.Encode()
	var spans []gotSpan
	deadline := time.Now().Add(10 * time.Second)
	for {
		var r v3Traces
		if err := getJSON(u, &r); err == nil {
			if spans = r.spans(t); len(spans) >= want {
				return spans
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s: %d spans after 10s, want %d", name, len(spans), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metric returns the value of the sample of Jaeger's Prometheus exporter
// whose name is name and whose labels include every one of labels, waiting
// for it to appear.
func (j *jaeger) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := scrape(j.metrics, name, labels); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s%v not exported after 10s", name, labels)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func scrape(u, name string, labels map[string]string) (float64, bool) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		set := line[len(name)+1 : end]
		ok := true
		for k, v := range labels {
			if !strings.Contains(","+set+",", ","+k+"="+strconv.Quote(v)+",") {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		return v, err == nil
	}
	return 0, false
}

// waitSent waits until the exporter has sent (or failed) n spans.
func waitSent(t testing.TB, e *Exporter, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.Stats()
		if st.SpansSent+st.SpansFailed >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter sent %d spans after 10s, want %d: %+v", st.SpansSent, n, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func closeExporter(t testing.TB, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}
