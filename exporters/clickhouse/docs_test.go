package clickhouse

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/testbed"
)

const docTrace = "4bf92f3577b34da6a3ce929d0e0e4736"

// docQuery is one ```sql block of docs/queries.md under its heading.
type docQuery struct {
	heading, sql string
	modernOnly   bool
}

func docQueries(t *testing.T) []docQuery {
	t.Helper()
	md, err := os.ReadFile("../../docs/queries.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []docQuery
	heading := ""
	re := regexp.MustCompile("(?ms)^## ([^\n]+)$|^```sql\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(string(md), -1) {
		if m[1] != "" {
			heading = m[1]
			continue
		}
		out = append(out, docQuery{heading: heading, sql: m[2], modernOnly: strings.Contains(m[2], "-- modern only")})
	}
	if len(out) < 8 {
		t.Fatalf("docs/queries.md: %d sql blocks", len(out))
	}
	return out
}

// docFlows is the known data: testFlows a minute ago, plus a slow route,
// a three-hop trace and one big talker.
func docFlows() []*flow.Flow {
	fs := testFlows(6000, time.Now().Add(-time.Minute))
	for i, f := range fs {
		if f.Authority == "svc-1:8080" && f.GRPC == nil {
			f.Latency += 500 * time.Millisecond
		}
		if i < 3 {
			f.TraceParent = fmt.Sprintf("00-%s-%016x-01", docTrace, i+1)
		}
	}
	fs[7].Unknown = []string{"path", "authority"}
	fs[8].Unknown = []string{"path"}
	fs[5].Source = netip.MustParseAddrPort("192.0.2.1:5555")
	fs[5].ResponseBytes = 1 << 30
	return fs
}

// expected answers, computed from the flows in Go.
type docExpect struct {
	slowest             [2]string // service, route with the highest p95
	slowestN            int
	slowestP95          float64 // ms
	errors, requests    map[string]int
	traceFlows          int
	topClient, topBytes string
}

func expectDocs(fs []*flow.Flow) docExpect {
	ex := docExpect{errors: map[string]int{}, requests: map[string]int{}}
	lat := map[[2]string][]float64{}
	bytes := map[string]uint64{}
	for _, f := range fs {
		r := rowOf(f)
		if r.TraceID == docTrace {
			ex.traceFlows++
		}
		if r.Observer != "server" {
			continue
		}
		k := [2]string{r.Service, r.Route}
		lat[k] = append(lat[k], float64(r.LatencyNs)/1e6)
		ex.requests[r.Service]++
		if r.Status >= 500 || (r.GRPCStatus != nil && *r.GRPCStatus != 0) || r.Outcome != "complete" {
			ex.errors[r.Service]++
		}
		bytes[r.SourceAddress.String()+" "+r.DestinationAddress.String()] += r.RequestBytes + r.ResponseBytes
	}
	best := -1.0
	for k, v := range lat {
		sort.Float64s(v)
		// ClickHouse's quantile interpolates linearly between order statistics.
		pos := 0.95 * float64(len(v)-1)
		p := v[int(pos)] + (pos-math.Floor(pos))*(v[min(int(pos)+1, len(v)-1)]-v[int(pos)])
		if p > best {
			best, ex.slowest, ex.slowestN, ex.slowestP95 = p, k, len(v), p
		}
	}
	var top uint64
	for k, b := range bytes {
		if b > top {
			top, ex.topClient = b, strings.Fields(k)[0]
		}
	}
	ex.topBytes = strconv.FormatUint(top, 10)
	return ex
}

// stringRows renders a Result as strings, the same for both stores.
func stringRows(res *Result) [][]string {
	out := make([][]string, len(res.Rows))
	for i, r := range res.Rows {
		for _, v := range r {
			if v == nil {
				out[i] = append(out[i], "NULL")
			} else {
				out[i] = append(out[i], fmt.Sprint(v))
			}
		}
	}
	return out
}

func checkDocQuery(t *testing.T, q docQuery, res *Result, ex docExpect) {
	t.Helper()
	rows := stringRows(res)
	if len(rows) == 0 {
		t.Errorf("%s: no rows", q.heading)
		return
	}
	switch q.heading {
	case "Slowest routes by p95":
		r := rows[0]
		p95, _ := strconv.ParseFloat(r[3], 64)
		if r[0] != ex.slowest[0] || r[1] != ex.slowest[1] || r[2] != strconv.Itoa(ex.slowestN) || math.Abs(p95-ex.slowestP95) > 0.1 {
			t.Errorf("%s: first row %v, want %v n=%d p95=%.1f", q.heading, r, ex.slowest, ex.slowestN, ex.slowestP95)
		}
	case "Error ratio by service":
		if len(rows) != len(ex.requests) {
			t.Errorf("%s: %d services, want %d", q.heading, len(rows), len(ex.requests))
		}
		for _, r := range rows {
			if r[1] != strconv.Itoa(ex.requests[r[0]]) || r[2] != strconv.Itoa(ex.errors[r[0]]) {
				t.Errorf("%s: %v, want requests %d errors %d", q.heading, r, ex.requests[r[0]], ex.errors[r[0]])
			}
		}
	case "The flows of one trace":
		if len(rows) != ex.traceFlows {
			t.Errorf("%s: %d flows, want %d", q.heading, len(rows), ex.traceFlows)
		}
	case "Top talkers":
		if rows[0][0] != ex.topClient || rows[0][4] != ex.topBytes {
			t.Errorf("%s: first row %v, want client %s bytes %s", q.heading, rows[0], ex.topClient, ex.topBytes)
		}
	}
}

// Every query of docs/queries.md runs on the modern engine, and the four
// that matter most return the answers computed from the data.
func TestDocsQueriesEmbedded(t *testing.T) {
	s := embedded(t)
	fs := docFlows()
	insertFlows(t, s, fs)
	ex := expectDocs(fs)
	for _, q := range docQueries(t) {
		res, err := s.Query(context.Background(), q.sql, 0)
		if err != nil {
			t.Errorf("%s: %v", q.heading, err)
			continue
		}
		checkDocQuery(t, q, res, ex)
	}
}

// The same on the 18.16 server, for the queries not marked modern only.
func TestDocsQueriesLegacy(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s := openNative(t, srv)
	fs := docFlows()
	insertFlows(t, s, fs)
	ex := expectDocs(fs)
	for _, q := range docQueries(t) {
		if q.modernOnly {
			continue
		}
		res, err := s.Query(context.Background(), q.sql, 0)
		if err != nil {
			t.Errorf("%s: %v", q.heading, err)
			continue
		}
		checkDocQuery(t, q, res, ex)
	}
}

func insertFlows(t *testing.T, s Store, fs []*flow.Flow) {
	t.Helper()
	b := &Batch{ID: 1}
	for _, f := range fs {
		b.Rows = append(b.Rows, rowOf(f))
	}
	if err := s.Insert(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}
