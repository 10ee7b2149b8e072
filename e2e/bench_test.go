package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sextant/sextant/testbed"
)

// TestBenchSmoke runs `bench -short` (what CI runs of `task bench`) so the
// harness keeps working, split over runs that cover each piece once to
// stay under a minute: the in-process pipeline runs baseline, agent and
// proxy on h2load at a fixed rate and at saturation plus one capacity step;
// the sextant binary runs every mode (baseline, agent, agent+relay,
// agent+relay+exporters with the embedded store, agent+policy, proxy) on h2load at a
// fixed rate, and baseline, agent, agent+policy and proxy on the gRPC unary and
// server-streaming workloads; a few hundred requests each, plus one
// kernel-time run per workload. It must finish, print every figure, and
// the agent must have seen the load (2 flows per request at least) without
// kernel drops. No timing is asserted: numbers from a shared 2-core machine
// prove nothing.
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

	type smoke struct {
		args      []string
		modes     []string // regexps
		workloads []string // as the summary names them
		capacity  bool
	}
	h2 := []string{`500 req/s, 128 B`, `saturation, 128 B`}
	// The in-process pipeline has no relay: it runs the other modes.
	runs := map[string]smoke{"inproc": {
		args:      []string{"-agent", "inproc", "-modes", "baseline,agent,proxy", "-workloads", "500:small,0:small"},
		modes:     []string{"baseline", "agent", "proxy"},
		workloads: h2, capacity: true,
	}}
	if _, err := os.Stat(filepath.Join(root, "cmd", "sextant")); err == nil {
		sextant := filepath.Join(tmp, "sextant")
		build(sextant, "./cmd/sextant")
		runs["binary"] = smoke{
			args: []string{"-agent", sextant, "-modes", "baseline,probes,agent-metrics,agent,agent+relay,agent+relay+exporters,agent+policy,proxy",
				"-workloads", "500:small", "-capacity", ""},
			modes:     []string{"baseline", "probes", "agent-metrics", "agent", `agent\+relay`, `agent\+relay\+exporters`, `agent\+policy`, "proxy"},
			workloads: []string{`500 req/s, 128 B`},
		}
		runs["binary-grpc"] = smoke{
			args: []string{"-agent", sextant, "-modes", "baseline,agent,agent+policy,proxy",
				"-workloads", "grpc-unary:200:small,grpc-stream:200:small", "-capacity", ""},
			modes:     []string{"baseline", "agent", `agent\+policy`, "proxy"},
			workloads: []string{`gRPC unary 200 calls/s, 128 B`, `gRPC stream 200 calls/s, 128 B`},
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("cmd/sextant missing: the bench cannot run the real agent")
	}
	for name, run := range runs {
		t.Run(name, func(t *testing.T) {
			// In a cgroup of its own, its agents scoped to it: the other
			// packages' tests running beside it are not its load.
			cg := testbed.NewCgroup(t, "bench-"+name)
			cmd := cg.Command(bench, append([]string{"-short", "-own-cgroup"}, run.args...)...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			t.Logf("bench -short %v:\n%s", run.args, out)
			if err != nil {
				t.Fatalf("bench -short: %v", err)
			}
			for _, workload := range run.workloads {
				w := regexp.QuoteMeta(workload)
				for _, m := range run.modes {
					re := `(?m)^ *` + w + ` +` + m + ` +\d+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ `
					if !regexp.MustCompile(re).Match(out) {
						t.Errorf("summary lacks the %s row of %s", m, workload)
					}
					if strings.HasPrefix(m, `agent\+relay`) {
						// The relay's CPU and RSS are measured in relay rows.
						if !regexp.MustCompile(`(?m)^ *` + w + ` +` + m + `( +\S+){7} +\d+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ `).Match(out) {
							t.Errorf("%s row of %s lacks relay CPU/RSS", m, workload)
						}
					}
				}
				if strings.HasPrefix(workload, "saturation") {
					continue // flows of a saturation run may trail
				}
				// Per agent row: kernel ns/req (bpf_stats run) … kernel
				// drops, ring lost, flows/expected.
				for _, am := range run.modes {
					if am != "agent" && am != "agent-metrics" {
						continue
					}
					agentRow := regexp.MustCompile(`(?m)^ *` + w + ` +` + am + ` +(?:\S+ +){7}(\d+) +[0-9.]+ +[0-9.]+ +[0-9.]+ +\S+ +\S+ +\d+ +(\d+) +(\d+) +(\d+)/(\d+) *$`)
					m := agentRow.FindSubmatch(out)
					if m == nil {
						t.Errorf("summary lacks a complete %s row of %s", am, workload)
						continue
					}
					if string(m[1]) == "0" {
						t.Errorf("%s: no kernel time per request measured (bpf_stats)", workload)
					}
					if string(m[2]) != "0" {
						t.Errorf("%s %s: kernel drops: %s", workload, am, m[2])
					}
					flows, _ := strconv.Atoi(string(m[4]))
					want, _ := strconv.Atoi(string(m[5]))
					if want == 0 || flows < want {
						t.Errorf("%s %s: agent saw %d flows, want at least %d (client and server side of every request)", workload, am, flows, want)
					}
				}
			}
			if run.capacity && !regexp.MustCompile(`(?m)^capacity: (lossless up to \d+ req/s|no step was lossless)`).Match(out) {
				t.Errorf("output lacks the capacity verdict")
			}
		})
	}
}
