package clickhouse

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x1f\t\n\r", "utf-8 é ✓ 🙂", "bad \xff\xfe bytes", "\u2028"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q → %s: %v", s, b, err)
			continue
		}
		want := string([]rune(s)) // invalid bytes become U+FFFD, as encoding/json does
		if got != want {
			t.Errorf("%q → %s → %q", s, b, got)
		}
	}
}

func TestHeadersOf(t *testing.T) {
	h := headersOf([]flow.Header{
		{Name: ":path", Value: "/x"}, {Name: "Accept", Value: "a"}, {Name: "x-b", Value: "1"}, {Name: "accept", Value: "b"},
	})
	want := Headers{Names: []string{"accept", "x-b"}, Values: []string{"a, b", "1"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %+v, want %+v", h, want)
	}
}

func TestTraceID(t *testing.T) {
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": "",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "",
		"garbage": "",
	} {
		if got := traceID(tp); got != want {
			t.Errorf("traceID(%q) = %q, want %q", tp, got, want)
		}
	}
}

// The spool keeps whole batches in order, refuses what exceeds its bound,
// and a row survives the round trip through disk exactly.
func TestSpool(t *testing.T) {
	dir := t.TempDir()
	rows := rowsOf(t, 30, time.Date(2026, 11, 25, 1, 2, 3, 456789012, time.UTC))
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := sp.push(&Batch{ID: uint64(i), Rows: rows[(i-1)*10 : i*10]}); err != nil {
			t.Fatal(err)
		}
	}
	// A restart finds the same queue.
	sp, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		b, err := sp.oldest()
		if err != nil {
			t.Fatal(err)
		}
		if b.ID != uint64(i) || !reflect.DeepEqual(b.Rows, rows[(i-1)*10:i*10]) {
			t.Fatalf("batch %d: got id %d, rows equal %v", i, b.ID, reflect.DeepEqual(b.Rows, rows[(i-1)*10:i*10]))
		}
		if err := sp.drop(); err != nil {
			t.Fatal(err)
		}
	}
	if n, size := sp.stats(); n != 0 || size != 0 {
		t.Errorf("after draining: %d batches, %d bytes", n, size)
	}
	small, err := openSpool(t.TempDir(), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := small.push(&Batch{ID: 9, Rows: rows}); err != errSpoolFull {
		t.Errorf("push over the bound: %v, want errSpoolFull", err)
	}
}

// Without npm and without the library, EnsureChDB says what to do.
func TestEnsureChDBExplains(t *testing.T) {
	t.Setenv("CHDB_LIB_PATH", "")
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	_, err := EnsureChDB(context.Background(), dir, nil)
	if err == nil {
		t.Fatal("no error without npm")
	}
	for _, want := range []string{"npm install --prefix " + dir + " chdb@3.4.0", "CHDB_LIB_PATH", "--clickhouse-addr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	t.Setenv("CHDB_LIB_PATH", filepath.Join(dir, "nope.so"))
	if _, err := EnsureChDB(context.Background(), dir, nil); err == nil || !strings.Contains(err.Error(), "CHDB_LIB_PATH") {
		t.Errorf("missing CHDB_LIB_PATH file: %v", err)
	}
}
