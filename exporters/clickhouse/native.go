package clickhouse

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
)

// NativeConfig says how to reach a ClickHouse server.
type NativeConfig struct {
	Addr     string // host:port of the native protocol (9000)
	Database string // default "sextant"
	Username string // default "default"
	Password string
	TLS      *tls.Config
	// Retention is the TTL of flows on modern servers (0: keep forever).
	// Legacy servers have no TTL: drop old partitions yourself (see
	// docs/clickhouse.md).
	Retention time.Duration
	// QueryUser runs the statements of Query: a user with the restricted
	// profile of docs/clickhouse.md (readonly=1, limits, only the flows
	// database). Empty: Username, with readonly=1 and QueryLimits sent as
	// settings of each statement (the server still lets that user read
	// every database: configure a query user).
	QueryUser     string
	QueryPassword string
	QueryLimits   QueryLimits
}

// NativeStore writes to a ClickHouse server over the native protocol with
// LZ4 compression. It connects lazily: until the server answers, Insert
// fails (and the exporter spools); the first success detects the server
// version and migrates the schema.
type NativeStore struct {
	cfg   NativeConfig
	opts  clickhouse.Options
	conn  driver.Conn // default database: statements name the flows database
	qconn driver.Conn // default database is the flows database, for Query

	skipped atomic.Uint64 // replayed parts found already written

	mu      sync.Mutex
	ready   bool
	dialect Dialect
	insert  string  // INSERT … (columns) for the dialect
	policy  *policy // what user statements may reach
	parser  bool    // the server has formatQuery and EXPLAIN AST
}

// OpenNative returns a store for the server at cfg.Addr; it does not wait
// for the server (see NativeStore).
func OpenNative(cfg NativeConfig) (*NativeStore, error) {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.Username == "" {
		cfg.Username = "default"
	}
	if cfg.Addr == "" {
		return nil, errors.New("clickhouse: no server address")
	}
	opts := clickhouse.Options{
		Addr: []string{cfg.Addr},
		// The flows database may not exist yet: migrate creates it, and
		// every statement names it.
		Auth:        clickhouse.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password},
		TLS:         cfg.TLS,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 60 * time.Second,
		ClientInfo: clickhouse.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: "sextant", Version: fmt.Sprint(SchemaVersion)},
		}},
		MaxOpenConns: 4,
		MaxIdleConns: 2,
	}
	conn, err := clickhouse.Open(&opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", cfg.Addr, err)
	}
	return &NativeStore{cfg: cfg, opts: opts, conn: conn}, nil
}

// Ready connects, detects the server version and migrates the schema once.
func (s *NativeStore) Ready(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyLocked(ctx)
}

func (s *NativeStore) readyLocked(ctx context.Context) error {
	if s.ready {
		return nil
	}
	var version string
	if err := s.conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
	}
	d, err := DialectOf(version)
	if err != nil {
		return err
	}
	if err := migrate(ctx, s, s.cfg.Database, d, s.cfg.Retention, SchemaVersion); err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
	}
	p, err := loadPolicy(ctx, s, s.cfg.Database, d)
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
	}
	// formatQuery came after EXPLAIN AST (23.x); servers without it get
	// the token check.
	hasFormat, err := queryInt(ctx, s, "SELECT toString(count()) FROM system.functions WHERE name = 'formatQuery'")
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
	}
	qopts := s.opts
	qopts.Auth.Database = s.cfg.Database
	if s.cfg.QueryUser != "" {
		qopts.Auth.Username, qopts.Auth.Password = s.cfg.QueryUser, s.cfg.QueryPassword
	}
	qconn, err := clickhouse.Open(&qopts)
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
	}
	s.qconn = qconn
	s.policy, s.parser = p, hasFormat > 0
	s.dialect = d
	s.insert = fmt.Sprintf("INSERT INTO %s.flows (%s)", s.cfg.Database, strings.Join(insertColumns(d), ", "))
	s.ready = true
	return nil
}

// Dialect is the server's dialect (Modern until Ready succeeded).
func (s *NativeStore) Dialect() Dialect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dialect
}

