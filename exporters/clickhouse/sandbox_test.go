package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretFile is a file only root can read, with a random secret: no
// answer and no error of an attack may carry the secret.
func secretFile(t *testing.T) (path, secret string) {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	secret = "secret-" + hex.EncodeToString(b)
	path = filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

// attack is one statement the sandbox must refuse; want is part of the
// error (what was refused).
type attack struct {
	name, sql, want string
}

// sandboxAttacks are run on both engines; %[1]s is the secret file, %[2]s
// a path an INTO OUTFILE would create.
var sandboxAttacks = []attack{
	// table functions (every one the engine has is also tried on its own)
	{"file", "SELECT * FROM file('%[1]s', 'LineAsString')", "table function file"},
	{"file TSV", "SELECT * FROM file('%[1]s', 'TSV', 'line String')", "table function file"},
	{"url", "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", "table function url"},
	{"s3", "SELECT * FROM s3('http://127.0.0.1:1/bucket/key', 'LineAsString')", "table function s3"},
	{"hdfs", "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'LineAsString')", "table function hdfs"},
	{"remote", "SELECT * FROM remote('127.0.0.1:1', system.one)", "table function remote"},
	{"remoteSecure", "SELECT * FROM remoteSecure('127.0.0.1:1', system.one)", "table function remoteSecure"},
	{"cluster", "SELECT * FROM cluster('default', system.one)", "table function cluster"},
	{"clusterAllReplicas", "SELECT * FROM clusterAllReplicas('default', system.one)", "table function clusterAllReplicas"},
	{"mysql", "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')", "table function mysql"},
	{"postgresql", "SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')", "table function postgresql"},
	{"jdbc", "SELECT * FROM jdbc('jdbc:x', 'd', 't')", "table function jdbc"},
	{"odbc", "SELECT * FROM odbc('DSN=x', 'd', 't')", "table function odbc"},
	{"executable", "SELECT * FROM executable('cat %[1]s', 'LineAsString', 'line String')", "table function executable"},
	{"input", "SELECT * FROM input('line String')", "table function input"},
	{"dictionary", "SELECT * FROM dictionary('d')", "table function dictionary"},
	{"merge", "SELECT * FROM merge('system', '.*')", "table function merge"},
	{"loop", "SELECT * FROM loop(system.one)", "table function loop"},
	{"view hides file", "SELECT * FROM view(SELECT * FROM file('%[1]s', 'LineAsString'))", "table function view"},
	{"upper case FILE", "SELECT * FROM FILE('%[1]s', 'LineAsString')", "table function FILE"},
	{"mixed case FiLe", "SELECT * FROM FiLe('%[1]s', 'LineAsString')", "table function FiLe"},
	{"backquoted `file`", "SELECT * FROM `file`('%[1]s', 'LineAsString')", "table function file"},
	{"double-quoted \"url\"", `SELECT * FROM "url"('http://127.0.0.1:1/', 'LineAsString')`, "table function url"},
	// hidden in subqueries, CTEs, joins, unions, IN
	{"subquery", "SELECT * FROM (SELECT * FROM file('%[1]s', 'LineAsString'))", "table function file"},
	{"CTE", "WITH x AS (SELECT * FROM file('%[1]s', 'LineAsString')) SELECT * FROM x", "table function file"},
	{"scalar subquery", "SELECT (SELECT any(line) FROM file('%[1]s', 'LineAsString', 'line String'))", "table function file"},
	{"join", "SELECT * FROM flows AS f JOIN url('http://127.0.0.1:1/', 'LineAsString') AS u ON 1 = 1", "table function url"},
	{"comma join", "SELECT * FROM flows, file('%[1]s', 'LineAsString')", "table function file"},
	{"union", "SELECT 'a' UNION ALL SELECT * FROM file('%[1]s', 'LineAsString')", "table function file"},
	{"IN table function", "SELECT 1 IN url('http://127.0.0.1:1/', 'LineAsString')", "table function url"},
	{"IN system table", "SELECT 1 IN system.processes", "table system.processes"},
	// functions that read files, dictionaries, other tables or the engine
	{"file function", "SELECT file('%[1]s')", "function file"},
	{"file function upper", "SELECT FILE('%[1]s')", "function FILE"},
	{"file function in lambda", "SELECT arrayMap(p -> file(p), ['%[1]s'])", "function file"},
	{"file function in WHERE", "SELECT count() FROM flows WHERE path = file('%[1]s')", "function file"},
	{"dictGet", "SELECT dictGet('d', 'a', toUInt64(1))", "function dictGet"},
	{"dictGetString", "SELECT dictGetString('d', 'a', toUInt64(1))", "function dictGetString"},
	{"dictHas", "SELECT dictHas('d', toUInt64(1))", "function dictHas"},
	{"joinGet", "SELECT joinGet('sextant.flows', 'path', 1)", "function joinGet"},
	{"hasColumnInTable", "SELECT hasColumnInTable('system', 'users', 'name')", "function hasColumnInTable"},
	{"APPLY transformer", "SELECT * APPLY(file) FROM (SELECT '%[1]s' AS p)", "APPLY"},
	// system tables and other databases
	{"system.processes", "SELECT query FROM system.processes", "table system.processes"},
	{"system.tables", "SELECT * FROM system.tables", "table system.tables"},
	{"system.settings", "SELECT * FROM system.settings", "table system.settings"},
	{"system.users", "SELECT * FROM system.users", "table system.users"},
	{"system.columns", "SELECT * FROM system.columns", "table system.columns"},
	{"system.query_log", "SELECT * FROM system.query_log", "table system.query_log"},
	{"backquoted system", "SELECT * FROM `system`.`processes`", "table system.processes"},
	{"double-quoted system", `SELECT * FROM "system"."processes"`, "table system.processes"},
	{"information_schema", "SELECT * FROM information_schema.tables", "table information_schema.tables"},
	{"other database", "SELECT * FROM default.x", "table default.x"},
	{"subquery system table", "SELECT * FROM flows WHERE service IN (SELECT name FROM system.databases)", "table system.databases"},
	// settings, statements, clauses
	{"SETTINGS readonly=0", "SELECT 1 SETTINGS readonly = 0", "SETTINGS clause"},
	{"SETTINGS in subquery", "SELECT * FROM (SELECT 1 SETTINGS max_memory_usage = 0)", "SETTINGS clause"},
	{"SET", "SET readonly = 0", "Set"},
	{"INTO OUTFILE", "SELECT 1 INTO OUTFILE '%[2]s'", "INTO OUTFILE"},
	{"FORMAT", "SELECT 1 FORMAT TSV", "FORMAT clause"},
	{"INSERT", "INSERT INTO flows (service) SELECT 'x'", "Insert"},
	{"INSERT via file", "INSERT INTO FUNCTION file('%[2]s', 'LineAsString') SELECT 'x'", "Insert"},
	{"DROP", "DROP TABLE flows", "Drop"},
	{"TRUNCATE", "TRUNCATE TABLE flows", "Truncate statement"},
	{"ALTER", "ALTER TABLE flows DELETE WHERE 1", "Alter"},
	{"CREATE", "CREATE TABLE t (a UInt8) ENGINE = File(LineAsString, '%[1]s')", "Create"},
	{"CREATE USER", "CREATE USER u", "CreateUser"},
	{"GRANT", "GRANT ALL ON *.* TO default", "Grant"},
	{"SYSTEM", "SYSTEM SHUTDOWN", "SYSTEM statement"},
	{"SHOW", "SHOW TABLES FROM system", "Show"},
	{"EXPLAIN", "EXPLAIN SELECT * FROM file('%[1]s', 'LineAsString')", "Explain"},
	{"DESCRIBE table function", "DESCRIBE TABLE file('%[1]s', 'LineAsString')", "table function file"},
	{"DESCRIBE system table", "DESCRIBE TABLE system.users", "table system.users"},
	// several statements, comments, quoting
	{"two statements", "SELECT 1; SELECT 2", "Multi-statements are not allowed"},
	{"second statement reads", "SELECT 1; SELECT * FROM file('%[1]s', 'LineAsString')", "Multi-statements are not allowed"},
	{"block comment", "/* SELECT 1 */ SELECT * FROM file('%[1]s', 'LineAsString')", "table function file"},
	{"comment inside call", "SELECT * FROM /* x */ file /* y */ ('%[1]s', 'LineAsString')", "table function file"},
	{"line comment", "SELECT 1 -- harmless\nUNION ALL SELECT * FROM file('%[1]s', 'LineAsString')", "table function file"},
	// comments nest: the file() call is inside the comment, SELECT 1 runs
	{"nested comment", "/* /* */ SELECT * FROM file('%[1]s', 'LineAsString') */ SELECT 1", ""},
	{"comment hides semicolon", "SELECT 1 /* ; */; SELECT * FROM file('%[1]s', 'LineAsString')", "Multi-statements are not allowed"},
	{"newline in identifier", "SELECT 1 AS `a\\n    Function numbers`", "identifier"},
	{"NUL byte", "SELECT 1\x00; SELECT * FROM file('%[1]s', 'LineAsString')", "NUL byte"},
	{"query parameter", "SELECT {p:String}", "'{' outside quotes"},
	{"too long", "SELECT '" + strings.Repeat("x", MaxSQLBytes) + "'", "bytes"},
}

// fill puts the paths into an attack.
func (a attack) fill(secret, outfile string) string {
	if strings.Contains(a.sql, "%[") {
		return fmt.Sprintf(a.sql, secret, outfile)
	}
	return a.sql
}

// refusedBy runs one attack and checks it failed with want and leaked
// nothing (want "": it may run, harmlessly).
func refusedBy(t *testing.T, s Store, name, sql, want, secret string) {
	t.Helper()
	res, err := s.Query(context.Background(), sql, 0)
	if want == "" {
		if err == nil && strings.Contains(fmt.Sprint(res.Rows), secret) {
			t.Errorf("%s: the answer carries the secret: %v", name, res.Rows)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: not refused: %s\n→ %v", name, sql, res.Rows)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q, want …%s…", name, err, want)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("%s: the error carries the secret: %v", name, err)
	}
}

// allowedQueries are ordinary statements both engines must still run, with
// the number of rows they return (-1: any).
var allowedQueries = []struct {
	sql  string
	rows int
}{
	{"SELECT count() FROM flows", 1},
	{"select count() from sextant.flows;", 1},
	{"-- a note\nSELECT service, count() AS `requests per service` FROM flows /* all */ GROUP BY service", -1},
	{"SELECT f.service, g.n FROM flows AS f JOIN (SELECT service, count() AS n FROM flows GROUP BY service) AS g ON f.service = g.service LIMIT 3", 3},
	{"SELECT count() FROM flows WHERE service IN (SELECT service FROM flows WHERE status >= 500)", 1},
	{"(SELECT 1) UNION ALL (SELECT 2)", 2},
	{"SELECT number FROM system.numbers LIMIT 3", 3},
	{"SELECT * FROM system.one", 1},
	{"DESCRIBE TABLE flows", -1},
}

// modernQueries run only on the modern engine.
var modernQueries = []struct {
	sql  string
	rows int
}{
	{"SELECT * FROM numbers(3)", 3},
	{"WITH s AS (SELECT service, count() AS n FROM flows GROUP BY service) SELECT * FROM s ORDER BY n DESC", -1},
	{"SELECT * FROM values('a UInt8', 1, 2)", 2},
	{"SELECT 2 IN (SELECT number FROM numbers(3))", 1},
	{"SELECT format('{}-{}', 'a', 'b')", 1},
	{"SELECT service, row_number() OVER (PARTITION BY service ORDER BY time) AS n FROM flows ORDER BY service, n LIMIT 5", 5},
	{"SELECT DISTINCT route FROM flows INTERSECT SELECT DISTINCT route FROM flows", -1},
}

func TestSandboxEmbedded(t *testing.T) {
	s := embedded(t)
	insertFlows(t, s, testFlows(1000, time.Now()))
	secret, secretText := secretFile(t)
	outfile := filepath.Join(t.TempDir(), "out")
	for _, a := range sandboxAttacks {
		refusedBy(t, s, a.name, a.fill(secret, outfile), a.want, secretText)
	}
	if _, err := os.Stat(outfile); err == nil {
		t.Error("INTO OUTFILE wrote the file")
	}
	// Every table function of the engine but the allowed row generators,
	// so that one added later is refused too.
	for _, r := range queryStrings(t, s, "SELECT name FROM system.table_functions") {
		name := r[0]
		if allowedTableFunctions[name] {
			continue
		}
		call := fmt.Sprintf("%s('%s', 'LineAsString')", name, secret)
		switch name { // the ones that take a SELECT
		case "view":
			call = "view(SELECT * FROM flows)"
		case "viewIfPermitted":
			call = "viewIfPermitted(SELECT * FROM flows ELSE null('a UInt8'))"
		case "viewExplain":
			call = "viewExplain('EXPLAIN', '', (SELECT * FROM flows))"
		}
		refusedBy(t, s, "table function "+name, "SELECT * FROM "+call, "table function "+name, secretText)
	}
	// Every function of the denied categories.
	for _, r := range queryStrings(t, s, fmt.Sprintf("SELECT name FROM system.functions WHERE categories IN ('%s')", strings.Join(deniedCategories, "', '"))) {
		refusedBy(t, s, "function "+r[0], fmt.Sprintf("SELECT %s('%s')", r[0], secret), "function "+r[0], secretText)
	}
	for _, q := range append(allowedQueries, modernQueries...) {
		res, err := s.Query(context.Background(), q.sql, 0)
		if err != nil {
			t.Errorf("%s: %v", q.sql, err)
			continue
		}
		if q.rows >= 0 && len(res.Rows) != q.rows {
			t.Errorf("%s: %d rows, want %d", q.sql, len(res.Rows), q.rows)
		}
	}
	if got := queryStrings(t, s, "SELECT count() FROM flows"); got[0][0] != "1000" {
		t.Errorf("flows after the attacks: %v", got)
	}
}

// Layer 2 on the embedded engine: what each statement runs with, and the
// bounds on rows, time and memory.
func TestSandboxEmbeddedLimits(t *testing.T) {
	s := embedded(t)
	ctx := context.Background()
	res, err := s.Query(ctx, "SELECT getSetting('readonly'), getSetting('allow_introspection_functions'), getSetting('max_memory_usage'), getSetting('max_result_rows'), toString(getSetting('result_overflow_mode'))", 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(stringRows(res)); got != fmt.Sprintf("[[1 false %d 6 break]]", s.cfg.QueryLimits.MaxMemoryUsage) {
		t.Errorf("settings of a user statement: %s", got)
	}
	// The settings hold for every part of a UNION.
	res, err = s.Query(ctx, "SELECT getSetting('readonly') UNION ALL SELECT getSetting('readonly') FROM flows LIMIT 1", 0)
	if err != nil || fmt.Sprint(stringRows(res)) != "[[1] [1]]" && fmt.Sprint(stringRows(res)) != "[[1]]" {
		t.Errorf("readonly in a UNION: %v %v", res, err)
	}
	// More rows than asked: truncated, also from an endless table.
	for _, sql := range []string{"SELECT number FROM numbers(10000000)", "SELECT number FROM system.numbers"} {
		res, err := s.Query(ctx, sql, 1000)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if len(res.Rows) != 1000 || !res.Truncated {
			t.Errorf("%s: %d rows, truncated %v; want 1000, true", sql, len(res.Rows), res.Truncated)
		}
	}
	res, err = s.Query(ctx, "SELECT number FROM numbers(1000)", 1000)
	if err != nil || len(res.Rows) != 1000 || res.Truncated {
		t.Errorf("exactly max rows: %v rows, truncated %v, %v", len(res.Rows), res.Truncated, err)
	}
	// A slow statement ends at max_execution_time.
	start := time.Now()
	_, err = s.Query(ctx, "SELECT count() FROM system.numbers WHERE number % 7 = 1", 0)
	if err == nil || !strings.Contains(err.Error(), "TIMEOUT_EXCEEDED") {
		t.Errorf("endless count: %v, want TIMEOUT_EXCEEDED", err)
	}
	t.Logf("endless count ended after %v (limit %v)", time.Since(start).Round(time.Millisecond), s.cfg.QueryLimits.MaxExecutionTime)
	// The request's deadline lowers the limit.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.Query(dctx, "SELECT count() FROM system.numbers", 0); err == nil || !strings.Contains(err.Error(), "TIMEOUT_EXCEEDED") {
		t.Errorf("endless count within a 1 s request: %v", err)
	}
	// A memory hog ends at max_memory_usage.
	if _, err := s.Query(ctx, "SELECT groupArray(number) FROM numbers(200000000)", 0); err == nil || !strings.Contains(err.Error(), "MEMORY_LIMIT_EXCEEDED") {
		t.Errorf("memory hog: %v, want MEMORY_LIMIT_EXCEEDED", err)
	}
	// An answer over MaxResultBytes is an error, not a cut answer.
	if _, err := s.Query(ctx, "SELECT repeat('x', 10000) FROM numbers(1000)", 1000); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("10 MB answer (limit %d): %v", s.cfg.QueryLimits.MaxResultBytes, err)
	}
}

