package clickhouse

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// QueryLimits bound one user statement (Store.Query). On the embedded
// engine they are settings of the statement; on a server they belong in
// the query user's profile (docs/clickhouse.md), which readonly=1 keeps the
// statement from changing.
type QueryLimits struct {
	MaxExecutionTime time.Duration // default 60 s
	MaxMemoryUsage   int64         // bytes, default 1 GiB
	MaxResultBytes   int64         // bytes of the encoded answer, default 256 MiB
}

// Default query limits.
const (
	DefaultMaxExecutionTime = 60 * time.Second
	DefaultMaxMemoryUsage   = 1 << 30
	DefaultMaxResultBytes   = 256 << 20
)

func (l QueryLimits) withDefaults() QueryLimits {
	if l.MaxExecutionTime <= 0 {
		l.MaxExecutionTime = DefaultMaxExecutionTime
	}
	if l.MaxMemoryUsage <= 0 {
		l.MaxMemoryUsage = DefaultMaxMemoryUsage
	}
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = DefaultMaxResultBytes
	}
	return l
}

// executionTime is max_execution_time in seconds: the limit, or less when
// ctx ends sooner (an embedded statement cannot be interrupted otherwise).
func (l QueryLimits) executionTime(ctx context.Context) string {
	d := l.MaxExecutionTime
	if deadline, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(deadline))
	}
	return strconv.FormatFloat(max(d.Seconds(), 0.001), 'f', 3, 64)
}

// clampRows: 0 or less is DefaultMaxRows, at most MaxRows.
func clampRows(n int) int {
	if n <= 0 {
		n = DefaultMaxRows
	}
	return min(n, MaxRows)
}

// truncate keeps at most n rows and says whether there were more.
func (r *Result) truncate(n int) {
	if len(r.Rows) > n {
		r.Rows, r.Truncated = r.Rows[:n], true
	}
}

var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validDatabase(name string) bool { return databaseName.MatchString(name) }

// loadPolicy asks the engine for its table functions and for the functions
// of the denied categories.
func loadPolicy(ctx context.Context, x execer, database string, d Dialect) (*policy, error) {
	p := newPolicy(database)
	res, err := x.query(ctx, "SELECT name FROM system.table_functions")
	if err != nil {
		return nil, fmt.Errorf("list table functions: %w", err)
	}
	for _, r := range res.Rows {
		p.tableFunctions[strings.ToLower(fmt.Sprint(r[0]))] = true
	}
	if d == Legacy {
		return p, nil // 18.16's system.functions has no categories
	}
	res, err = x.query(ctx, fmt.Sprintf("SELECT name, categories FROM system.functions WHERE categories IN ('%s')", strings.Join(deniedCategories, "', '")))
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	for _, r := range res.Rows {
		p.denied[strings.ToLower(fmt.Sprint(r[0]))] = fmt.Sprintf("%s function", r[1])
	}
	return p, nil
}

// checkWithEngine is layer 1 on an engine with a modern parser: formatQuery
// parses the text as exactly one statement (comments, quoting and case
// variants fall away) and returns it canonical; EXPLAIN AST gives its
// tree, which checkAST admits or refuses. The canonical text is what runs,
// so what was checked is what runs. The user's text reaches the engine
// only hex-encoded inside formatQuery: the engine never runs it as SQL.
func (p *policy) checkWithEngine(ctx context.Context, x execer, sql string) (string, error) {
	if len(sql) > MaxSQLBytes {
		return "", refused("statement of %d bytes (at most %d)", len(sql), MaxSQLBytes)
	}
	if strings.IndexByte(sql, 0) >= 0 {
		return "", refused("NUL byte in the statement")
	}
	res, err := x.query(ctx, "SELECT formatQuery(unhex('"+hex.EncodeToString([]byte(sql))+"'))")
	if err != nil {
		return "", &parseError{err}
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return "", fmt.Errorf("parse: formatQuery returned %d rows", len(res.Rows))
	}
	canonical, ok := res.Rows[0][0].(string)
	if !ok {
		return "", fmt.Errorf("parse: formatQuery returned %T", res.Rows[0][0])
	}
	if err := checkIdentifiers(canonical); err != nil {
		return "", err
	}
	res, err = x.query(ctx, "EXPLAIN AST "+canonical)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	lines := make([]string, len(res.Rows))
	for i, r := range res.Rows {
		if len(r) != 1 {
			return "", fmt.Errorf("parse: EXPLAIN AST row of %d columns", len(r))
		}
		lines[i] = fmt.Sprint(r[0])
	}
	root, err := parseAST(strings.Join(lines, "\n"))
	if err != nil {
		return "", err
	}
	if err := p.checkAST(root); err != nil {
		return "", err
	}
	return canonical, nil
}

// parseError is the engine's syntax error, without the formatQuery call
// that wraps the statement.
type parseError struct{ err error }

func (e *parseError) Error() string {
	msg, _, _ := strings.Cut(e.err.Error(), ": In scope SELECT formatQuery(")
	return "parse: " + msg
}

func (e *parseError) Unwrap() error { return e.err }

// writeEngineConfig writes the embedded engine's configuration under dir:
// its only user may change the given databases and read the system tables
// sextant's own statements need, and nothing else: no FILE, URL, REMOTE,
// S3 or other source (the table functions and table engines that reach
// files or the network), no dictionaries, no users, no other database.
// System tables need a grant (select_from_system_db_requires_grant).
func writeEngineConfig(dir string, databases []string) (string, error) {
	var grants strings.Builder
	for _, db := range databases {
		if !validDatabase(db) {
			return "", fmt.Errorf("chDB: database name %q: want letters, digits and _", db)
		}
		fmt.Fprintf(&grants, "        <query>GRANT ALL ON %s.*</query>\n", db)
	}
	for _, t := range []string{"columns", "functions", "table_functions", "one", "numbers", "numbers_mt"} {
		fmt.Fprintf(&grants, "        <query>GRANT SELECT ON system.%s</query>\n", t)
	}
	xmlText := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace
	users := `<clickhouse>
  <profiles><default></default></profiles>
  <quotas><default></default></quotas>
  <users>
    <default>
      <password></password>
      <profile>default</profile>
      <quota>default</quota>
      <grants>
` + grants.String() + `      </grants>
    </default>
  </users>
</clickhouse>
`
	usersFile := filepath.Join(dir, "sextant-users.xml")
	config := `<clickhouse>
  <users_config>` + xmlText(usersFile) + `</users_config>
  <access_control_improvements>
    <select_from_system_db_requires_grant>true</select_from_system_db_requires_grant>
    <select_from_information_schema_requires_grant>true</select_from_information_schema_requires_grant>
  </access_control_improvements>
</clickhouse>
`
	configFile := filepath.Join(dir, "sextant-config.xml")
	// The flows history is for root (the engine creates its files 0644
	// under this directory).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("chDB: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("chDB: %w", err)
	}
	for name, body := range map[string]string{usersFile: users, configFile: config} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			return "", fmt.Errorf("chDB: %w", err)
		}
	}
	return configFile, nil
}
