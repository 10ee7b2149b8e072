package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/testbed"
)

// runTool runs an external client to completion and returns its pid and
// stdout; any failure fails the test.
func runTool(t *testing.T, name string, args ...string) (pid uint32, stdout string) {
	t.Helper()
	cmd := exec.Command(requireTool(t, name), args...)
	p := startProc(t, name, cmd)
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		for line := range p.lines {
			out.WriteString(line + "\n")
		}
	}()
	p.waitExit(3 * time.Minute)
	<-done
	return p.pid(), out.String()
}

// Test 3: curl --http2-prior-knowledge (nghttp2 inside curl) against the Go
// h2c server. One request per curl process: curl 7.88.1 (Debian 12) fails
// every further stream on a reused prior-knowledge connection with "(16)
// Error in the HTTP2 framing layer" — against nghttpd too, with or without
// sextant — so each request gets its own process (and its own pid).
func TestCurlPriorKnowledge(t *testing.T) {
	requireTool(t, "curl")
	pl := startPipeline(t)
	srv := startPeer(t, "h2c-server", nil)
	addr, port := serverAddr(t, srv)

	body := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(body, bytes.Repeat([]byte{'p'}, 1234), 0o644); err != nil {
		t.Fatal(err)
	}
	specs := []reqSpec{
		{Method: "GET", Path: "/s/200/42/curl/one"},
		{Method: "GET", Path: "/s/404/0/curl/two"},
		{Method: "GET", Path: "/s/500/7/curl/three?x=1"},
		{Method: "GET", Path: "/s/200/70000/nolen/curl/large"}, // several DATA frames, beyond the initial window
		{Method: "POST", Path: "/s/201/9/curl/post", Body: 1234},
	}
	var wants []want
	pids := []uint32{srv.pid()}
	for _, s := range specs {
		args := []string{"-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{http_version}"}
		if s.Body > 0 {
			args = append(args, "--data-binary", "@"+body)
		}
		pid, out := runTool(t, "curl", append(args, "http://"+addr+s.Path)...)
		// The workload itself must have gone as planned.
		code, size, _ := parseWorkloadPath(strings.SplitN(s.Path, "?", 2)[0])
		if exp := fmt.Sprintf("%d %d 2\n", code, size); out != exp {
			t.Fatalf("curl %s %s printed %q, want %q", s.Method, s.Path, out, exp)
		}
		pids = append(pids, pid)
		wants = append(wants, wantHTTP("HTTP/2", "http", addr, port, s).both(pid, srv.pid())...)
	}
	got := pl.await(workload(pids, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
}

// Test 4: h2load against nghttpd, many concurrent streams on few
// connections: 2000 requests → exactly 2000 flows on each side.
func TestH2LoadNghttpd(t *testing.T) {
	requireTool(t, "h2load")
	nghttpd := requireTool(t, "nghttpd")
	pl := startPipeline(t)

	const fileSize, requests = 4321, 2000
	docroot := t.TempDir()
	if err := os.WriteFile(filepath.Join(docroot, "file.bin"), bytes.Repeat([]byte{'n'}, fileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, port := startNghttpd(t, nghttpd, docroot)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	h2loadPID, out := runTool(t, "h2load", "-n", fmt.Sprint(requests), "-c", "4", "-m", "32", "http://"+addr+"/file.bin")
	m := regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`).FindStringSubmatch(out)
	okLine := fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored", requests, requests, requests, requests)
	if m == nil || m[0] != okLine {
		t.Fatalf("h2load did not finish cleanly:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("status codes: %d 2xx", requests)) {
		t.Fatalf("h2load: not all responses were 2xx:\n%s", out)
	}

	w := want{
		Protocol:   "HTTP/2",
		Method:     "GET",
		Scheme:     "http",
		Authority:  addr,
		Path:       "/file.bin",
		Status:     200,
		RespBytes:  fileSize,
		Outcome:    flow.OutcomeComplete,
		ServerPort: port,
	}
	var wants []want
	for range requests {
		wants = append(wants, w.both(h2loadPID, srv.pid())...)
	}
	got := pl.await(workload([]uint32{h2loadPID, srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
}

// startNghttpd serves docroot on a free port. nghttpd cannot listen on port
// 0 and report it: pick a free port, and pick again should another process
// take it first.
func startNghttpd(t *testing.T, nghttpd, docroot string) (*proc, uint16) {
	t.Helper()
	var last *proc
	for range 3 {
		port := uint16(testbed.FreePort(t))
		srv := startProc(t, "nghttpd", exec.Command(nghttpd, "-a", "127.0.0.1", "--no-tls", "-d", docroot, fmt.Sprint(port)))
		if dialable(fmt.Sprintf("127.0.0.1:%d", port), srv.exited, 30*time.Second) {
			return srv, port
		}
		select {
		case <-srv.exited: // lost the port to someone else: try another
		default:
			t.Fatalf("nghttpd not listening on port %d after 30s", port)
		}
		last = srv
	}
	<-last.exited
	t.Fatalf("nghttpd exited (%v) three times; stderr:\n%s", last.err, last.stderr.String())
	return nil, 0
}

// dialable polls until addr accepts a TCP connection, the process exits,
// or timeout.
func dialable(addr string, exited <-chan struct{}, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
	}
	return false
}
