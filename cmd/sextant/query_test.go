package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/testbed"
)

// sextant query against a relay's query endpoint over the real embedded
// engine: table and JSON output, and the error of a refused statement.
func TestQueryCommand(t *testing.T) {
	lib, err := clickhouse.EnsureChDB(context.Background(), "", nil)
	if err != nil {
		testbed.Missing(t, "embedded ClickHouse engine: %v", err)
	}
	store, err := clickhouse.OpenEmbedded(context.Background(), clickhouse.EmbeddedConfig{Lib: lib, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// The relay's query endpoint: HTTP on a private unix socket.
	socket := filepath.Join(t.TempDir(), "query.sock")
	ln, err := serve.Unix(socket, "")
	if err != nil {
		t.Fatal(err)
	}
	h := &serve.HTTP{Listener: ln, Handler: clickhouse.QueryHandler(store)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)

	query := func(args ...string) (string, error) {
		cmd := newQueryCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"--relay", "unix://" + socket}, args...))
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := query("SELECT 'a\tb' AS s, toUInt64(18446744073709551615) AS big, [1, 2] AS arr, NULL AS n, now() > toDateTime('2020-01-01') AS recent")
	if err != nil {
		t.Fatal(err)
	}
	want := "s     big                   arr    n     recent\na\\tb  18446744073709551615  [1,2]  NULL  1\n1 rows\n"
	if out != want {
		t.Errorf("table:\n%q\nwant\n%q", out, want)
	}
	out, err = query("-o", "json", "SELECT count() AS n FROM flows")
	if err != nil {
		t.Fatal(err)
	}
	var res clickhouse.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Rows) != 1 || res.Columns[0].Name != "n" {
		t.Errorf("json: %v %s", err, out)
	}
	if _, err := query("DROP TABLE flows"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("DROP: %v", err)
	}
}
