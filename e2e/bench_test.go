package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestBenchSmoke runs `bench -short` (what CI runs of `task bench`) so the
// harness keeps working: it must finish, print every figure, and the agent
// must have seen the load (2 flows per request at least). No timing is
// asserted: numbers from a shared 2-core machine prove nothing.
func TestBenchSmoke(t *testing.T) {
	requireRoot(t)
	requireTool(t, "h2load")
	requireTool(t, "nghttpd")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	build := func(out, pkg string) {
		t.Helper()
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	bench := filepath.Join(tmp, "bench")
	build(bench, "./bench")

	agents := map[string]string{"inproc": "inproc"}
	if _, err := os.Stat(filepath.Join(root, "cmd", "sextant")); err == nil {
		sextant := filepath.Join(tmp, "sextant")
		build(sextant, "./cmd/sextant")
		agents["binary"] = sextant
	} else if inCI() {
		t.Fatalf("cmd/sextant missing: the bench cannot run the real agent")
	}
	for name, agent := range agents {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bench, "-short", "-agent", agent)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			t.Logf("bench -short -agent %s:\n%s", agent, out)
			if err != nil {
				t.Fatalf("bench -short: %v", err)
			}
			for _, re := range []string{
				`(?m)^round 1 without agent +p50 \S+ +p95 \S+ +p99 \S+`,
				`(?m)^round 1 with agent +p50 \S+ +p95 \S+ +p99 \S+`,
				`(?m)ratio with/without +[0-9.]+ +[0-9.]+ +[0-9.]+`,
				`(?m)^agent: +CPU [0-9.]+% of one core .* RSS [0-9.]+ MiB`,
			} {
				if !regexp.MustCompile(re).Match(out) {
					t.Errorf("output lacks %s", re)
				}
			}
			m := regexp.MustCompile(`(?m)^kernel: (\d+) ns per request`).FindSubmatch(out)
			if m == nil || string(m[1]) == "0" {
				t.Errorf("no kernel time per request measured (bpf_stats)")
			}
			m = regexp.MustCompile(`(?m)^flows: +(\d+) seen by the agent for (\d+) requests`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("output lacks the flow count")
			}
			flows, _ := strconv.Atoi(string(m[1]))
			requests, _ := strconv.Atoi(string(m[2]))
			if requests == 0 || flows < 2*requests {
				t.Errorf("agent saw %d flows for %d requests, want at least %d (client and server side)", flows, requests, 2*requests)
			}
		})
	}
}