// Layer 2 alone: the engine's user refuses files, URLs, remote servers
// and other databases even for statements that skip layer 1 (the
// store's own path), and readonly=1 refuses table functions and writes.
func TestSandboxEmbeddedEngineUser(t *testing.T) {
	s := embedded(t)
	secret, secretText := secretFile(t)
	for _, c := range []struct{ sql, want string }{
		{fmt.Sprintf("SELECT * FROM file('%s', 'LineAsString')", secret), "READ ON FILE"},
		{fmt.Sprintf("SELECT * FROM default.`%s`", secret), "READ ON FILE"},
		{"SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", "READ ON URL"},
		{"SELECT * FROM s3('http://127.0.0.1:1/bucket/key', 'LineAsString')", "READ ON S3"},
		{"SELECT * FROM remote('127.0.0.1:1', system.one)", "READ ON REMOTE"},
		{"SELECT * FROM system.users", "ACCESS_DENIED"},
		{"CREATE DATABASE other", "ACCESS_DENIED"},
		{"CREATE USER u", "ACCESS_DENIED"},
		{fmt.Sprintf("INSERT INTO FUNCTION file('%s.out', 'LineAsString') SELECT 'x'", secret), "ACCESS_DENIED"},
		// the settings every user statement carries
		{"SELECT * FROM zeros(1) SETTINGS readonly = 1", "READONLY"},
		{"INSERT INTO flows (service) SELECT 'x' SETTINGS readonly = 1", "READONLY"},
	} {
		_, err := s.query(context.Background(), c.sql)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want …%s…", c.sql, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), secretText) {
			t.Errorf("%s: the error carries the secret", c.sql)
		}
	}
}

