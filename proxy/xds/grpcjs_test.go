package xds_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

// jsClient is the grpc-js xDS client process (testdata/grpcjs_client.js).
type jsClient struct {
	t     *testing.T
	in    io.WriteCloser
	lines *bufio.Scanner
}

type jsResult struct {
	Counts    map[string]int `json:"counts"`
	Errors    int            `json:"errors"`
	LastError int            `json:"lastError"`
	Details   string         `json:"details"`
}

func startJS(t *testing.T, cp *xdstest.ControlPlane, node, target string) *jsClient {
	t.Helper()
	mods := xdstest.GRPCJSModules(t)
	script, err := filepath.Abs("testdata/grpcjs_client.js")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script, target)
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods, "GRPC_XDS_BOOTSTRAP_CONFIG="+string(cp.Bootstrap(node)))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("grpc-js client: %v", err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Error("grpc-js client did not exit")
		}
	})
	return &jsClient{t: t, in: in, lines: bufio.NewScanner(out)}
}

func (c *jsClient) do(format string, args ...any) jsResult {
	c.t.Helper()
	fmt.Fprintf(c.in, format+"\n", args...)
	got := make(chan bool, 1)
	go func() { got <- c.lines.Scan() }()
	select {
	case ok := <-got:
		if !ok {
			c.t.Fatalf("grpc-js client ended: %v", c.lines.Err())
		}
	case <-time.After(120 * time.Second):
		c.t.Fatalf("grpc-js client silent for 120s after %q", fmt.Sprintf(format, args...))
	}
	var r jsResult
	if err := json.Unmarshal(c.lines.Bytes(), &r); err != nil {
		c.t.Fatalf("grpc-js client said %q: %v", c.lines.Text(), err)
	}
	return r
}

// @grpc/grpc-js-xds, a second independent xDS implementation, against
// the same control plane: the 90/10 split shifted live, header routing.
func TestGRPCJSWeightedSplitShiftedLive(t *testing.T) {
	pl := xdstest.StartPipeline(t)
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a, b := xdstest.StartBackend(t, "js-a", nil), xdstest.StartBackend(t, "js-b", nil)
	route := func(wa, wb int) string {
		return backendsDoc(a, b) + fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: js}
spec:
  hostnames: [js.test]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: js-b}]
  - backendRefs:
    - {name: js-a, weight: %d}
    - {name: js-b, weight: %d}
`, wa, wb)
	}
	cp.Apply(t, route(100, 0))
	js := startJS(t, cp, "client-js", "js.test")
	total := map[string]int{}
	tally := func(r jsResult) jsResult {
		if r.Errors > 0 {
			t.Fatalf("grpc-js: %d calls failed (last code %d: %s)", r.Errors, r.LastError, r.Details)
		}
		add(total, r.Counts)
		return r
	}
	if r := tally(js.do("run 300")); r.Counts["js-a"] != 300 {
		t.Errorf("100/0: %v", r.Counts)
	}
	if r := tally(js.do("run 100 x-canary yes")); r.Counts["js-b"] != 100 {
		t.Errorf("x-canary: yes → %v", r.Counts)
	}
	cp.Apply(t, route(90, 10))
	tally(js.do("until js-b"))
	const n = 2000
	r := tally(js.do("run %d", n))
	mean, sd := n*0.1, math.Sqrt(n*0.1*0.9)
	if math.Abs(float64(r.Counts["js-b"])-mean) > 5*sd {
		t.Errorf("grpc-js 90/10 over %d: %v (js-b within %.0f±%.0f)", n, r.Counts, mean, 5*sd)
	}
	t.Logf("grpc-js 90/10: %v", r.Counts)
	cp.Apply(t, route(0, 100))
	for {
		tally(js.do("until js-b"))
		if r := tally(js.do("run 20")); r.Counts["js-b"] == 20 {
			break
		}
	}
	if r := tally(js.do("run 300")); r.Counts["js-b"] != 300 {
		t.Errorf("0/100: %v", r.Counts)
	}
	if a.Calls() != total["js-a"] || b.Calls() != total["js-b"] {
		t.Errorf("backends received %d/%d, grpc-js counted %v", a.Calls(), b.Calls(), total)
	}
	xdstest.RequireFlows(t, pl, unary, map[*xdstest.Backend]int{a: total["js-a"], b: total["js-b"]})
}
