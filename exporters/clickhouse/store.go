package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Store is where flows are written and queried: a ClickHouse server over
// the native protocol (NativeStore) or the embedded chDB engine
// (EmbeddedStore). Both hold the same flows table in database Database.
type Store interface {
	// Insert writes a batch as one atomic insert per day partition. When
	// b.Attempted is set (an earlier Insert of the same batch failed in a
	// way that may have left it written), it first checks which parts are
	// already in the table and writes only the others.
	Insert(ctx context.Context, b *Batch) error
	// Query runs one user statement in the sandbox (sandbox.go): one
	// SELECT (or DESCRIBE) reaching only the flows database, read-only and
	// within the store's QueryLimits, with the flows database as the
	// default database. It returns at most maxRows rows (0: DefaultMaxRows;
	// at most MaxRows) and sets Truncated when there were more. A refused
	// statement is a *RefusedError (errors.Is ErrNotReadOnly).
	Query(ctx context.Context, sql string, maxRows int) (*Result, error)
	// Dialect says which column types the table has.
	Dialect() Dialect
	Close() error
}

// Result is the answer to a query: column names and types, then rows of
// JSON-friendly values (strings, json.Number or numbers, bools, arrays,
// maps, nil for NULL).
type Result struct {
	Columns []ResultColumn `json:"columns"`
	Rows    [][]any        `json:"rows"`
	// Truncated: the query returned more rows than the caller's limit.
	Truncated bool `json:"truncated,omitempty"`
}

// ResultColumn names one column of a Result.
type ResultColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// execer is the part of a backend that migrations use.
type execer interface {
	exec(ctx context.Context, sql string) error
	query(ctx context.Context, sql string) (*Result, error)
}

// migrate brings database db to schema version target (SchemaVersion in
// production), recording each step in db.schema_version.
func migrate(ctx context.Context, x execer, db string, d Dialect, retention time.Duration, target int) error {
	if err := x.exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	if err := x.exec(ctx, versionTable(db)); err != nil {
		return fmt.Errorf("create %s.schema_version: %w", db, err)
	}
	current, err := queryInt(ctx, x, fmt.Sprintf("SELECT toString(max(version)) FROM %s.schema_version", db))
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if int(current) > SchemaVersion {
		// A newer sextant migrated this table. The columns this build
		// writes are still there (migrations only add), so carry on.
		return nil
	}
	for _, m := range migrations {
		if m.version <= int(current) || m.version > target {
			continue
		}
		for _, stmt := range m.stmts(db, d, retention) {
			if name, ok := alterColumnName(stmt); ok {
				n, err := queryInt(ctx, x, fmt.Sprintf("SELECT toString(count()) FROM system.columns WHERE database = '%s' AND table = 'flows' AND name = '%s'", db, name))
				if err != nil {
					return fmt.Errorf("schema version %d: column %s: %w", m.version, name, err)
				}
				if n > 0 {
					continue
				}
			}
			if err := x.exec(ctx, stmt); err != nil {
				return fmt.Errorf("schema version %d: %w", m.version, err)
			}
		}
		// INSERT … SELECT: an 18.16 server waits for a data block after
		// INSERT … VALUES sent over the native protocol.
		record := fmt.Sprintf("INSERT INTO %s.schema_version (version, applied_at, by) SELECT %d, now(), 'sextant'", db, m.version)
		if err := x.exec(ctx, record); err != nil {
			return fmt.Errorf("record schema version %d: %w", m.version, err)
		}
	}
	return nil
}

// queryInt runs a query whose answer is one integer rendered as a string.
func queryInt(ctx context.Context, x execer, sql string) (int64, error) {
	res, err := x.query(ctx, sql)
	if err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: want one value, got %d rows", sql, len(res.Rows))
	}
	var n int64
	switch v := res.Rows[0][0].(type) {
	case string:
		_, err = fmt.Sscan(v, &n)
	case json.Number:
		n, err = v.Int64()
	default:
		err = fmt.Errorf("%s: unexpected %T", sql, v)
	}
	return n, err
}

// committedCounts returns how many rows of each day of batch id are in
// the table (the replay check). Partition pruning keeps it to those days.
func committedCounts(ctx context.Context, x execer, db string, id uint64, days []string) (map[string]int64, error) {
	sql := fmt.Sprintf("SELECT toString(toDate(time)), toString(count()) FROM %s.flows WHERE toDate(time) IN ('%s') AND batch_id = %d GROUP BY toDate(time)",
		db, strings.Join(days, "','"), id)
	res, err := x.query(ctx, sql)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(res.Rows))
	for _, r := range res.Rows {
		day, _ := r[0].(string)
		var n int64
		switch v := r[1].(type) {
		case string:
			fmt.Sscan(v, &n)
		case json.Number:
			n, _ = v.Int64()
		}
		out[day] = n
	}
	return out, nil
}