func (s *NativeStore) exec(ctx context.Context, sql string) error {
	return s.conn.Exec(ctx, sql)
}

// Insert writes b, one INSERT (one part, atomic) per day partition.
func (s *NativeStore) Insert(ctx context.Context, b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.readyLocked(ctx); err != nil {
		return err
	}
	days, groups := splitByDay(b.Rows)
	var done map[string]int64
	if b.Attempted {
		var err error
		if done, err = committedCounts(ctx, s, s.cfg.Database, b.ID, days); err != nil {
			return fmt.Errorf("batch %d: replay check: %w", b.ID, err)
		}
	}
	for _, d := range days {
		idx := groups[d]
		if n := done[d]; n > 0 {
			if n == int64(len(idx)) {
				s.skipped.Add(1)
				continue // written before the failure was seen
			}
			// A part is written whole or not at all; a partial count
			// means rows of this batch id were written by something else.
			return fmt.Errorf("batch %d day %s: %d of %d rows already present", b.ID, d, n, len(idx))
		}
		if err := s.insertRows(ctx, b, idx); err != nil {
			return fmt.Errorf("batch %d: %w", b.ID, err)
		}
	}
	return nil
}

func (s *NativeStore) insertRows(ctx context.Context, b *Batch, idx []int) error {
	batch, err := s.conn.PrepareBatch(ctx, s.insert)
	if err != nil {
		return err
	}
	defer batch.Abort()
	cols := nativeColumns(s.dialect, b, idx)
	for i, c := range cols {
		if err := batch.Column(i).Append(c); err != nil {
			return &refusedError{fmt.Errorf("column %s: %w", insertColumns(s.dialect)[i], err)}
		}
	}
	return batch.Send()
}

