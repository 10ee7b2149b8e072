package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/sextant/sextant/testbed"
)

// `sextant agent --metrics-only`: every exchange still reaches /metrics,
// exactly once per side, while no flow is kept and no Observer API is
// served.
func TestAgentMetricsOnly(t *testing.T) {
	testbed.RequireRoot(t)
	bin := testbed.Sextant(t)
	tmp := t.TempDir()
	cg := testbed.NewCgroup(t, "metrics-only")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "ok")
	}), &http2.Server{})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	socket := filepath.Join(tmp, "agent.sock")
	metricsAddr := testbed.FreeAddr(t)
	metricsURL := "http://" + metricsAddr + "/metrics"
	testbed.StartDaemon(t, "agent", bin, "agent", "--metrics-only", "--node", "metrics-only", "--cgroup", cg.Path,
		"--socket", socket, "--metrics-listen", metricsAddr, "--log-level", "debug")
	awaitMetrics(t, metricsURL)
	// The workload runs in this process, from now on in the only cgroup
	// the agent observes.
	cg.Join(t)

	// No Observer API: neither the socket nor the TCP listener exists, and
	// observe says so.
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("metrics-only agent created its Observer socket: %v", err)
	}
	out, err := exec.Command(bin, "observe", "--server", "unix://"+socket, "--last", "1").CombinedOutput()
	if err == nil {
		t.Fatalf("observe against a metrics-only agent succeeded:\n%s", out)
	}

	client := testbed.H2CClient(t)
	const n = 50
	for i := range n {
		resp, err := client.Get(fmt.Sprintf("http://%s/items/%d", ln.Addr(), i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d, want 202", resp.StatusCode)
		}
	}

	counts := func() (server, client float64, families map[string]*dto.MetricFamily) {
		t.Helper()
		resp, err := http.Get(metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err = parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("parse %s: %v", metricsURL, err)
		}
		sum := func(name string) float64 {
			var v float64
			for _, m := range families[name].GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["server_port"] == port && labels["http_response_status_code"] == "202" && labels["http_route"] == "/items/{id}" {
					v += float64(m.GetHistogram().GetSampleCount())
				}
			}
			return v
		}
		return sum("http_server_request_duration_seconds"), sum("http_client_request_duration_seconds"), families
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, c, _ := counts()
		if s == n && c == n {
			break
		}
		if s > n || c > n || time.Now().After(deadline) {
			t.Fatalf("metrics count %v server and %v client requests, want %d each", s, c, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Nothing trails: late duplicates would show now.
	time.Sleep(time.Second)
	s, c, families := counts()
	if s != n || c != n {
		t.Fatalf("after a grace period: %v server and %v client requests, want %d each", s, c, n)
	}
	for name := range families {
		if strings.HasPrefix(name, "sextant_ring_") || name == "sextant_feed_lost_flows_total" {
			t.Errorf("metrics-only agent reports %s: it keeps no ring", name)
		}
	}
	if _, ok := families["sextant_collector_flows_total"]; !ok {
		t.Errorf("self-metrics missing in metrics-only mode")
	}
}
