package clickhouse

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url string, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func TestQueryHandler(t *testing.T) {
	s := embedded(t)
	insertFlows(t, s, testFlows(1000, time.Now()))
	srv := httptest.NewServer(QueryHandler(s))
	defer srv.Close()
	url := srv.URL + QueryPath

	code, body := post(t, url, `{"sql": "SELECT route, count() AS n, max(time) > now() - INTERVAL 1 MINUTE AS recent FROM flows GROUP BY route ORDER BY n DESC", "max_rows": 1}`)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var res Result
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&res); err != nil {
		t.Fatal(err)
	}
	if len(res.Columns) != 3 || res.Columns[1].Name != "n" || res.Columns[1].Type != "UInt64" {
		t.Errorf("columns %+v", res.Columns)
	}
	if !res.Truncated || len(res.Rows) != 1 || res.Rows[0][0] != "/users/{id}/orders" || res.Rows[0][1] != json.Number("666") {
		t.Errorf("rows %v truncated %v", res.Rows, res.Truncated)
	}

	for _, c := range []struct {
		body string
		code int
		msg  string
	}{
		{`{"sql": "DROP TABLE flows"}`, 400, "refused: Drop statement"},
		{`{"sql": "SELECT 1; DROP TABLE flows"}`, 400, "Multi-statements are not allowed"},
		{`{"sql": "SELECT * FROM file('/etc/shadow', 'LineAsString')"}`, 400, "refused: table function file"},
		{`{"sql": "` + strings.Repeat("x", 2*maxRequestBytes) + `"}`, 413, "request body"},
		{`{"sql": "SELECT nosuchcolumn FROM flows"}`, 400, "nosuchcolumn"},
		{`{"sql": ""}`, 400, "no sql"},
		{`not json`, 400, "request body"},
	} {
		code, body := post(t, url, c.body)
		if code != c.code || !strings.Contains(string(body), c.msg) {
			t.Errorf("%s: %d %s, want %d …%s…", c.body, code, body, c.code, c.msg)
		}
	}
	if got := queryStrings(t, s, "SELECT count() FROM flows"); got[0][0] != "1000" {
		t.Errorf("flows after refused statements: %v", got)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}
