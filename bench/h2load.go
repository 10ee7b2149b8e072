package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a running nghttpd.
type server struct {
	cmd  *exec.Cmd
	port int
}

// bodyName is the document nghttpd serves with n bytes.
func bodyName(n int) string { return fmt.Sprintf("body-%d", n) }

func startNghttpd(ctx context.Context, dir string, bodySizes []int, pol *benchPolicy) (*server, error) {
	docroot := filepath.Join(dir, "htdocs")
	if err := os.MkdirAll(docroot, 0o755); err != nil {
		return nil, err
	}
	for _, n := range bodySizes {
		if err := os.WriteFile(filepath.Join(docroot, bodyName(n)), bytes.Repeat([]byte{'s'}, n), 0o644); err != nil {
			return nil, err
		}
	}
	// nghttpd cannot listen on port 0 and tell us the port: pick a free one
	// and retry if someone else takes it first.
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.CommandContext(ctx, "nghttpd", "-a", "127.0.0.1", "--no-tls", "-d", docroot, strconv.Itoa(port))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		pol.inCgroup(cmd.SysProcAttr)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start nghttpd: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		s := &server{cmd: cmd, port: port}
		if err := waitListening(fmt.Sprintf("127.0.0.1:%d", port), exited); err != nil {
			lastErr = fmt.Errorf("nghttpd on port %d: %w (%s)", port, err, strings.TrimSpace(stderr.String()))
			_ = cmd.Process.Kill()
			continue
		}
		return s, nil
	}
	return nil, lastErr
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = s.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

func waitListening(addr string, exited <-chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening after 15s")
}

// h2loadRun is the fixed-rate load.
type h2loadRun struct {
	url                   string
	clients, rps, streams int // rps per client; 0: saturation
	dir                   string
}

var h2loadFinished = regexp.MustCompile(`finished in ([0-9.]+[a-zµ]+),`)

var h2loadDone = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`)

// run sends n requests and returns every request's latency (time to end of
// response, from h2load's per-request log) and the wall time of the run.
func (h h2loadRun) run(ctx context.Context, name string, n int) (latencies, time.Duration, error) {
	logPath := filepath.Join(h.dir, "h2load-"+name+".log")
	args := []string{
		"-n", strconv.Itoa(n), "-c", strconv.Itoa(h.clients), "-m", strconv.Itoa(h.streams), "-t", "1",
		"--log-file", logPath, h.url,
	}
	if h.rps > 0 {
		args = append(args, "--rps", strconv.Itoa(h.rps))
	}
	cmd := exec.CommandContext(ctx, "h2load", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("h2load %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	m := h2loadDone.FindStringSubmatch(string(out))
	want := strconv.Itoa(n)
	if m == nil || m[1] != want || m[4] != want {
		return nil, 0, fmt.Errorf("h2load %s: not all %d requests succeeded:\n%s", name, n, out)
	}
	// h2load's own clock excludes its start-up and the connection set-up.
	if f := h2loadFinished.FindStringSubmatch(string(out)); f != nil {
		if d, err := time.ParseDuration(f[1]); err == nil && d > 0 {
			wall = d
		}
	}
	lat, err := readH2loadLog(logPath)
	if err != nil {
		return nil, 0, err
	}
	if len(lat) != n {
		return nil, 0, fmt.Errorf("h2load %s: log has %d requests, want %d", name, len(lat), n)
	}
	return lat, wall, nil
}

// readH2loadLog parses --log-file rows: start µs, status, µs to end of
// response (tab separated; later versions may add columns).
func readH2loadLog(path string) (latencies, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lat latencies
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 3 {
			continue
		}
		if cols[1] != "200" {
			return nil, fmt.Errorf("%s: request with status %s", path, cols[1])
		}
		us, err := strconv.ParseInt(cols[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bad duration %q", path, cols[2])
		}
		lat = append(lat, time.Duration(us)*time.Microsecond)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	lat.sort()
	return lat, nil
}

// latencies are sorted request latencies.
type latencies []time.Duration

func (l latencies) sort() { slices.Sort(l) }

// pct is the nearest-rank percentile of sorted latencies.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(float64(len(l))*p/100+0.999999) - 1
	return l[min(max(i, 0), len(l)-1)]
}

func (l latencies) mean() time.Duration {
	if len(l) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return (sum / time.Duration(len(l))).Round(time.Microsecond)
}
