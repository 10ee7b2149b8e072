package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func queryStrings(t *testing.T, s *EmbeddedStore, sql string) [][]string {
	t.Helper()
	res, err := s.query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out := make([][]string, len(res.Rows))
	for i, r := range res.Rows {
		for _, v := range r {
			switch x := v.(type) {
			case string:
				out[i] = append(out[i], x)
			default:
				b, _ := json.Marshal(x)
				out[i] = append(out[i], string(b))
			}
		}
	}
	return out
}

// The modern DDL on the modern engine: every modern type and clause, and
// every column written and read back.
func TestEmbeddedModernTable(t *testing.T) {
	s := embedded(t)
	ddl := queryStrings(t, s, "SHOW CREATE TABLE sextant.flows")[0][0]
	for _, want := range []string{"`time` DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1))", "`headers` Map(LowCardinality(String), String)",
		"`source_address` IPv6", "`node` LowCardinality(String)", "INDEX trace_id_idx trace_id TYPE bloom_filter",
		"ENGINE = ReplacingMergeTree", "PARTITION BY toDate(time)", "PRIMARY KEY (service, route, time)",
		"ORDER BY (service, route, time, batch_id, batch_row)", "TTL toDateTime(time) + toIntervalSecond(2592000)"} {
		if !strings.Contains(ddl, want) {
			t.Errorf("DDL lacks %q:\n%s", want, ddl)
		}
	}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	ctx := context.Background()
	if err := s.Insert(ctx, &Batch{ID: 42, Rows: rowsOf(t, 5000, t0)}); err != nil {
		t.Fatal(err)
	}
	got := queryStrings(t, s, `SELECT toString(time), node, service, observer, protocol, method, authority, path, route, status,
		grpc_service, grpc_method, grpc_status, grpc_message, latency_ns, toString(source_address), source_port,
		toString(destination_address), destination_port, outcome, process_pid, process_comm, container_id,
		headers['x-request-id'], mapKeys(response_headers), unknown, conn_id, stream_id, grpc_request_messages
		FROM sextant.flows WHERE batch_id = 42 AND batch_row = 3`)
	want := []string{"2026-11-25 12:00:00.123459789", "node-0", "helloworld.Greeter", "server", "HTTP/2", "POST", "svc-3:8080",
		"/helloworld.Greeter/SayHello", "/helloworld.Greeter/SayHello", "200", "helloworld.Greeter", "SayHello", "3", "failed \"quoted\"\n",
		"4000000", "::ffff:10.0.3.4", "30003", "::ffff:10.1.0.4", "8080", "complete", "103", "server", "c0ffee", "req-3",
		`["content-type"]`, "[]", "0", "7", "1"}
	if len(got) != 1 || strings.Join(got[0], "|") != strings.Join(want, "|") {
		t.Errorf("row 3:\n got %q\nwant %q", got, want)
	}
	if got := queryStrings(t, s, "SELECT count(), countIf(trace_id != ''), countIf(grpc_status IS NULL) FROM sextant.flows"); fmt.Sprint(got) != "[[5000 500 3333]]" {
		t.Errorf("counts %v", got)
	}
	// Replay of a written batch adds nothing.
	if err := s.Insert(ctx, &Batch{ID: 42, Rows: rowsOf(t, 5000, t0), Attempted: true}); err != nil {
		t.Fatal(err)
	}
	if got := queryStrings(t, s, "SELECT count() FROM sextant.flows"); got[0][0] != "5000" {
		t.Errorf("after replay: %v rows", got)
	}
}

func TestEmbeddedMigration(t *testing.T) {
	shared := embedded(t)
	ctx := context.Background()
	s, err := newEmbedded(ctx, shared.conn, EmbeddedConfig{Database: "migr_embedded"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := queryStrings(t, s, "SELECT count() FROM system.columns WHERE database = 'migr_embedded' AND table = 'flows' AND name = 'conn_id'"); got[0][0] != "0" {
		t.Fatal("version 1 has conn_id")
	}
	if err := s.exec(ctx, "INSERT INTO migr_embedded.flows (time, service, route, batch_id) VALUES ('2026-11-25 10:00:00', 'old', '/r', 1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := newEmbedded(ctx, shared.conn, EmbeddedConfig{Database: "migr_embedded"}, SchemaVersion); err != nil {
		t.Fatal(err)
	}
	if got := queryStrings(t, s, "SELECT groupArray(version) FROM (SELECT version FROM migr_embedded.schema_version ORDER BY version)"); got[0][0] != "[1,2,3]" {
		t.Fatalf("versions %v", got)
	}
	if got := queryStrings(t, s, "SELECT service, conn_id, grpc_response_messages, kind, length(ingress_denied_by) FROM migr_embedded.flows"); fmt.Sprint(got) != "[[old 0 0  0]]" {
		t.Errorf("old row: %v", got)
	}
	if err := s.exec(ctx, "DROP DATABASE migr_embedded"); err != nil {
		t.Fatal(err)
	}
}

// The exporter over the embedded store: every exported flow is in SQL.
func TestEmbeddedExporter(t *testing.T) {
	s := embedded(t)
	e, err := New(Config{BatchSize: 1000, QueueBatches: 16, FlushInterval: 50 * time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range testFlows(12345, time.Now()) {
		e.Export(f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if st.Written != 12345 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := queryStrings(t, s, "SELECT count(), uniqExact(headers['x-request-id']) FROM flows"); fmt.Sprint(got) != "[[12345 12345]]" {
		t.Errorf("count, distinct requests: %v", got)
	}
}