func TestParseAST(t *testing.T) {
	dump := "SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n   ExpressionList (children 2)\n    Function count (alias n) (children 1)\n     ExpressionList\n    Identifier `a b` (alias c d)"
	root, err := parseAST(dump)
	if err != nil {
		t.Fatal(err)
	}
	fn := root.children[0].children[0].children[0].children[0]
	id := root.children[0].children[0].children[0].children[1]
	if fn.typ != "Function" || fn.name != "count" || fn.alias != "n" || id.name != "`a b`" || id.alias != "c d" {
		t.Errorf("parsed %+v %+v", fn, id)
	}
	// An identifier that breaks a line apart (a forged node) no longer
	// adds up.
	for _, bad := range []string{
		"SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n   ExpressionList (children 1)\n    Identifier a\n    Function file (children 1)",
		"SelectWithUnionQuery (children 2)\n ExpressionList",
		"SelectWithUnionQuery (children 1)\n   ExpressionList",
		"",
	} {
		if _, err := parseAST(bad); err == nil {
			t.Errorf("parseAST accepted %q", bad)
		}
	}
}

// checkAST on trees no engine printed: it refuses, it does not panic.
func TestCheckASTForged(t *testing.T) {
	p := newPolicy("sextant")
	p.tableFunctions["file"] = true
	for dump, want := range map[string]string{
		"SelectWithUnionQuery":                                                             "without a select list",
		"SelectWithUnionQuery (children 1)\n Literal 1":                                    "without a select list",
		"SelectWithUnionQuery (children 2)\n ExpressionList\n Set":                         "SETTINGS clause",
		"SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  Function file": "function file",
		"SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  Whatever":      "syntax Whatever",
		"InsertQuery":   "Insert statement",
		"DescribeQuery": "DESCRIBE of anything but a table",
	} {
		root, err := parseAST(dump)
		if err != nil {
			t.Fatalf("%q: %v", dump, err)
		}
		if err := p.checkAST(root); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want …%s…", dump, err, want)
		}
	}
}

func TestLexSQL(t *testing.T) {
	toks, err := lexSQL("SELECT 'a''b\\'c', `q``r`, \"s\" -- x\n/* y */ 1e-5 FROM t;")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tk := range toks {
		got = append(got, fmt.Sprintf("%d:%s", tk.kind, tk.text))
	}
	want := "0:SELECT 2:a''b\\'c 4:, 1:q``r 4:, 1:s 3:1e-5 0:FROM 0:t 4:;"
	if strings.Join(got, " ") != want {
		t.Errorf("tokens %q\nwant %q", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"/* /* */ x */", "SELECT 'x", "SELECT `x", "/* x", "# comment", "SELECT $$x$$", "SELECT {p:String}", "SELECT 1\x00"} {
		if _, err := lexSQL(bad); err == nil || !errors.Is(err, ErrNotReadOnly) {
			t.Errorf("lexSQL(%q) = %v, want a refusal", bad, err)
		}
	}
}