// nativeColumns builds one typed slice per insert column.
func nativeColumns(d Dialect, b *Batch, idx []int) []any {
	n := len(idx)
	rows := b.Rows
	strs := func(get func(*Row) string) []string {
		out := make([]string, n)
		for i, j := range idx {
			out[i] = get(&rows[j])
		}
		return out
	}
	u16 := func(get func(*Row) uint16) []uint16 {
		out := make([]uint16, n)
		for i, j := range idx {
			out[i] = get(&rows[j])
		}
		return out
	}
	u32 := func(get func(*Row) uint32) []uint32 {
		out := make([]uint32, n)
		for i, j := range idx {
			out[i] = get(&rows[j])
		}
		return out
	}
	u64 := func(get func(*Row) uint64) []uint64 {
		out := make([]uint64, n)
		for i, j := range idx {
			out[i] = get(&rows[j])
		}
		return out
	}
	addrs := func(get func(*Row) netip.Addr) any {
		if d == Legacy {
			return strs(func(r *Row) string { return addrString(get(r)) })
		}
		out := make([]net.IP, n)
		for i, j := range idx {
			a := ipv6(get(&rows[j])).As16()
			out[i] = net.IP(a[:])
		}
		return out
	}
	headers := func(get func(*Row) Headers) []any {
		if d == Legacy {
			names, values := make([][]string, n), make([][]string, n)
			for i, j := range idx {
				h := get(&rows[j])
				names[i], values[i] = nonNil(h.Names), nonNil(h.Values)
			}
			return []any{names, values}
		}
		out := make([]map[string]string, n)
		for i, j := range idx {
			out[i] = get(&rows[j]).Map()
		}
		return []any{out}
	}

	times := make([]time.Time, n)
	for i, j := range idx {
		times[i] = rows[j].Time
	}
	cols := []any{times}
	if d == Legacy {
		cols = append(cols, u32(func(r *Row) uint32 { return uint32(r.Time.Nanosecond()) }))
	}
	grpcStatus := make([]*uint32, n)
	for i, j := range idx {
		grpcStatus[i] = rows[j].GRPCStatus
	}
	unknown := make([][]string, n)
	for i, j := range idx {
		unknown[i] = nonNil(rows[j].Unknown)
	}
	batchID := make([]uint64, n)
	batchRow := make([]uint32, n)
	for i, j := range idx {
		batchID[i], batchRow[i] = b.ID, uint32(j)
	}
	cols = append(cols,
		strs(func(r *Row) string { return r.Node }),
		strs(func(r *Row) string { return r.Service }),
		strs(func(r *Row) string { return r.Observer }),
		strs(func(r *Row) string { return r.Protocol }),
		strs(func(r *Row) string { return r.Method }),
		strs(func(r *Row) string { return r.Scheme }),
		strs(func(r *Row) string { return r.Authority }),
		strs(func(r *Row) string { return r.Path }),
		strs(func(r *Row) string { return r.Route }),
		u16(func(r *Row) uint16 { return r.Status }),
		strs(func(r *Row) string { return r.GRPCService }),
		strs(func(r *Row) string { return r.GRPCMethod }),
		grpcStatus,
		strs(func(r *Row) string { return r.GRPCMessage }),
		u64(func(r *Row) uint64 { return r.LatencyNs }),
		u64(func(r *Row) uint64 { return r.TTFBNs }),
		u64(func(r *Row) uint64 { return r.RequestBytes }),
		u64(func(r *Row) uint64 { return r.ResponseBytes }),
		addrs(func(r *Row) netip.Addr { return r.SourceAddress }),
		u16(func(r *Row) uint16 { return r.SourcePort }),
		addrs(func(r *Row) netip.Addr { return r.DestinationAddress }),
		u16(func(r *Row) uint16 { return r.DestinationPort }),
		strs(func(r *Row) string { return r.Outcome }),
		u32(func(r *Row) uint32 { return r.ProcessPID }),
		strs(func(r *Row) string { return r.ProcessComm }),
		strs(func(r *Row) string { return r.ProcessExe }),
		strs(func(r *Row) string { return r.ContainerID }),
		strs(func(r *Row) string { return r.Cgroup }),
		strs(func(r *Row) string { return r.TraceID }),
	)
	cols = append(cols, headers(func(r *Row) Headers { return r.Headers })...)
	cols = append(cols, headers(func(r *Row) Headers { return r.ResponseHeaders })...)
	cols = append(cols, unknown, batchID, batchRow,
		u64(func(r *Row) uint64 { return r.ConnID }),
		u32(func(r *Row) uint32 { return r.StreamID }),
		u32(func(r *Row) uint32 { return r.ResetCode }),
		u32(func(r *Row) uint32 { return r.GRPCRequestMessages }),
		u32(func(r *Row) uint32 { return r.GRPCResponseMessages }),
	)
	u8 := func(get func(*Row) uint8) []uint8 {
		out := make([]uint8, n)
		for i, j := range idx {
			out[i] = get(&rows[j])
		}
		return out
	}
	arrays := func(get func(*Row) []string) [][]string {
		out := make([][]string, n)
		for i, j := range idx {
			out[i] = nonNil(get(&rows[j]))
		}
		return out
	}
	cols = append(cols,
		strs(func(r *Row) string { return r.Policy.Kind }),
		strs(func(r *Row) string { return r.Policy.Verdict }),
		strs(func(r *Row) string { return r.Policy.DropReason }),
		u8(func(r *Row) uint8 { return r.Policy.MatchType }),
		strs(func(r *Row) string { return r.Policy.Direction }),
		u8(func(r *Row) uint8 { return r.Policy.IPProtocol }),
		u32(func(r *Row) uint32 { return r.Policy.SourceIdentity }),
		u32(func(r *Row) uint32 { return r.Policy.DestinationIdentity }),
		strs(func(r *Row) string { return r.Policy.SourceEndpoint }),
		strs(func(r *Row) string { return r.Policy.DestinationEndpoint }),
		arrays(func(r *Row) []string { return r.Policy.SourceLabels }),
		arrays(func(r *Row) []string { return r.Policy.DestinationLabels }),
		arrays(func(r *Row) []string { return r.Policy.IngressAllowedBy }),
		arrays(func(r *Row) []string { return r.Policy.IngressDeniedBy }),
		arrays(func(r *Row) []string { return r.Policy.EgressAllowedBy }),
		arrays(func(r *Row) []string { return r.Policy.EgressDeniedBy }),
		u64(func(r *Row) uint64 { return r.Policy.Revision }),
		strs(func(r *Row) string { return r.Policy.Hook }),
		u32(func(r *Row) uint32 { return r.Policy.Decisions }),
	)
	return cols
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Query runs one user statement in the sandbox as QueryUser with the
// flows database as the default database: layer 1 is the server's parser
// (formatQuery, EXPLAIN AST) where it has one, else the token check
// (sandbox_legacy.go); layer 2 is the query user's profile.
func (s *NativeStore) Query(ctx context.Context, sql string, maxRows int) (*Result, error) {
	if err := s.Ready(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	p, parser := s.policy, s.parser
	s.mu.Unlock()
	var stmt string
	var err error
	if parser {
		stmt, err = p.checkWithEngine(ctx, queryExecer{s.qconn}, sql)
	} else if len(sql) > MaxSQLBytes {
		err = refused("statement of %d bytes (at most %d)", len(sql), MaxSQLBytes)
	} else {
		stmt, err = p.checkTokens(sql)
	}
	if err != nil {
		return nil, err
	}
	if s.cfg.QueryUser == "" {
		// The profile of a query user sets these (and readonly=1 there
		// refuses any setting sent with a statement).
		lim := s.cfg.QueryLimits.withDefaults()
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
			"max_execution_time": int(lim.MaxExecutionTime.Seconds()),
			"max_memory_usage":   int(lim.MaxMemoryUsage),
			"readonly":           1,
		}))
	}
	return queryConn(ctx, s.qconn, stmt, clampRows(maxRows))
}

