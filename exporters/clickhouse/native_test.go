package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/testbed"
)

func rowsOf(tb testing.TB, flowsN int, t0 time.Time) []Row {
	var rows []Row
	for _, f := range testFlows(flowsN, t0) {
		rows = append(rows, rowOf(f))
	}
	return rows
}

func openNative(t *testing.T, srv *testbed.ClickHouse) *NativeStore {
	t.Helper()
	s, err := OpenNative(NativeConfig{Addr: srv.Addr(), Retention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// The wire path against the real 18.16 server: version detection, legacy
// DDL, every column written and read back exactly.
func TestNativeLegacyServer(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s := openNative(t, srv)
	if v := srv.SQL(t, "SELECT version()"); !strings.HasPrefix(v, "18.") {
		t.Fatalf("server version %s: this test is about the 18.x server", v)
	}
	if s.Dialect() != Legacy {
		t.Fatalf("dialect %v, want legacy for 18.16", s.Dialect())
	}
	ddl := srv.SQL(t, "SHOW CREATE TABLE sextant.flows")
	for _, want := range []string{"time DateTime(\\'UTC\\')", "time_ns UInt32", "`headers.name` Array(String)", "source_address String",
		"ReplacingMergeTree", "PARTITION BY toDate(time)", "ORDER BY (service, route, time, batch_id, batch_row)"} {
		if !strings.Contains(ddl, want) {
			t.Errorf("DDL lacks %q:\n%s", want, ddl)
		}
	}

	t0 := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	b := &Batch{ID: 42, Rows: rowsOf(t, 5000, t0)}
	if err := s.Insert(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT count() FROM sextant.flows"); got != "5000" {
		t.Fatalf("count %s, want 5000", got)
	}
	// Row 3 is a gRPC call with a status and a message; row 10 has a trace.
	got := srv.SQL(t, `SELECT time, time_ns, node, service, observer, protocol, method, authority, path, route, status,
		grpc_service, grpc_method, grpc_status, grpc_message, latency_ns, source_address, source_port, destination_address,
		destination_port, outcome, process_pid, process_comm, container_id, headers.value[indexOf(headers.name, 'x-request-id')],
		response_headers.name, unknown, conn_id, stream_id, grpc_request_messages
		FROM sextant.flows WHERE batch_id = 42 AND batch_row = 3 FORMAT TSV`)
	want := strings.Join([]string{"2026-11-25 12:00:00", "123459789", "node-0", "helloworld.Greeter", "server", "HTTP/2", "POST", "svc-3:8080",
		"/helloworld.Greeter/SayHello", "/helloworld.Greeter/SayHello", "200", "helloworld.Greeter", "SayHello", "3", `failed "quoted"\n`,
		"4000000", "10.0.3.4", "30003", "10.1.0.4", "8080", "complete", "103", "server", "c0ffee", "req-3", "['content-type']", "[]", "0", "7", "1"}, "\t")
	if got != want {
		t.Errorf("row 3:\n got %s\nwant %s", got, want)
	}
	if got := srv.SQL(t, "SELECT trace_id, route, grpc_status FROM sextant.flows WHERE batch_id = 42 AND batch_row = 10 FORMAT TSV"); got != fmt.Sprintf("%032x\t/users/{id}/orders\t\\N", 2) {
		t.Errorf("row 10: %s", got)
	}

	// Query returns the same through the store's own path.
	res, err := s.Query(context.Background(), "SELECT route, count() AS n FROM flows WHERE batch_id = 42 GROUP BY route ORDER BY n DESC, route", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Columns) != 2 || res.Columns[1].Type != "UInt64" || len(res.Rows) != 2 {
		t.Fatalf("result %+v", res)
	}
	if res.Rows[0][0] != "/users/{id}/orders" || fmt.Sprint(res.Rows[0][1]) != "3333" {
		t.Errorf("first row %v", res.Rows[0])
	}
	if _, err := s.Query(context.Background(), "DROP TABLE flows", 0); err == nil {
		t.Error("DROP TABLE went through the query path")
	}
}

// A batch whose insert failed ambiguously is not written twice: the replay
// check finds it.
func TestNativeReplayIsIdempotent(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s := openNative(t, srv)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 23, 59, 59, 999000000, time.UTC) // the batch spans two days (partitions)
	b := &Batch{ID: 7, Rows: rowsOf(t, 3000, t0)}
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Attempted = true
	if err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT count(), uniqExact(batch_row), uniqExact(toDate(time)) FROM sextant.flows FORMAT TSV"); got != "3000\t3000\t2" {
		t.Fatalf("after replay: %s, want 3000 rows once over 2 days", got)
	}
	// Attempted but never written: written now.
	b2 := &Batch{ID: 8, Rows: rowsOf(t, 10, t0), Attempted: true}
	if err := s.Insert(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT count() FROM sextant.flows"); got != "3010" {
		t.Fatalf("count %s, want 3010", got)
	}
}

// Migrations run in order, are recorded, survive an interrupted step and
// keep existing rows.
func TestNativeMigration(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s, err := OpenNative(NativeConfig{Addr: srv.Addr(), Database: "migr"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := migrate(ctx, s, "migr", Legacy, 0, 1); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT count() FROM system.columns WHERE database = 'migr' AND table = 'flows' AND name = 'conn_id'"); got != "0" {
		t.Fatal("version 1 has conn_id")
	}
	srv.SQL(t, "INSERT INTO migr.flows (time, service, route, batch_id) VALUES ('2026-11-25 10:00:00', 'old', '/r', 1)")
	// A version 2 step that ran before a crash, unrecorded.
	srv.SQL(t, "ALTER TABLE migr.flows ADD COLUMN conn_id UInt64")

	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT groupArray(version) FROM (SELECT version FROM migr.schema_version ORDER BY version)"); got != "[1,2,3]" {
		t.Fatalf("schema versions %s", got)
	}
	for _, c := range columns {
		if c.version >= 2 {
			if got := srv.SQL(t, "SELECT type FROM system.columns WHERE database = 'migr' AND table = 'flows' AND name = '"+c.name+"'"); got != c.legacy {
				t.Errorf("column %s: type %q, want %q", c.name, got, c.legacy)
			}
		}
	}
	if got := srv.SQL(t, "SELECT service, conn_id, kind, verdict, length(ingress_allowed_by) FROM migr.flows FORMAT TSV"); got != "old\t0\t\t\t0" {
		t.Errorf("old row: %s", got)
	}
	// Idempotent: a second store migrates nothing.
	s2, err := OpenNative(NativeConfig{Addr: srv.Addr(), Database: "migr"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.SQL(t, "SELECT count() FROM migr.schema_version"); got != "3" {
		t.Errorf("schema_version rows %s, want 3", got)
	}
}

func TestDialectOf(t *testing.T) {
	for v, want := range map[string]Dialect{"18.16.1": Legacy, "21.8.15.7": Legacy, "22.3.2.1": Modern, "24.8.4.13": Modern, "26.7.1": Modern} {
		if got, err := DialectOf(v); err != nil || got != want {
			t.Errorf("DialectOf(%s) = %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := DialectOf("garbage"); err == nil {
		t.Error("garbage version accepted")
	}
}
