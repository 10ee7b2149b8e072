package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// EmbeddedConfig configures the embedded engine.
type EmbeddedConfig struct {
	// Lib is the path of libchdb.so (EnsureChDB returns it).
	Lib string
	// Dir holds the engine's data; it survives restarts.
	Dir       string
	Database  string        // default "sextant"
	Retention time.Duration // TTL of flows (0: keep forever)
	// QueryLimits bound every statement Query runs (zero fields: defaults).
	QueryLimits QueryLimits

	// grantDatabases are more databases the engine user may change
	// (tests migrate a second database on the same engine).
	grantDatabases []string
}

// EmbeddedStore keeps flows in chDB, a ClickHouse engine inside the
// process: the same modern flows table as a current server, no server to
// run. One per process.
type EmbeddedStore struct {
	cfg     EmbeddedConfig
	conn    *chdbConn
	owner   bool // Close stops the engine
	insert  string
	skipped atomic.Uint64 // replayed parts found already written
	policy  *policy       // what user statements may reach
}

// OpenEmbedded starts chDB on cfg.Dir and migrates the schema. The engine
// runs as a user that may change only the flows database (see
// engineConfig): no files, URLs, remote servers or other sources.
func OpenEmbedded(ctx context.Context, cfg EmbeddedConfig) (*EmbeddedStore, error) {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	configFile, err := writeEngineConfig(cfg.Dir, append([]string{cfg.Database}, cfg.grantDatabases...))
	if err != nil {
		return nil, err
	}
	conn, err := openChDB(cfg.Lib, cfg.Dir, "--config-file="+configFile)
	if err != nil {
		return nil, err
	}
	s, err := newEmbedded(ctx, conn, cfg, SchemaVersion)
	if err != nil {
		conn.close()
		return nil, err
	}
	s.owner = true
	// Queries name the table plainly; 64-bit integers as JSON numbers.
	for _, stmt := range []string{"USE " + s.cfg.Database, "SET output_format_json_quote_64bit_integers = 0"} {
		if err := s.exec(ctx, stmt); err != nil {
			conn.close()
			return nil, fmt.Errorf("chDB %s: %w", cfg.Dir, err)
		}
	}
	if s.policy, err = loadPolicy(ctx, s, s.cfg.Database, Modern); err != nil {
		conn.close()
		return nil, fmt.Errorf("chDB %s: %w", cfg.Dir, err)
	}
	return s, nil
}

// newEmbedded migrates cfg.Database on conn to schema version target.
func newEmbedded(ctx context.Context, conn *chdbConn, cfg EmbeddedConfig, target int) (*EmbeddedStore, error) {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if !validDatabase(cfg.Database) {
		return nil, fmt.Errorf("chDB: database name %q: want letters, digits and _", cfg.Database)
	}
	s := &EmbeddedStore{cfg: cfg, conn: conn}
	if err := migrate(ctx, s, cfg.Database, Modern, cfg.Retention, target); err != nil {
		return nil, fmt.Errorf("chDB %s: %w", cfg.Dir, err)
	}
	s.insert = fmt.Sprintf("INSERT INTO %s.flows (%s) FORMAT JSONEachRow\n", cfg.Database, strings.Join(insertColumns(Modern), ", "))
	return s, nil
}

func (s *EmbeddedStore) Dialect() Dialect { return Modern }

func (s *EmbeddedStore) exec(_ context.Context, sql string) error {
	_, err := s.conn.query(sql, "TabSeparated")
	return err
}

func (s *EmbeddedStore) query(_ context.Context, sql string) (*Result, error) {
	out, err := s.conn.query(sql, "JSONCompact")
	if err != nil {
		return nil, err
	}
	return decodeJSONCompact(out)
}

// Query runs one user statement in the sandbox: the engine's parser
// admits it (layer 1, sandbox.go), then it runs read-only within
// QueryLimits (layer 2). At most maxRows rows are returned (0:
// DefaultMaxRows), with Truncated set when there were more.
func (s *EmbeddedStore) Query(ctx context.Context, sql string, maxRows int) (*Result, error) {
	stmt, err := s.policy.checkWithEngine(ctx, s, sql)
	if err != nil {
		return nil, err
	}
	maxRows = clampRows(maxRows)
	lim := s.cfg.QueryLimits.withDefaults()
	// readonly=1 last: the engine then refuses table functions other than
	// row generators, writes, and any later change of a setting.
	settings := fmt.Sprintf("\nSETTINGS max_execution_time = %s, max_memory_usage = %d, max_result_rows = %d, result_overflow_mode = 'break', allow_introspection_functions = 0, readonly = 1",
		lim.executionTime(ctx), lim.MaxMemoryUsage, maxRows+1)
	out, err := s.conn.query(stmt+settings, "JSONCompact")
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > lim.MaxResultBytes {
		return nil, fmt.Errorf("result of %d bytes exceeds %d: select fewer rows or columns", len(out), lim.MaxResultBytes)
	}
	res, err := decodeJSONCompact(out)
	if err != nil {
		return nil, err
	}
	res.truncate(maxRows)
	return res, nil
}

