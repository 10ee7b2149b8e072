package clickhouse

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Dialect is the set of column types and table features a server offers.
// sextant writes the same flows table everywhere; only the types degrade on
// servers that lack the modern ones.
type Dialect uint8

const (
	// Modern: ClickHouse ≥ 22.3 (and chDB): DateTime64(9), LowCardinality,
	// Map, IPv6, codecs, TTL and skip indexes, all without experimental
	// settings.
	Modern Dialect = iota
	// Legacy: older servers such as the 18.16 that Debian packages: DateTime
	// plus a nanosecond column, String instead of LowCardinality and IPv6,
	// Nested arrays instead of Map, no codecs, TTL or skip indexes.
	Legacy
)

func (d Dialect) String() string {
	if d == Legacy {
		return "legacy"
	}
	return "modern"
}

// DialectOf picks the dialect for a server version as returned by
// SELECT version(), e.g. "18.16.1" or "24.8.4.13".
func DialectOf(version string) (Dialect, error) {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return Legacy, fmt.Errorf("server version %q: want major.minor", version)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return Legacy, fmt.Errorf("server version %q: want major.minor", version)
	}
	// 22.3 is the first LTS where every type and clause of the modern
	// table is generally available (Map left experimental in 21.x).
	if major > 22 || major == 22 && minor >= 3 {
		return Modern, nil
	}
	return Legacy, nil
}

// column is one column of the flows table.
type column struct {
	name    string
	modern  string // type (with codec) on modern servers
	legacy  string // type on legacy servers; "" when the column is modern-only
	version int    // schema version that added it
}

// Columns of the flows table, in table order. The insert column lists are
// derived from it, so DDL and inserts cannot disagree.
var columns = []column{
	{"time", "DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1))", "DateTime('UTC')", 1},
	{"time_ns", "", "UInt32", 1}, // legacy only: nanoseconds within the second
	{"node", "LowCardinality(String)", "String", 1},
	{"service", "LowCardinality(String)", "String", 1},
	{"observer", "LowCardinality(String)", "String", 1},
	{"protocol", "LowCardinality(String)", "String", 1},
	{"method", "LowCardinality(String)", "String", 1},
	{"scheme", "LowCardinality(String)", "String", 1},
	{"authority", "LowCardinality(String)", "String", 1},
	{"path", "String CODEC(ZSTD(1))", "String", 1},
	{"route", "LowCardinality(String)", "String", 1},
	{"status", "UInt16", "UInt16", 1},
	{"grpc_service", "LowCardinality(String)", "String", 1},
	{"grpc_method", "LowCardinality(String)", "String", 1},
	{"grpc_status", "Nullable(UInt32)", "Nullable(UInt32)", 1},
	{"grpc_message", "String CODEC(ZSTD(1))", "String", 1},
	{"latency_ns", "UInt64 CODEC(T64, ZSTD(1))", "UInt64", 1},
	{"ttfb_ns", "UInt64 CODEC(T64, ZSTD(1))", "UInt64", 1},
	{"request_bytes", "UInt64 CODEC(T64, ZSTD(1))", "UInt64", 1},
	{"response_bytes", "UInt64 CODEC(T64, ZSTD(1))", "UInt64", 1},
	{"source_address", "IPv6", "String", 1},
	{"source_port", "UInt16", "UInt16", 1},
	{"destination_address", "IPv6", "String", 1},
	{"destination_port", "UInt16", "UInt16", 1},
	{"outcome", "LowCardinality(String)", "String", 1},
	{"process_pid", "UInt32", "UInt32", 1},
	{"process_comm", "LowCardinality(String)", "String", 1},
	{"process_exe", "LowCardinality(String)", "String", 1},
	{"container_id", "LowCardinality(String)", "String", 1},
	{"cgroup", "LowCardinality(String)", "String", 1},
	{"trace_id", "String CODEC(ZSTD(1))", "String", 1},
	// Legacy servers have no Map: a Nested column is two parallel arrays,
	// headers.name and headers.value.
	{"headers", "Map(LowCardinality(String), String) CODEC(ZSTD(1))", "Nested(name String, value String)", 1},
	{"response_headers", "Map(LowCardinality(String), String) CODEC(ZSTD(1))", "Nested(name String, value String)", 1},
	{"unknown", "Array(LowCardinality(String))", "Array(String)", 1},
	{"batch_id", "UInt64", "UInt64", 1},
	{"batch_row", "UInt32", "UInt32", 1},
	// Version 2: connection identity and gRPC message counts.
	{"conn_id", "UInt64", "UInt64", 2},
	{"stream_id", "UInt32", "UInt32", 2},
	{"reset_code", "UInt32", "UInt32", 2},
	{"grpc_request_messages", "UInt32", "UInt32", 2},
	{"grpc_response_messages", "UInt32", "UInt32", 2},
	// Version 3: policy verdicts (rows of kind 'policy-verdict') and the
	// policy view of exchanges.
	{"kind", "LowCardinality(String)", "String", 3},
	{"verdict", "LowCardinality(String)", "String", 3},
	{"drop_reason", "LowCardinality(String)", "String", 3},
	{"policy_match_type", "UInt8", "UInt8", 3},
	{"traffic_direction", "LowCardinality(String)", "String", 3},
	{"ip_protocol", "UInt8", "UInt8", 3},
	{"source_identity", "UInt32", "UInt32", 3},
	{"destination_identity", "UInt32", "UInt32", 3},
	{"source_endpoint", "LowCardinality(String)", "String", 3},
	{"destination_endpoint", "LowCardinality(String)", "String", 3},
	{"source_labels", "Array(LowCardinality(String))", "Array(String)", 3},
	{"destination_labels", "Array(LowCardinality(String))", "Array(String)", 3},
	{"ingress_allowed_by", "Array(LowCardinality(String))", "Array(String)", 3},
	{"ingress_denied_by", "Array(LowCardinality(String))", "Array(String)", 3},
	{"egress_allowed_by", "Array(LowCardinality(String))", "Array(String)", 3},
	{"egress_denied_by", "Array(LowCardinality(String))", "Array(String)", 3},
	{"policy_revision", "UInt64", "UInt64", 3},
	{"policy_hook", "LowCardinality(String)", "String", 3},
	{"decisions", "UInt32", "UInt32", 3},
}

