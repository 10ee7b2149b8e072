package clickhouse

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sextant/sextant/testbed"
)

// queryUserRecipe is the users.d file of docs/clickhouse.md with pw as
// the password and the limits scaled down for a test.
func queryUserRecipe(t *testing.T, pw string) string {
	t.Helper()
	md, err := os.ReadFile("../../docs/clickhouse.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(md), "### The query sandbox")
	m := regexp.MustCompile("(?s)```xml\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("docs/clickhouse.md: no ```xml block in “The query sandbox”")
	}
	recipe := m[1]
	sum := sha256.Sum256([]byte(pw))
	for _, r := range []struct{ element, value string }{
		{"password_sha256_hex", hex.EncodeToString(sum[:])},
		{"max_execution_time", "2"},
		{"max_memory_usage", "200000000"},
	} {
		re := regexp.MustCompile("<" + r.element + ">[^<]*</" + r.element + ">")
		if !re.MatchString(recipe) {
			t.Fatalf("docs/clickhouse.md recipe has no <%s>", r.element)
		}
		recipe = re.ReplaceAllString(recipe, "<"+r.element+">"+r.value+"</"+r.element+">")
	}
	return recipe
}

// legacyRefusal says which layer refused a statement on the server.
func legacyRefusal(err error) string {
	var ex *clickhouse.Exception
	switch {
	case errors.Is(err, ErrNotReadOnly):
		return "layer 1"
	case errors.As(err, &ex):
		return fmt.Sprintf("server code %d", ex.Code)
	}
	return "other"
}

// The recipe of docs/clickhouse.md on the ClickHouse 18.16 server: the
// store queries as the restricted user; every attack is refused by layer 1
// or by the server, normal queries work, and the profile alone refuses
// table functions, settings, writes and other databases.
func TestSandboxServer(t *testing.T) {
	b := make([]byte, 12)
	rand.Read(b)
	pw := hex.EncodeToString(b)
	srv := testbed.StartClickHouseWithUsers(t, queryUserRecipe(t, pw))
	s, err := OpenNative(NativeConfig{Addr: srv.Addr(), QueryUser: "sextant_query", QueryPassword: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Dialect() != Legacy || s.parser {
		t.Fatalf("dialect %v, parser %v: this test is about 18.16", s.Dialect(), s.parser)
	}
	fs := docFlows()
	insertFlows(t, s, fs)
	srv.SQL(t, "CREATE TABLE default.private (secret String) ENGINE = Memory")
	srv.SQL(t, "INSERT INTO default.private VALUES ('private-row')")

	secret, secretText := secretFile(t)
	outfile := filepath.Join(t.TempDir(), "out")
	for _, a := range sandboxAttacks {
		sql := a.fill(secret, outfile)
		res, err := s.Query(ctx, sql, 0)
		if err == nil {
			// Quoted names only matter to the EXPLAIN AST text.
			if a.want != "" && a.want != "identifier" {
				t.Errorf("%s: not refused: %s → %v", a.name, sql, res.Rows)
			}
			if strings.Contains(fmt.Sprint(res.Rows), secretText) {
				t.Errorf("%s: the answer carries the secret", a.name)
			}
			continue
		}
		if strings.Contains(err.Error(), secretText) {
			t.Errorf("%s: the error carries the secret", a.name)
		}
		if legacyRefusal(err) == "other" {
			t.Errorf("%s: %v", a.name, err)
		}
		t.Logf("%-24s %-16s %s", a.name, legacyRefusal(err), firstLine(err.Error()))
	}
	for _, name := range strings.Fields(srv.SQL(t, "SELECT name FROM system.table_functions")) {
		_, err := s.Query(ctx, fmt.Sprintf("SELECT * FROM %s('%s', 'LineAsString')", name, secret), 0)
		if name == "numbers" {
			// allowed by layer 1, refused by the profile
			if err == nil || !strings.Contains(err.Error(), "Table functions are forbidden in readonly mode") {
				t.Errorf("numbers(): %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "refused: table function "+name) && !strings.Contains(err.Error(), "refused: function "+name) {
			t.Errorf("table function %s: %v", name, err)
		}
	}
	for _, sql := range []string{"SELECT secret FROM default.private", "SELECT * FROM flows WHERE service IN (SELECT secret FROM default.private)"} {
		_, err := s.Query(ctx, sql, 0)
		if err == nil || !strings.Contains(err.Error(), "Access denied to database default") {
			t.Errorf("%s: %v, want access denied", sql, err)
		}
	}

	// Ordinary statements and every query of docs/queries.md, as the
	// query user.
	for _, q := range allowedQueries {
		res, err := s.Query(ctx, q.sql, 0)
		if err != nil {
			t.Errorf("%s: %v", q.sql, err)
			continue
		}
		if q.rows >= 0 && len(res.Rows) != q.rows {
			t.Errorf("%s: %d rows, want %d", q.sql, len(res.Rows), q.rows)
		}
	}
	ex := expectDocs(fs)
	for _, q := range docQueries(t) {
		if q.modernOnly {
			continue
		}
		res, err := s.Query(ctx, q.sql, 0)
		if err != nil {
			t.Errorf("%s: %v", q.heading, err)
			continue
		}
		checkDocQuery(t, q, res, ex)
	}

	// Rows, time and memory.
	res, err := s.Query(ctx, "SELECT number FROM system.numbers", 1000)
	if err != nil || len(res.Rows) != 1000 || !res.Truncated {
		t.Errorf("endless table, 1000 rows: %v rows, truncated %v, %v", len(res.Rows), res.Truncated, err)
	}
	if _, err := s.Query(ctx, "SELECT count() FROM system.numbers", 0); err == nil || !strings.Contains(err.Error(), "Timeout exceeded") {
		t.Errorf("endless count: %v, want the profile's timeout", err)
	}
	if _, err := s.Query(ctx, "SELECT groupArray(number) FROM (SELECT number FROM system.numbers LIMIT 100000000)", 0); err == nil || !strings.Contains(err.Error(), "Memory limit") {
		t.Errorf("memory hog: %v, want the profile's memory limit", err)
	}

	// Layer 2 alone: statements that skip layer 1, straight to the server
	// as the query user.
	for _, c := range []struct {
		sql  string
		with clickhouse.Settings
		want string
	}{
		{sql: fmt.Sprintf("SELECT * FROM file('%s', 'TSV', 'line String')", secret), want: "Table functions are forbidden in readonly mode"},
		{sql: "SELECT * FROM url('http://127.0.0.1:1/', 'TSV', 'line String')", want: "Table functions are forbidden in readonly mode"},
		{sql: "SELECT * FROM remote('127.0.0.1:1', system.one)", want: "Table functions are forbidden in readonly mode"},
		{sql: "SELECT * FROM merge('default', '.*')", want: "Table functions are forbidden in readonly mode"},
		{sql: "SELECT 1 SETTINGS readonly = 0", want: "Cannot execute SET query in readonly mode"},
		{sql: "SELECT 1 SETTINGS max_execution_time = 1000", want: "Cannot execute SET query in readonly mode"},
		// settings sent with a statement are ignored for this user
		{sql: "SELECT * FROM numbers(1)", with: clickhouse.Settings{"readonly": 0}, want: "Table functions are forbidden in readonly mode"},
		{sql: "SELECT secret FROM default.private", want: "Access denied to database default"},
		{sql: "INSERT INTO sextant.flows (service) SELECT 'x'", want: "readonly mode"},
		{sql: "CREATE TABLE sextant.x (a UInt8) ENGINE = Memory", want: "readonly mode"},
		{sql: "DROP TABLE sextant.flows", want: "readonly mode"},
		{sql: "SET readonly = 0", want: "readonly mode"},
	} {
		qctx := ctx
		if c.with != nil {
			qctx = clickhouse.Context(ctx, clickhouse.WithSettings(c.with))
		}
		_, err := queryConn(qctx, s.qconn, c.sql, 0)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("as sextant_query: %s %v: %v, want …%s…", c.sql, c.with, err, c.want)
		}
	}
	sent := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"readonly": 0, "max_memory_usage": 0, "max_execution_time": 1000}))
	res, err = queryConn(sent, s.qconn, "SELECT name, value FROM system.settings WHERE name IN ('readonly', 'max_memory_usage', 'max_execution_time') ORDER BY name", 0)
	if err != nil || fmt.Sprint(res.Rows) != "[[max_execution_time 2] [max_memory_usage 200000000] [readonly 1]]" {
		t.Errorf("profile settings with others sent: %v %v", res, err)
	}
	if got := srv.SQL(t, "SELECT count() FROM sextant.flows"); got != fmt.Sprint(len(fs)) {
		t.Errorf("flows after the attacks: %s, want %d", got, len(fs))
	}
}

// Without a query user the writer runs user statements with readonly=1
// and the limits sent as settings.
func TestSandboxServerWithoutQueryUser(t *testing.T) {
	srv := testbed.StartClickHouse(t)
	s, err := OpenNative(NativeConfig{Addr: srv.Addr(), QueryLimits: QueryLimits{MaxExecutionTime: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	insertFlows(t, s, testFlows(100, time.Now()))
	if _, err := s.Query(ctx, "SELECT * FROM numbers(3)", 0); err == nil || !strings.Contains(err.Error(), "Table functions are forbidden in readonly mode") {
		t.Errorf("numbers(): %v, want readonly", err)
	}
	if _, err := s.Query(ctx, "SELECT count() FROM system.numbers", 0); err == nil || !strings.Contains(err.Error(), "Timeout exceeded") {
		t.Errorf("endless count: %v, want a timeout", err)
	}
	res, err := s.Query(ctx, "SELECT count() FROM flows", 0)
	if err != nil || fmt.Sprint(res.Rows) != "[[100]]" {
		t.Errorf("count: %v %v", res, err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 160 {
		line = line[:160] + "…"
	}
	return line
}
