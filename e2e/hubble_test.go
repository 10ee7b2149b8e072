package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/testbed"
)

// agentDaemon is a `sextant agent` process of a test, scoped to the
// test's cgroup.
type agentDaemon struct {
	*testbed.Daemon
	socket string // unix:///… of its Observer API
	tcp    string // its mTLS address, when started with certificates
}

// startAgent runs `sextant agent` for node, observing only cgroup cg, on a
// private socket (plus mTLS TCP with the certificates in certDir when
// set), and waits until it answers, which proves the probes are attached.
func startAgent(t *testing.T, node string, cg *testbed.Cgroup, certDir string, extra ...string) *agentDaemon {
	t.Helper()
	tmp := t.TempDir()
	a := &agentDaemon{socket: "unix://" + filepath.Join(tmp, "observer.sock")}
	args := []string{"agent", "--node", node, "--cgroup", cg.Path, "--socket", strings.TrimPrefix(a.socket, "unix://"),
		"--metrics-listen", "", "--log-level", "debug"}
	if certDir != "" {
		a.tcp = testbed.FreeAddr(t)
		f := certs.ServerFiles(certDir)
		args = append(args, "--listen", a.tcp, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA)
	}
	a.Daemon = testbed.StartDaemon(t, "agent "+node, testbed.Sextant(t), append(args, extra...)...)
	hubble := testbed.Hubble(t)
	a.Await("agent answering", 90*time.Second, func() error {
		out, err := exec.Command(hubble, "status", "--server", a.socket).CombinedOutput()
		if err != nil {
			return fmt.Errorf("hubble status: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "Healthcheck") || !strings.Contains(string(out), "Ok") {
			t.Fatalf("hubble status:\n%s", out)
		}
		return nil
	})
	return a
}

// devCerts writes a development CA and certificates (sextant certs).
func devCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.Generate(dir, certs.GenerateOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hubbleTLS are the hubble CLI's flags for mTLS with the certificates of dir.
func hubbleTLS(dir string) []string {
	f := certs.ClientFiles(dir)
	return []string{"--tls", "--tls-server-name", "localhost", "--tls-ca-cert-files", f.CA,
		"--tls-client-cert-file", f.Cert, "--tls-client-key-file", f.Key}
}

// h2cServer serves /e2e/… over cleartext HTTP/2: /e2e/fail… answers 500,
// everything else 200.
func h2cServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/e2e/fail") {
				w.WriteHeader(http.StatusInternalServerError)
			}
			io.WriteString(w, "ok\n")
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("GET %s spoke %s, want HTTP/2", url, resp.Proto)
	}
}

// event is one line of `-o json` output of either CLI.
func parseEvents(t *testing.T, out []byte) []*observerpb.GetFlowsResponse {
	t.Helper()
	var events []*observerpb.GetFlowsResponse
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e observerpb.GetFlowsResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &e); err != nil {
			t.Fatalf("json line %q: %v", line, err)
		}
		events = append(events, &e)
	}
	return events
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr)
	}
	return out
}

type seen struct {
	path string
	typ  flowpb.L7FlowType
	code uint32
}

func summarize(events []*observerpb.GetFlowsResponse) map[seen]int {
	out := map[seen]int{}
	for _, e := range events {
		f := e.GetFlow()
		h := f.GetL7().GetHttp()
		if h == nil {
			continue
		}
		path := h.GetUrl()
		if i := strings.Index(path, "/e2e/"); i >= 0 {
			path = path[i:]
		}
		out[seen{path, f.GetL7().GetType(), h.GetCode()}]++
	}
	return out
}