// SchemaVersion is the version of the flows table this build writes.
const SchemaVersion = 3

// typeOf returns the column's type in d ("" when it has none there).
func (c column) typeOf(d Dialect) string {
	if d == Legacy {
		return c.legacy
	}
	return c.modern
}

// insertColumns lists the columns an insert names, in order. Nested
// columns are named by their arrays.
func insertColumns(d Dialect) []string {
	var names []string
	for _, c := range columns {
		t := c.typeOf(d)
		switch {
		case t == "":
		case strings.HasPrefix(t, "Nested("):
			names = append(names, c.name+".name", c.name+".value")
		default:
			names = append(names, c.name)
		}
	}
	return names
}

// migration is one step of the schema history; statements run in order.
type migration struct {
	version int
	stmts   func(db string, d Dialect, retention time.Duration) []string
}

var migrations = []migration{
	{1, createFlows},
	{2, addColumns(2)},
	{3, addColumns(3)},
}

// addColumns is the step that adds the columns of a version.
func addColumns(version int) func(db string, d Dialect, _ time.Duration) []string {
	return func(db string, d Dialect, _ time.Duration) []string {
		var stmts []string
		for _, c := range columns {
			if c.version == version && c.typeOf(d) != "" {
				// Legacy servers have no ADD COLUMN IF NOT EXISTS: migrate
				// skips columns that already exist (a step interrupted
				// before its version was recorded).
				stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.flows ADD COLUMN %s %s", db, c.name, c.typeOf(d)))
			}
		}
		return stmts
	}
}

// createFlows is version 1: the flows table as it was first shipped.
func createFlows(db string, d Dialect, retention time.Duration) []string {
	var cols []string
	for _, c := range columns {
		if c.version == 1 && c.typeOf(d) != "" {
			cols = append(cols, fmt.Sprintf("    %s %s", c.name, c.typeOf(d)))
		}
	}
	if d == Modern {
		// Skip indexes for the lookups that are not on the sort key: one
		// trace, errors, slow requests, and one batch (replay check).
		cols = append(cols,
			"    INDEX trace_id_idx trace_id TYPE bloom_filter(0.01) GRANULARITY 4",
			"    INDEX status_idx status TYPE minmax GRANULARITY 4",
			"    INDEX latency_idx latency_ns TYPE minmax GRANULARITY 4",
			"    INDEX batch_idx batch_id TYPE bloom_filter(0.01) GRANULARITY 4",
		)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s.flows (\n%s\n)\n", db, strings.Join(cols, ",\n"))
	// ReplacingMergeTree keyed on (batch_id, batch_row) at the end of the
	// sort key: a batch row written twice is one row after merges. The
	// exporter avoids writing it twice in the first place (see Committed).
	b.WriteString("ENGINE = ReplacingMergeTree\n")
	b.WriteString("PARTITION BY toDate(time)\n")
	// Service and route first: the queries people run pick a service (and
	// often a route) and a time range.
	b.WriteString("PRIMARY KEY (service, route, time)\n")
	b.WriteString("ORDER BY (service, route, time, batch_id, batch_row)")
	if d == Modern && retention > 0 {
		fmt.Fprintf(&b, "\nTTL toDateTime(time) + INTERVAL %d SECOND DELETE", int64(retention/time.Second))
	}
	return []string{b.String()}
}

// versionTable records applied schema versions, one row per migration.
func versionTable(db string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.schema_version (version UInt32, applied_at DateTime('UTC'), by String) ENGINE = MergeTree ORDER BY version", db)
}

// alterColumnName returns the column an ALTER … ADD COLUMN statement adds.
func alterColumnName(stmt string) (string, bool) {
	_, rest, ok := strings.Cut(stmt, " ADD COLUMN ")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, " ")
	return name, true
}
