package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/sextant/sextant/testbed"
)

// TestBenchSmoke runs `bench -short` (what CI runs of `task bench`) so the
// harness keeps working: every mode (baseline, agent, agent+relay, proxy)
// runs once at a fixed rate and once at saturation with a few hundred
// requests, plus one kernel-time run and one capacity step. It must finish,
// print every figure, and the agent must have seen the load (2 flows per
// request at least) without kernel drops. No timing is asserted: numbers
// from a shared 2-core machine prove nothing.
func TestBenchSmoke(t *testing.T) {
	testbed.RequireRoot(t)
	requireTool(t, "h2load")
	requireTool(t, "nghttpd")
	requireTool(t, "nghttpx")
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

	// The in-process pipeline has no relay: it runs the other modes.
	runs := map[string][]string{"inproc": {"-agent", "inproc", "-modes", "baseline,agent,proxy"}}
	if _, err := os.Stat(filepath.Join(root, "cmd", "sextant")); err == nil {
		sextant := filepath.Join(tmp, "sextant")
		build(sextant, "./cmd/sextant")
		runs["binary"] = []string{"-agent", sextant}
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("cmd/sextant missing: the bench cannot run the real agent")
	}
	for name, args := range runs {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bench, append([]string{"-short"}, args...)...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			t.Logf("bench -short %v:\n%s", args, out)
			if err != nil {
				t.Fatalf("bench -short: %v", err)
			}
			modes := []string{"baseline", "agent", "proxy"}
			if name == "binary" {
				modes = append(modes, `agent\+relay`)
			}
			for _, m := range modes {
				for _, workload := range []string{`500 req/s, 128 B`, `saturation, 128 B`} {
					re := `(?m)^ *` + workload + ` +` + m + ` +\d+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ `
					if !regexp.MustCompile(re).Match(out) {
						t.Errorf("summary lacks the %s row of %s", m, workload)
					}
				}
			}
			if name == "binary" {
				// The relay's CPU and RSS are measured in agent+relay rows.
				if !regexp.MustCompile(`(?m)^ *500 req/s, 128 B +agent\+relay( +\S+){7} +\d+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ `).Match(out) {
					t.Errorf("agent+relay row lacks relay CPU/RSS")
				}
			}
			// Per agent row: kernel ns/req (bpf_stats run) … kernel drops,
			// ring lost, flows/expected.
			agentRow := regexp.MustCompile(`(?m)^ *500 req/s, 128 B +agent +(?:\S+ +){7}(\d+) +[0-9.]+ +[0-9.]+ +\S+ +\S+ +\d+ +(\d+) +(\d+) +(\d+)/(\d+) *$`)
			m := agentRow.FindSubmatch(out)
			if m == nil {
				t.Fatalf("summary lacks a complete agent row")
			}
			if string(m[1]) == "0" {
				t.Errorf("no kernel time per request measured (bpf_stats)")
			}
			if string(m[2]) != "0" {
				t.Errorf("kernel drops at 500 req/s: %s", m[2])
			}
			flows, _ := strconv.Atoi(string(m[4]))
			want, _ := strconv.Atoi(string(m[5]))
			if want == 0 || flows < want {
				t.Errorf("agent saw %d flows, want at least %d (client and server side of every request)", flows, want)
			}
			if !regexp.MustCompile(`(?m)^capacity: (lossless up to \d+ req/s|no step was lossless)`).Match(out) {
				t.Errorf("output lacks the capacity verdict")
			}
		})
	}
}