// queryExecer runs the parser's statements on the query connection.
type queryExecer struct{ conn driver.Conn }

func (q queryExecer) exec(ctx context.Context, sql string) error { return q.conn.Exec(ctx, sql) }
func (q queryExecer) query(ctx context.Context, sql string) (*Result, error) {
	return queryConn(ctx, q.conn, sql, 0)
}

// query is for the store's own statements (migrations, replay checks).
func (s *NativeStore) query(ctx context.Context, sql string) (*Result, error) {
	return queryConn(ctx, s.conn, sql, 0)
}

// queryConn reads the answer to sql; maxRows > 0 keeps that many rows and
// stops the statement when there are more (Truncated).
func queryConn(ctx context.Context, conn driver.Conn, sql string, maxRows int) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer func() {
		cancel() // a truncated answer: the server stops instead of sending the rest
		rows.Close()
	}()
	types := rows.ColumnTypes()
	res := &Result{Columns: make([]ResultColumn, len(types))}
	dest := make([]any, len(types))
	for i, t := range types {
		res.Columns[i] = ResultColumn{Name: t.Name(), Type: t.DatabaseTypeName()}
		dest[i] = reflect.New(t.ScanType()).Interface()
	}
	for rows.Next() {
		if maxRows > 0 && len(res.Rows) == maxRows {
			res.Truncated = true
			return res, nil
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]any, len(dest))
		for i, p := range dest {
			row[i] = plain(reflect.ValueOf(p).Elem().Interface())
		}
		res.Rows = append(res.Rows, row)
	}
	return res, rows.Err()
}

// plain converts a scanned value to a JSON-friendly one, rendered as
// ClickHouse prints it where JSON has no type for it.
func plain(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		if x.Nanosecond() == 0 {
			return x.Format(time.DateTime)
		}
		return x.Format("2006-01-02 15:04:05.000000000")
	case net.IP:
		return x.String()
	case netip.Addr:
		return x.String()
	case *big.Int:
		return x.String()
	case decimal.Decimal:
		return x.String()
	case []byte:
		return string(x)
	case fmt.Stringer:
		if _, ok := v.(error); !ok {
			if reflect.TypeOf(v).Kind() == reflect.Struct {
				return x.String()
			}
		}
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return nil
		}
		return plain(rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = plain(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			out[fmt.Sprint(plain(it.Key().Interface()))] = plain(it.Value().Interface())
		}
		return out
	}
	return v
}

// Close closes the connections.
func (s *NativeStore) Close() error {
	if s.qconn != nil {
		s.qconn.Close()
	}
	return s.conn.Close()
}
