package dashboards

// Every SQL query of the Flow history dashboard (panels and variables),
// with the plugin's macros and the dashboard variables substituted, runs
// on the embedded ClickHouse engine (chDB) over flows written by the real
// ClickHouse exporter, and must return the rows the known flows imply.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/route"
	"github.com/sextant/sextant/testbed"
)

var (
	chdbOnce  sync.Once
	chdbStore *clickhouse.EmbeddedStore
	chdbErr   error
)

// embeddedStore is the process's chDB engine (one per process).
func embeddedStore(tb testing.TB) *clickhouse.EmbeddedStore {
	tb.Helper()
	chdbOnce.Do(func() {
		lib := os.Getenv("CHDB_LIB_PATH")
		if lib == "" {
			lib = filepath.Join(clickhouse.DefaultChDBDir(), "node_modules/@chdb/lib-linux-x64-gnu/libchdb.so")
		}
		if _, err := os.Stat(lib); err != nil {
			chdbErr = fmt.Errorf("libchdb.so not found (go tool task setup, or set CHDB_LIB_PATH): %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "sextant-dashboards-chdb-")
		if err != nil {
			chdbErr = err
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		chdbStore, chdbErr = clickhouse.OpenEmbedded(context.Background(), clickhouse.EmbeddedConfig{Lib: lib, Dir: dir})
		if chdbErr == nil {
			cleanups = append(cleanups, func() { chdbStore.Close() })
		}
	})
	if chdbErr != nil {
		testbed.Missing(tb, "chDB: %v", chdbErr)
	}
	return chdbStore
}

var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	if *previewFlag && code == 0 {
		if err := writePreviews(); err != nil {
			fmt.Fprintln(os.Stderr, "preview:", err)
			code = 1
		}
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// The known flows, ten minutes ago (server side; each also seen from the
// client side, which the dashboard's observer=server must leave out):
//   - shop: /users/<n>: 40 × 200 in 10 ms, 10 × 500 in 20 ms, 1 reset;
//     from 10.0.0.1, 100 + 1000 body bytes each
//   - shop: /reports/<n>: 5 × 200 in 900 ms, from 10.0.0.2, 10 + 50 bytes
//   - helloworld.Greeter/SayHello: 12 × OK, 3 × UNAVAILABLE ("backend
//     down"), 2 request and 3 response messages each, from 10.0.0.2
const (
	knownUsersOK, knownUsers500, knownUsersReset = 40, 10, 1
	knownReports                                 = 5
	knownGRPCOK, knownGRPCUnavailable            = 12, 3
)

func knownFlows(t0 time.Time) []*flow.Flow {
	var out []*flow.Flow
	add := func(f *flow.Flow) {
		f.Time = t0.Add(time.Duration(len(out)/2) * 5 * time.Second) // one flow every 5 s: several minutes, several buckets
		f.Node, f.Protocol, f.Scheme = "node-a", "HTTP/2", "http"
		f.Destination = netip.MustParseAddrPort("10.0.1.1:8080")
		f.Process = flow.Process{PID: 42, Comm: "shop", Exe: "/usr/bin/shop"}
		f.ConnID, f.StreamID = uint64(len(out)/10), uint32(1+2*(len(out)%10))
		for _, side := range []flow.Side{flow.SideServer, flow.SideClient} {
			c := *f
			c.Observer = side
			out = append(out, &c)
		}
	}
	http := func(path string, status uint32, lat time.Duration, src string, req, resp uint64) *flow.Flow {
		return &flow.Flow{Method: "GET", Authority: "shop", Path: path, Status: status, Latency: lat, TTFB: lat / 2,
			Source: netip.MustParseAddrPort(src + ":40000"), RequestBytes: req, ResponseBytes: resp}
	}
	for i := range knownUsersOK {
		add(http(fmt.Sprintf("/users/%d", i), 200, 10*time.Millisecond, "10.0.0.1", 100, 1000))
	}
	for i := range knownUsers500 {
		f := http(fmt.Sprintf("/users/%d", 100+i), 500, 20*time.Millisecond, "10.0.0.1", 100, 1000)
		f.TraceParent = fmt.Sprintf("00-%032x-%016x-01", 1+i, 1+i)
		add(f)
	}
	for range knownUsersReset {
		f := http("/users/999", 0, 5*time.Millisecond, "10.0.0.1", 100, 0)
		f.Outcome, f.ResetCode, f.ResetBy = flow.OutcomeReset, 8, flow.SideClient
		add(f)
	}
	for i := range knownReports {
		add(http(fmt.Sprintf("/reports/%d", i), 200, 900*time.Millisecond, "10.0.0.2", 10, 50))
	}
	for i := range knownGRPCOK + knownGRPCUnavailable {
		st, msg := uint32(0), ""
		if i >= knownGRPCOK {
			st, msg = 14, "backend down"
		}
		f := http("/helloworld.Greeter/SayHello", 200, 30*time.Millisecond, "10.0.0.2", 20, 30)
		f.Method, f.Authority = "POST", "greeter:50051"
		f.GRPC = &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: &st, StatusSource: "trailers", Message: msg,
			RequestMessages: 2, ResponseMessages: 3}
		add(f)
	}
	// The agent's route stage names the route.
	router, err := route.New(nil, 0)
	if err != nil {
		panic(err)
	}
	for _, f := range out {
		router.Enrich(f)
	}
	return out
}

// writeFlows sends the flows through the real exporter into store, with a
// spool as the relay has one: a batch the store refuses once is replayed.
// (Belt and braces: see quietStdin.)
func writeFlows(t *testing.T, store clickhouse.Store, flows []*flow.Flow) {
	t.Helper()
	e, err := clickhouse.New(clickhouse.Config{FlushInterval: 50 * time.Millisecond, SpoolDir: t.TempDir(),
		RetryInterval: 100 * time.Millisecond, MaxRetryInterval: 200 * time.Millisecond}, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		e.Export(f)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.Stats().Written < uint64(len(flows)) && e.Stats().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s := e.Stats()
	if s.Written != uint64(len(flows)) || s.Dropped != 0 {
		t.Fatalf("exporter wrote %d of %d flows: %+v", s.Written, len(flows), s)
	}
	if s.Spooled != 0 {
		t.Logf("%d flows went through the spool (%s)", s.Spooled, s.LastError)
	}
}

// sqlVars are the dashboard variables of a query run.
type sqlVars struct {
	from, to       time.Time
	interval       time.Duration
	observer       string
	service, route string // '%' = All
}

var (
	timeFilterRe    = regexp.MustCompile(`\$__timeFilter\((\w+)\)`)
	timeIntervalRe  = regexp.MustCompile(`\$__timeInterval\((\w+)\)`)
	leftoverMacroRe = regexp.MustCompile(`\$\{?\w+`)
)

// expandSQL does what grafana-clickhouse-datasource does with the macros
// (v4: $__timeFilter(c) → c >= toDateTime(from) AND c <= toDateTime(to);
// $__timeInterval(c) → toStartOfInterval(toDateTime(c), INTERVAL n second))
// and Grafana with the variables.
func expandSQL(t *testing.T, sql string, v sqlVars) string {
	t.Helper()
	sql = timeFilterRe.ReplaceAllString(sql, fmt.Sprintf("$1 >= toDateTime(%d) AND $1 <= toDateTime(%d)", v.from.Unix(), v.to.Unix()))
	sql = timeIntervalRe.ReplaceAllString(sql, fmt.Sprintf("toStartOfInterval(toDateTime($1), INTERVAL %d second)", int(v.interval.Seconds())))
	sql = strings.ReplaceAll(sql, "$__interval_s", strconv.Itoa(int(v.interval.Seconds())))
	sql = strings.NewReplacer("${observer}", v.observer, "${service}", v.service, "${route}", v.route).Replace(sql)
	if m := leftoverMacroRe.FindString(sql); m != "" {
		t.Fatalf("unexpanded %s in\n%s", m, sql)
	}
	return sql
}

// result is a query result as strings, by column name.
type result struct {
	cols []string
	rows [][]string
}

func (tb result) col(name string) int {
	for i, c := range tb.cols {
		if c == name {
			return i
		}
	}
	return -1
}

func (tb result) num(t *testing.T, row int, col string) float64 {
	t.Helper()
	i := tb.col(col)
	if i < 0 || row >= len(tb.rows) {
		t.Fatalf("no row %d column %s in %v", row, col, tb.cols)
	}
	v, err := strconv.ParseFloat(tb.rows[row][i], 64)
	if err != nil {
		t.Fatalf("row %d column %s: %v", row, col, err)
	}
	return v
}

func (tb result) sum(t *testing.T, col string) float64 {
	var s float64
	for r := range tb.rows {
		s += tb.num(t, r, col)
	}
	return s
}

func runSQL(t *testing.T, store clickhouse.Store, sql string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := store.Query(ctx, sql, 0)
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	var tb result
	for _, c := range res.Columns {
		tb.cols = append(tb.cols, c.Name)
	}
	for _, r := range res.Rows {
		var row []string
		for _, v := range r {
			if v == nil {
				row = append(row, "")
				continue
			}
			row = append(row, fmt.Sprint(v))
		}
		tb.rows = append(tb.rows, row)
	}
	return tb
}

// sqlPanelResults keeps the results for the preview.
var sqlPanelResults = map[string]result{}

func TestFlowHistorySQLEmbedded(t *testing.T) {
	store := embeddedStore(t)
	t0 := time.Now().Add(-20 * time.Minute).Truncate(time.Minute)
	writeFlows(t, store, knownFlows(t0))
	checkFlowHistory(t, store, t0, true)
}

// checkFlowHistory runs every query of the dashboard and checks its rows
// against the known flows. record: keep the results for the preview.
func checkFlowHistory(t *testing.T, store clickhouse.Store, t0 time.Time, record bool) {
	d := FlowHistory()
	all := sqlVars{from: t0.Add(-time.Hour), to: t0.Add(time.Hour), interval: time.Minute, observer: "server", service: "%", route: "%"}
	serverRows := float64(knownUsersOK + knownUsers500 + knownUsersReset + knownReports + knownGRPCOK + knownGRPCUnavailable)
	failedRows := knownUsers500 + knownUsersReset + knownGRPCUnavailable

	for _, v := range d.Templating.List {
		if v.Datasource == nil {
			continue
		}
		got := runSQL(t, store, expandSQL(t, v.Query, all))
		var vals []string
		for _, r := range got.rows {
			vals = append(vals, r[0])
		}
		// gRPC flows are named by their gRPC service, not the authority.
		want := map[string]string{"service": "helloworld.Greeter shop", "route": "/helloworld.Greeter/SayHello /reports/{id} /users/{id}"}[v.Name]
		if strings.Join(vals, " ") != want {
			t.Errorf("variable %s: %q, want %q", v.Name, vals, want)
		}
	}

	for _, p := range d.Panels {
		tb := runSQL(t, store, expandSQL(t, p.Targets[0].RawSQL, all))
		if record {
			sqlPanelResults[p.Title] = tb
		}
		if len(tb.rows) == 0 {
			t.Errorf("%s: no rows", p.Title)
			continue
		}
		switch p.Title {
		case "Slowest routes":
			// /reports first (900 ms), then gRPC (30 ms), then /users.
			if len(tb.rows) != 3 || tb.rows[0][tb.col("route")] != "/reports/{id}" || tb.rows[2][tb.col("route")] != "/users/{id}" {
				t.Errorf("%s: %v", p.Title, tb.rows)
			}
			if p95 := tb.num(t, 0, "p95_ms"); p95 != 900 {
				t.Errorf("%s: /reports p95 %v ms, want 900", p.Title, p95)
			}
			if n, e := tb.num(t, 2, "requests"), tb.num(t, 2, "errors"); n != knownUsersOK+knownUsers500+knownUsersReset || e != knownUsers500+knownUsersReset {
				t.Errorf("%s: /users %v requests %v errors", p.Title, n, e)
			}
			if tb.sum(t, "requests") != serverRows {
				t.Errorf("%s: %v requests, want %v (server side only)", p.Title, tb.sum(t, "requests"), serverRows)
			}
		case "Errors over time":
			if a, b, c := tb.sum(t, "http_5xx"), tb.sum(t, "grpc_non_ok"), tb.sum(t, "incomplete"); a != knownUsers500 || b != knownGRPCUnavailable || c != knownUsersReset {
				t.Errorf("%s: 5xx %v, grpc %v, incomplete %v", p.Title, a, b, c)
			}
		case "Errors by status":
			if tb.sum(t, "requests") != float64(failedRows) || len(tb.rows) != 3 {
				t.Errorf("%s: %v", p.Title, tb.rows)
			}
			if tb.rows[0][tb.col("status")] != "500" || tb.num(t, 0, "requests") != knownUsers500 {
				t.Errorf("%s: first row %v, want the 500s", p.Title, tb.rows[0])
			}
		case "Recent failed requests":
			if len(tb.rows) != failedRows {
				t.Errorf("%s: %d rows, want %d", p.Title, len(tb.rows), failedRows)
			}
			// newest first: the gRPC failures were sent last
			if tb.rows[0][tb.col("grpc_message")] != "backend down" {
				t.Errorf("%s: first row %v", p.Title, tb.rows[0])
			}
		case "Top talkers":
			if tb.rows[0][tb.col("client")] != "10.0.0.1" || tb.num(t, 0, "bytes") != (knownUsersOK+knownUsers500)*1100+knownUsersReset*100 {
				t.Errorf("%s: %v", p.Title, tb.rows)
			}
		case "gRPC messages per interval":
			n := knownGRPCOK + knownGRPCUnavailable
			if a, b := tb.sum(t, "request_messages"), tb.sum(t, "response_messages"); a != float64(2*n) || b != float64(3*n) {
				t.Errorf("%s: %v request, %v response messages", p.Title, a, b)
			}
		case "Recent flows of the route":
			if float64(len(tb.rows)) != serverRows {
				t.Errorf("%s (all routes): %d rows", p.Title, len(tb.rows))
			}
			// the drill-down: one service and route
			one := all
			one.service, one.route = "shop", "/reports/{id}"
			got := runSQL(t, store, expandSQL(t, p.Targets[0].RawSQL, one))
			if len(got.rows) != knownReports || got.num(t, 0, "latency_ms") != 900 {
				t.Errorf("%s (/reports/{id}): %v", p.Title, got.rows)
			}
		default:
			t.Errorf("panel %q has no expectation", p.Title)
		}
	}
}
