package testbed

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on free address %s: %v", addr, err)
	}
	l.Close()
}

// Prometheus scrapes a target and answers queries about it.
func TestPrometheus(t *testing.T) {
	target := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# TYPE testbed_answer gauge\ntestbed_answer 42\n"))
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = target.Serve(l) }()
	t.Cleanup(func() { target.Close() })

	p := StartPrometheus(t, l.Addr().String())
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := p.Query(`testbed_answer{job="sextant"}`, time.Now())
		if err == nil && len(s) == 1 && s[0].Float() == 42 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testbed_answer not scraped within 30s: %v %v", s, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ClickHouse answers SQL, and comes back with its data after an outage.
func TestClickHouse(t *testing.T) {
	c := StartClickHouse(t)
	if v := c.SQL(t, "SELECT version()"); !strings.HasPrefix(v, "18.16") {
		t.Errorf("version %q, want 18.16", v)
	}
	c.SQL(t, "CREATE TABLE default.kept (x UInt8) ENGINE = MergeTree ORDER BY x")
	c.SQL(t, "INSERT INTO default.kept VALUES (7)")
	c.Stop()
	if _, err := c.Query("SELECT 1"); err == nil {
		t.Error("stopped server answered")
	}
	c.Start()
	if got := c.SQL(t, "SELECT sum(x) FROM default.kept"); got != "7" {
		t.Errorf("after restart: %q, want 7", got)
	}
}

// Jaeger is ready on every advertised port.
func TestJaeger(t *testing.T) {
	j := StartJaeger(t)
	for _, addr := range []string{j.OTLPGRPC, j.OTLPHTTP} {
		if !dialable(addr) {
			t.Errorf("%s not accepting", addr)
		}
	}
	resp, err := http.Get(j.Query + "/api/v3/services")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("query API: %s", resp.Status)
	}
}