// The agent with the real probes serves what an h2c workload did to
// `sextant observe` and to the stock hubble CLI, with server-side filters,
// --last, --follow and status.
func TestObserverAPIWithHubbleCLI(t *testing.T) {
	testbed.RequireRoot(t)
	sextant, hubble := testbed.Sextant(t), testbed.Hubble(t)
	// The workload runs in this process: in a cgroup of its own, the only
	// one the agent observes.
	cg := testbed.NewCgroup(t, "hubble")
	cg.Join(t)
	dir := devCerts(t)
	a := startAgent(t, "e2e-node", cg, dir)
	server, listen := a.socket, a.tcp
	tlsArgs := hubbleTLS(dir)

	addr := h2cServer(t)
	base := "http://" + addr
	c := testbed.H2CClient(t)
	for range 3 {
		get(t, c, base+"/e2e/ok")
	}
	for range 2 {
		get(t, c, base+"/e2e/fail")
	}

	// Each exchange is seen twice (client and server are both local) and
	// makes a request and a response event: 5 × 2 × 2.
	const want = 20
	var events []*observerpb.GetFlowsResponse
	deadline := time.Now().Add(20 * time.Second)
	for {
		events = parseEvents(t, run(t, sextant, "observe", "--server", server, "--http-path", "^/e2e/", "--last", "1000", "-o", "json"))
		if len(events) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := summarize(events)
	wantSeen := map[seen]int{
		{"/e2e/ok", flowpb.L7FlowType_REQUEST, 0}:      6,
		{"/e2e/ok", flowpb.L7FlowType_RESPONSE, 200}:   6,
		{"/e2e/fail", flowpb.L7FlowType_REQUEST, 0}:    4,
		{"/e2e/fail", flowpb.L7FlowType_RESPONSE, 500}: 4,
	}
	if fmt.Sprint(got) != fmt.Sprint(wantSeen) {
		t.Fatalf("sextant observe: %v\nwant %v", got, wantSeen)
	}
	for _, e := range events {
		f := e.GetFlow()
		if e.GetNodeName() != "e2e-node" || f.GetNodeName() != "e2e-node" || f.GetVerdict() != flowpb.Verdict_FORWARDED ||
			f.GetL7().GetHttp().GetProtocol() != "HTTP/2" || f.GetSummary() == "" {
			t.Fatalf("event lacks node, verdict, protocol or summary: %v", e)
		}
	}

	// The stock hubble CLI: JSON, filters applied by the server.
	hubbleJSON := summarize(parseEvents(t, run(t, hubble, "observe", "--server", server, "-o", "json", "--last", "1000", "--http-path", "^/e2e/")))
	if fmt.Sprint(hubbleJSON) != fmt.Sprint(wantSeen) {
		t.Fatalf("hubble observe -o json: %v\nwant %v", hubbleJSON, wantSeen)
	}
	errs := parseEvents(t, run(t, hubble, "observe", "--server", server, "-o", "json", "--last", "1000", "--http-status", "500"))
	if s := summarize(errs); s[seen{"/e2e/fail", flowpb.L7FlowType_RESPONSE, 500}] != 4 {
		t.Fatalf("hubble observe --http-status 500: %v, want the 4 /e2e/fail responses", s)
	}
	for _, e := range errs {
		if code := e.GetFlow().GetL7().GetHttp().GetCode(); code != 500 {
			t.Fatalf("hubble observe --http-status 500 returned status %d: %v", code, e)
		}
	}

	// Compact output over TCP with mTLS, with the field mask hubble
	// sends; --last.
	compact := strings.Split(strings.TrimSpace(string(run(t, hubble, append([]string{"observe", "--server", listen, "--last", "3", "--http-path", "^/e2e/ok$"}, tlsArgs...)...))), "\n")
	if len(compact) != 3 {
		t.Fatalf("hubble observe --last 3: %d lines:\n%s", len(compact), strings.Join(compact, "\n"))
	}
	for _, l := range compact {
		if !strings.Contains(l, "/e2e/ok") || !strings.Contains(l, "FORWARDED") || strings.HasSuffix(l, "()") ||
			!(strings.Contains(l, "http-request") || strings.Contains(l, "http-response")) {
			t.Fatalf("hubble compact line %q", l)
		}
	}

	// hubble status over TCP (mTLS).
	status := string(run(t, hubble, append([]string{"status", "--server", listen}, tlsArgs...)...))
	if !strings.Contains(status, "Healthcheck") || !strings.Contains(status, "Ok") || !strings.Contains(status, "Flows") {
		t.Fatalf("hubble status:\n%s", status)
	}
	nodes := string(run(t, hubble, "list", "nodes", "--server", server))
	if !strings.Contains(nodes, "e2e-node") || !strings.Contains(nodes, "Connected") {
		t.Fatalf("hubble list nodes:\n%s", nodes)
	}

	// --follow, with both CLIs: new flows arrive while they run.
	follow := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Following starts now: call until the follower shows what it saw.
		var stop sync.Once
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(300 * time.Millisecond):
					resp, err := c.Get(base + "/e2e/follow")
					if err == nil {
						resp.Body.Close()
					}
				}
			}
		}()
		defer stop.Do(func() { close(done) })
		var got []*observerpb.GetFlowsResponse
		for len(got) < 4 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s ended: %s", filepath.Base(name), stderr.String())
				}
				got = append(got, parseEvents(t, []byte(l))...)
			case <-ctx.Done():
				t.Fatalf("%s --follow: %d events in 30s; stderr: %s", filepath.Base(name), len(got), stderr.String())
			}
		}
		for _, e := range got {
			if !strings.HasSuffix(e.GetFlow().GetL7().GetHttp().GetUrl(), "/e2e/follow") {
				t.Fatalf("%s --follow: unexpected event %v", filepath.Base(name), e)
			}
		}
	}
	follow(hubble, "observe", "--server", server, "--follow", "-o", "json", "--http-path", "^/e2e/follow$")
	follow(sextant, "observe", "--server", server, "--follow", "-o", "json", "--http-path", "^/e2e/follow$")
}
