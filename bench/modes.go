package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/probes"
)

// mode is one way the traffic is served while h2load measures it.
type mode string

const (
	// modeBaseline: nothing observes the traffic.
	modeBaseline mode = "baseline"
	// modeProbes: the kernel programs attached and their records read
	// and thrown away (no decoding), in a child of the bench: what the
	// kernel side alone costs the traffic.
	modeProbes mode = "probes"
	// modeMetricsOnly: the agent with --metrics-only: every exchange
	// decoded into Prometheus metrics, no flows kept, no Observer API.
	modeMetricsOnly mode = "agent-metrics"
	// modeAgent: the agent keeping whole flows (in its ring, Observer API
	// on: Hubble events are built only for a reader) and serving
	// /metrics, nobody following.
	modeAgent mode = "agent"
	// modeFull: the agent plus a relay following all of its flows over
	// the link (the relay's exporters that need no external service:
	// Observer API, route templating; no embedded store, no OTLP
	// collector).
	modeFull mode = "agent+relay"
	// modeExporters: agent+relay with the relay's embedded flow store
	// (chDB) on, so that every flow also goes through the exporter path
	// and is written to ClickHouse tables. Prometheus needs no mode of
	// its own: the agent always serves /metrics.
	modeExporters mode = "agent+relay+exporters"
	// modePolicy: the agent mode with the policy stage enforcing a
	// CiliumNetworkPolicy on the servers (benchPolicy): every connection
	// decided in the kernel, every verdict a flow.
	modePolicy mode = "agent+policy"
	// modeProxy: no agent, but nghttpx (nghttp2-proxy) in the path as the
	// stand-in for a sidecar proxy: h2load → nghttpx → nghttpd.
	modeProxy mode = "proxy"
)

func parseModes(s string) ([]mode, error) {
	var ms []mode
	for _, f := range strings.Split(s, ",") {
		m := mode(strings.TrimSpace(f))
		switch m {
		case modeBaseline, modeProbes, modeMetricsOnly, modeAgent, modeFull, modeExporters, modePolicy, modeProxy:
			ms = append(ms, m)
		case "":
		default:
			return nil, fmt.Errorf("unknown mode %q (baseline, probes, agent-metrics, agent, agent+relay, agent+relay+exporters, agent+policy, proxy)", m)
		}
	}
	if len(ms) == 0 {
		return nil, errors.New("no modes")
	}
	return ms, nil
}

func (m mode) withAgent() bool {
	return m == modeProbes || m == modeMetricsOnly || m == modeAgent || m == modeFull || m == modeExporters || m == modePolicy
}

// withRelay: the mode runs a relay after the agent.
func (m mode) withRelay() bool { return m == modeFull || m == modeExporters }

// freePort asks the kernel for a free loopback port. Tools that cannot
// listen on port 0 and report it get this one; a race with another process
// is possible but rare and shows as a start failure.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proxy is a running nghttpx between h2load and nghttpd.
type proxy struct {
	cmd  *exec.Cmd
	port int
}

func startProxy(ctx context.Context, dir string, backendPort int) (*proxy, error) {
	if _, err := exec.LookPath("nghttpx"); err != nil {
		return nil, fmt.Errorf("nghttpx not found (apt-get install -y nghttp2-proxy): %w", err)
	}
	// An empty configuration file: nghttpx reads /etc/nghttpx/nghttpx.conf
	// otherwise, and rejects /dev/null now and then.
	conf := filepath.Join(dir, "nghttpx.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		// One worker (the default), cleartext HTTP/2 on both sides: the
		// cheapest configuration a sidecar could have.
		cmd := exec.CommandContext(ctx, "nghttpx",
			fmt.Sprintf("--frontend=127.0.0.1,%d;no-tls", port),
			fmt.Sprintf("--backend=127.0.0.1,%d;;proto=h2", backendPort),
			"--workers=1", "--no-ocsp", "--no-via", "--no-add-x-forwarded-proto",
			"--accesslog-file=/dev/null", "--errorlog-file=/dev/stderr", "--log-level=WARN",
			"--conf="+conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start nghttpx: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitListening(fmt.Sprintf("127.0.0.1:%d", port), exited); err != nil {
			lastErr = fmt.Errorf("nghttpx on port %d: %w (%s)", port, err, strings.TrimSpace(stderr.String()))
			_ = cmd.Process.Kill()
			continue
		}
		return &proxy{cmd: cmd, port: port}, nil
	}
	return nil, lastErr
}

func (p *proxy) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = p.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// relayProc is a running `sextant relay` following one agent.
type relayProc struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	conn       *grpc.ClientConn
	before     time.Duration // CPU at begin
	metricsURL string        // its /metrics: how many events it merged
}

