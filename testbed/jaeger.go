package testbed

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Jaeger is a real Jaeger v2 (bin/jaeger, built from tools/jaeger) with
// memory storage, every port on 127.0.0.1. Its OTLP receiver takes traces
// into storage and metrics into Jaeger's bundled Prometheus exporter, so
// both signals are read back from a real backend.
type Jaeger struct {
	OTLPGRPC, OTLPHTTP string // host:port
	Query              string // base URL of the query API
	Metrics            string // URL of the Prometheus exporter's /metrics
}

var buildJaeger sync.Once

// JaegerBinary returns bin/jaeger. When it is missing the test skips, but
// under CI=true it builds it (≈8 min cold; `go tool task tools` does the
// same ahead of time).
func JaegerBinary(tb testing.TB) string {
	tb.Helper()
	root := repoRoot(tb)
	bin := filepath.Join(root, "bin", "jaeger")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if os.Getenv("CI") != "true" {
		tb.Skipf("%s missing: build it with `go tool task tools` or `cd tools/jaeger && go build -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger` (CI=true builds it)", bin)
	}
	buildJaeger.Do(func() {
		tb.Logf("building %s from tools/jaeger (several minutes when cold)", bin)
		cmd := exec.Command("go", "build", "-o", bin, "github.com/jaegertracing/jaeger/cmd/jaeger")
		cmd.Dir = filepath.Join(root, "tools", "jaeger")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Logf("build jaeger: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("jaeger binary: %v", err)
	}
	return bin
}

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:%d
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 1000000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
  prometheus:
    endpoint: 127.0.0.1:%d
    resource_to_telemetry_conversion:
      enabled: true
`

// StartJaeger runs Jaeger until the test ends; it returns once the health
// check says so and both OTLP ports accept.
func StartJaeger(tb testing.TB) *Jaeger {
	tb.Helper()
	bin := JaegerBinary(tb)
	p := freePorts(tb, 6)
	health, query, queryGRPC, grpcPort, httpPort, prom := p[0], p[1], p[2], p[3], p[4], p[5]
	cfg := filepath.Join(tb.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, health, query, queryGRPC, grpcPort, httpPort, prom), 0o644); err != nil {
		tb.Fatal(err)
	}
	j := &Jaeger{
		OTLPGRPC: fmt.Sprintf("127.0.0.1:%d", grpcPort),
		OTLPHTTP: fmt.Sprintf("127.0.0.1:%d", httpPort),
		Query:    fmt.Sprintf("http://127.0.0.1:%d", query),
		Metrics:  fmt.Sprintf("http://127.0.0.1:%d/metrics", prom),
	}
	logs := &Output{}
	cmd := exec.Command(bin, "--config", "file:"+cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("jaeger log:\n%s", logs.String())
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			tb.Fatalf("jaeger exited early:\n%s", logs.String())
		default:
		}
		if healthy(fmt.Sprintf("http://127.0.0.1:%d/status", health)) && dialable(j.OTLPGRPC) && dialable(j.OTLPHTTP) {
			return j
		}
		if time.Now().After(deadline) {
			tb.Fatalf("jaeger not ready after 60s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// healthy reports whether a v2 health check endpoint says so.
func healthy(u string) bool {
	resp, err := http.Get(u)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct{ Healthy bool }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&st) == nil && st.Healthy
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}
