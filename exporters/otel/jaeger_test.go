package otel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/testbed"
)

// jaeger is a real Jaeger v2 (see testbed.StartJaeger) with the readers
// these tests need.
type jaeger struct{ *testbed.Jaeger }

// startJaeger runs Jaeger until the test ends.
func startJaeger(t testing.TB) *jaeger { return &jaeger{testbed.StartJaeger(t)} }

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
	u := j.Query + "/api/v3/traces/" + traceID + "?raw_traces=true"
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
	u := j.Query + "/api/v3/traces?" + q.Encode()
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
		if v, ok := scrape(j.Metrics, name, labels); ok {
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