// startRelay starts a relay following the agent; with the embedded store
// (exporters), in a data directory of its own so that no run inherits the
// flows of an earlier one. The store's library is the one `sextant relay`
// finds itself (CHDB_LIB_PATH or ~/.cache/sextant/chdb).
func startRelay(ctx context.Context, binary, dir, agentSocket string, embedded bool) (*relayProc, error) {
	dataDir, err := os.MkdirTemp(dir, "relay-")
	if err != nil {
		return nil, err
	}
	store := "none"
	if embedded {
		store = "embedded"
	}
	socket := filepath.Join(dataDir, "relay.sock")
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "relay",
		"--agent", "unix://"+agentSocket, "--socket", socket,
		"--query-socket", filepath.Join(dataDir, "query.sock"), "--store", store, "--data-dir", dataDir,
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--log-level", "warn",
		// Every flow the agent keeps, whatever its start time: flows of
		// exchanges that began before the relay did (other processes'
		// long-lived streams) count in the agent's ring too.
		"--history", "1h")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start relay: %w", err)
	}
	rp := &relayProc{cmd: cmd, exited: make(chan struct{}), metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)}
	go func() { _ = cmd.Wait(); close(rp.exited) }()
	rp.conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		rp.stop()
		return nil, err
	}
	client := observerpb.NewObserverClient(rp.conn)
	// Ready when the relay says it follows the agent.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-rp.exited:
			return nil, fmt.Errorf("relay exited before it was ready (%v)", cmd.ProcessState)
		case <-ctx.Done():
			rp.stop()
			return nil, ctx.Err()
		default:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := client.ServerStatus(sctx, &observerpb.ServerStatusRequest{})
		cancel()
		if err == nil && st.GetNumConnectedNodes().GetValue() >= 1 {
			return rp, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	rp.stop()
	return nil, errors.New("relay not connected to the agent after 1m")
}

func (rp *relayProc) stop() {
	if rp.conn != nil {
		rp.conn.Close()
	}
	_ = rp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rp.exited:
	case <-time.After(15 * time.Second):
		_ = rp.cmd.Process.Kill()
		<-rp.exited
	}
}

// promCounters reads the agent's /metrics and sums each sextant_ metric over
// its labels: the figures the bench needs are totals.
// lostDropsKey is where promCounters sums the kernel drops that lose
// traffic (probes.DropReason.LosesTraffic): parse stops caused by other
// processes' malformed traffic on the host are not the agent losing
// anything.
const lostDropsKey = "sextant_probe_drops_total/lost"

// losesTraffic says whether a drop series' labels ({reason="…"}) name a
// reason that loses traffic.
func losesTraffic(labels string) bool {
	for r := range probes.DropMax {
		if reason := probes.DropReason(r); reason.LosesTraffic() && strings.Contains(labels, `reason="`+reason.String()+`"`) {
			return true
		}
	}
	return false
}

func promCounters(url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "sextant_") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		sums[name] += v
		if name == "sextant_probe_drops_total" && losesTraffic(labels) {
			sums[lostDropsKey] += v
		}
	}
	return sums, sc.Err()
}
