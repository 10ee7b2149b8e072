package testbed

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PrometheusBinary is Debian's Prometheus 2.42 (apt-get install -y
// --no-install-recommends prometheus), or $SEXTANT_PROMETHEUS.
func PrometheusBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("SEXTANT_PROMETHEUS"); p != "" {
		return p
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		Missing(tb, "prometheus not installed (apt-get install -y --no-install-recommends prometheus): %v", err)
	}
	return p
}

// Prometheus is a real Prometheus scraping the given targets every second
// (job "sextant"), with exemplar storage on, its data in a temp dir.
type Prometheus struct {
	URL string // base URL of the HTTP API
}

// StartPrometheus runs Prometheus until the test ends; it returns once
// Prometheus is ready (not necessarily after its first scrape).
func StartPrometheus(tb testing.TB, scrapeTargets ...string) *Prometheus {
	tb.Helper()
	bin := PrometheusBinary(tb)
	dir := tb.TempDir()
	targets, _ := json.Marshal(scrapeTargets) // a YAML flow sequence
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sextant
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: %s
`, targets)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	addr := FreeAddr(tb)
	logs := &Output{}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=exemplar-storage",
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if tb.Failed() {
			tb.Logf("prometheus log:\n%s", logs.String())
		}
	})
	p := &Prometheus{URL: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			tb.Fatalf("prometheus exited early:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus not ready at %s within 30s: %v", p.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// API calls a GET endpoint of the HTTP API (path like "/api/v1/query")
// and decodes the data of a successful answer into v.
func (p *Prometheus) API(path string, params url.Values, v any) error {
	resp, err := http.Get(p.URL + path + "?" + params.Encode())
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("prometheus %s: %s", path, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("prometheus %s %v: %s %s", path, params, env.Status, env.Error)
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return fmt.Errorf("prometheus %s: decode %s: %w", path, env.Data, err)
	}
	return nil
}

// Sample is one series of a query result: Value for an instant query,
// Values for a range query (each [unix seconds, "value"]).
type Sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

// Float is the value of an instant sample (0 when there is none).
func (s Sample) Float() float64 {
	str, _ := s.Value[1].(string)
	f, _ := strconv.ParseFloat(str, 64)
	return f
}

// Query evaluates an instant query at a time.
func (p *Prometheus) Query(q string, at time.Time) ([]Sample, error) {
	var data struct {
		Result []Sample `json:"result"`
	}
	err := p.API("/api/v1/query", url.Values{"query": {q}, "time": {Time(at)}}, &data)
	return data.Result, err
}

// QueryRange evaluates a range query over [start, end] every step.
func (p *Prometheus) QueryRange(q string, start, end time.Time, step time.Duration) ([]Sample, error) {
	var data struct {
		Result []Sample `json:"result"`
	}
	err := p.API("/api/v1/query_range", url.Values{"query": {q}, "start": {Time(start)}, "end": {Time(end)},
		"step": {fmt.Sprint(int(step.Seconds()))}}, &data)
	return data.Result, err
}

// Time formats a time as the HTTP API takes it (unix seconds, ms precision).
func Time(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}