func decodeJSONCompact(out []byte) (*Result, error) {
	res := &Result{Columns: []ResultColumn{}, Rows: [][]any{}}
	if len(bytes.TrimSpace(out)) == 0 {
		return res, nil // statements without a result set
	}
	var doc struct {
		Meta []ResultColumn `json:"meta"`
		Data [][]any        `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode chDB result: %w", err)
	}
	if dec.More() { // never the answer of one statement (see chdbConn.flush)
		return nil, errors.New("decode chDB result: more than one answer")
	}
	res.Columns = doc.Meta
	if doc.Data != nil {
		res.Rows = doc.Data
	}
	return res, nil
}

// Insert writes b, one INSERT … FORMAT JSONEachRow (one part) per day.
func (s *EmbeddedStore) Insert(ctx context.Context, b *Batch) error {
	days, groups := splitByDay(b.Rows)
	var done map[string]int64
	if b.Attempted {
		var err error
		if done, err = committedCounts(ctx, s, s.cfg.Database, b.ID, days); err != nil {
			return fmt.Errorf("batch %d: replay check: %w", b.ID, err)
		}
	}
	buf := make([]byte, 0, len(s.insert)+len(b.Rows)*768)
	for _, d := range days {
		idx := groups[d]
		if n := done[d]; n > 0 {
			if n == int64(len(idx)) {
				s.skipped.Add(1)
				continue
			}
			return fmt.Errorf("batch %d day %s: %d of %d rows already present", b.ID, d, n, len(idx))
		}
		buf = append(buf[:0], s.insert...)
		for _, j := range idx {
			buf = appendRowJSON(buf, &b.Rows[j], b.ID, uint32(j))
			buf = append(buf, '\n')
		}
		if _, err := s.conn.query(string(buf), "TabSeparated"); err != nil {
			return fmt.Errorf("batch %d: %w", b.ID, err)
		}
	}
	return nil
}

// Close stops the engine.
func (s *EmbeddedStore) Close() error {
	if s.owner {
		s.conn.close()
	}
	return nil
}

// appendRowJSON writes one JSONEachRow object with the modern columns.
func appendRowJSON(b []byte, r *Row, batchID uint64, batchRow uint32) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.UTC().AppendFormat(b, "2006-01-02 15:04:05.000000000")
	b = append(b, '"')
	str := func(name, v string) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		b = appendJSONString(b, v)
	}
	num := func(name string, v uint64) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, v, 10)
	}
	headers := func(name string, h Headers) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":{`...)
		for i, n := range h.Names {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, n)
			b = append(b, ':')
			b = appendJSONString(b, h.Values[i])
		}
		b = append(b, '}')
	}
	array := func(name string, vs []string) {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":[`...)
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
		}
		b = append(b, ']')
	}
	str("node", r.Node)
	str("service", r.Service)
	str("observer", r.Observer)
	str("protocol", r.Protocol)
	str("method", r.Method)
	str("scheme", r.Scheme)
	str("authority", r.Authority)
	str("path", r.Path)
	str("route", r.Route)
	num("status", uint64(r.Status))
	str("grpc_service", r.GRPCService)
	str("grpc_method", r.GRPCMethod)
	if r.GRPCStatus != nil {
		num("grpc_status", uint64(*r.GRPCStatus))
	} else {
		b = append(b, `,"grpc_status":null`...)
	}
	str("grpc_message", r.GRPCMessage)
	num("latency_ns", r.LatencyNs)
	num("ttfb_ns", r.TTFBNs)
	num("request_bytes", r.RequestBytes)
	num("response_bytes", r.ResponseBytes)
	str("source_address", ipv6(r.SourceAddress).String())
	num("source_port", uint64(r.SourcePort))
	str("destination_address", ipv6(r.DestinationAddress).String())
	num("destination_port", uint64(r.DestinationPort))
	str("outcome", r.Outcome)
	num("process_pid", uint64(r.ProcessPID))
	str("process_comm", r.ProcessComm)
	str("process_exe", r.ProcessExe)
	str("container_id", r.ContainerID)
	str("cgroup", r.Cgroup)
	str("trace_id", r.TraceID)
	headers("headers", r.Headers)
	headers("response_headers", r.ResponseHeaders)
	array("unknown", r.Unknown)
	num("batch_id", batchID)
	num("batch_row", uint64(batchRow))
	num("conn_id", r.ConnID)
	num("stream_id", uint64(r.StreamID))
	num("reset_code", uint64(r.ResetCode))
	num("grpc_request_messages", uint64(r.GRPCRequestMessages))
	num("grpc_response_messages", uint64(r.GRPCResponseMessages))
	p := &r.Policy
	str("kind", p.Kind)
	str("verdict", p.Verdict)
	str("drop_reason", p.DropReason)
	num("policy_match_type", uint64(p.MatchType))
	str("traffic_direction", p.Direction)
	num("ip_protocol", uint64(p.IPProtocol))
	num("source_identity", uint64(p.SourceIdentity))
	num("destination_identity", uint64(p.DestinationIdentity))
	str("source_endpoint", p.SourceEndpoint)
	str("destination_endpoint", p.DestinationEndpoint)
	array("source_labels", p.SourceLabels)
	array("destination_labels", p.DestinationLabels)
	array("ingress_allowed_by", p.IngressAllowedBy)
	array("ingress_denied_by", p.IngressDeniedBy)
	array("egress_allowed_by", p.EgressAllowedBy)
	array("egress_denied_by", p.EgressDeniedBy)
	num("policy_revision", p.Revision)
	str("policy_hook", p.Hook)
	num("decisions", uint64(p.Decisions))
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string; invalid UTF-8 becomes U+FFFD
// (header values are bytes from the wire).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
