// Command bench measures what the sextant agent costs the traffic it
// watches: h2load drives nghttpd at a fixed request rate, alternately with
// and without the agent running, and the latency percentiles of both are
// compared. While the agent runs, the kernel time of its eBPF programs
// (bpf_stats), its CPU time and its memory are measured too.
//
//	go run ./bench            # full run (task bench)
//	go run ./bench -short     # smoke run: a few hundred requests
//
// Latency comes from h2load's --log-file, which records every request's
// time to end of response (h2load's summary only has min/max/mean/sd), so
// percentiles are exact over all requests and no load generator of our own
// is needed. The rate is fixed (--rps per client) and well below what the
// server can do, so latency measures the per-request cost, not queueing.
// Runs are interleaved (off/on, then on/off, …) so that drift of the
// machine hits both modes alike.
//
// Needs root (the agent loads eBPF programs), h2load and nghttpd
// (apt-get install -y nghttp2-client nghttp2-server).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

type config struct {
	short      bool
	agent      string // path of the sextant binary, or "inproc"
	rounds     int
	requests   int // per run
	clients    int
	rps        int // per client
	streams    int
	bodyBytes  int
	warmup     int
	keepTmp    bool
	agentFlags string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childAgentArg {
		if err := runChildAgent(); err != nil {
			fmt.Fprintln(os.Stderr, "bench agent:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.BoolVar(&cfg.short, "short", false, "smoke run: one round of a few hundred requests (CI)")
	flag.StringVar(&cfg.agent, "agent", "bin/sextant", `sextant binary run as "<binary> agent", or "inproc" for the probes+collector pipeline in a child process`)
	flag.StringVar(&cfg.agentFlags, "agent-flags", "--log-level warn", "extra flags for `sextant agent` (space separated)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds; each round runs once without and once with the agent")
	flag.IntVar(&cfg.requests, "n", 20000, "requests per run")
	flag.IntVar(&cfg.clients, "c", 4, "h2load clients (connections)")
	flag.IntVar(&cfg.rps, "rps", 500, "requests per second per client (fixed rate); 0: as fast as the server answers (saturation: latency then measures queueing, throughput is the figure)")
	flag.IntVar(&cfg.streams, "m", 8, "max concurrent streams per connection")
	flag.IntVar(&cfg.bodyBytes, "size", 1024, "response body bytes")
	flag.IntVar(&cfg.warmup, "warmup", 2000, "requests of an unmeasured warm-up run")
	flag.BoolVar(&cfg.keepTmp, "keep", false, "keep the temporary directory (h2load logs)")
	flag.Parse()
	if cfg.short {
		cfg.rounds, cfg.requests, cfg.rps, cfg.warmup = 1, 400, 100, 100
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one measured h2load run.
type result struct {
	round     int
	agent     bool
	lat       latencies
	wall      time.Duration
	agentStat *agentUsage // nil without the agent
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: the agent loads eBPF programs")
	}
	for _, tool := range []string{"h2load", "nghttpd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (apt-get install -y nghttp2-client nghttp2-server): %w", tool, err)
		}
	}
	agent, err := newAgentLauncher(cfg)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "sextant-bench-")
	if err != nil {
		return err
	}
	if cfg.keepTmp {
		fmt.Fprintln(out, "temporary files in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	srv, err := startNghttpd(ctx, tmp, cfg.bodyBytes)
	if err != nil {
		return err
	}
	defer srv.stop()

	if cfg.rps == 0 {
		fmt.Fprintln(out, "saturation run (-rps 0): compare requests/s; latency includes queueing")
	}
	fmt.Fprintf(out, "sextant bench: h2load → nghttpd (127.0.0.1:%d), %d requests/run at %d req/s (%d clients × %d rps, -m %d), %d-byte responses, %d round(s), agent: %s\n",
		srv.port, cfg.requests, cfg.clients*cfg.rps, cfg.clients, cfg.rps, cfg.streams, cfg.bodyBytes, cfg.rounds, agent)

	load := h2loadRun{url: srv.url, clients: cfg.clients, rps: cfg.rps, streams: cfg.streams, bodyBytes: cfg.bodyBytes, dir: tmp}
	if cfg.warmup > 0 {
		if _, _, err := load.run(ctx, "warmup", cfg.warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	var results []result
	for round := 1; round <= cfg.rounds; round++ {
		order := []bool{false, true}
		if round%2 == 0 {
			order = []bool{true, false}
		}
		for _, withAgent := range order {
			r, err := measure(ctx, cfg, agent, load, round, withAgent)
			if err != nil {
				return err
			}
			results = append(results, r)
			printRun(out, r, cfg.requests)
		}
	}
	// bpf_stats (run time per program) is a kernel-wide switch that costs
	// every program run two clock reads (≈65 ns here): latency rounds run
	// without it, as users do, and one more run with the agent measures
	// the kernel time.
	statsFD, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return fmt.Errorf("enable bpf_stats: %w", err)
	}
	kr, err := measure(ctx, cfg, agent, load, 0, true)
	statsFD.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "kernel-time run (bpf_stats on, not in the latency figures):\n")
	printRun(out, kr, cfg.requests)
	report(out, cfg, results, kr.agentStat)
	return nil
}

// measure runs h2load once, with or without a freshly started agent.
func measure(ctx context.Context, cfg config, launcher agentLauncher, load h2loadRun, round int, withAgent bool) (result, error) {
	r := result{round: round, agent: withAgent}
	name := fmt.Sprintf("r%d-off", round)
	var ag *runningAgent
	if withAgent {
		name = fmt.Sprintf("r%d-on", round)
		var err error
		if ag, err = launcher.start(ctx, load.dir); err != nil {
			return r, err
		}
		defer ag.stop()
		if err := ag.begin(); err != nil {
			return r, err
		}
	}
	lat, wall, err := load.run(ctx, name, cfg.requests)
	if err != nil {
		return r, err
	}
	r.lat, r.wall = lat, wall
	if ag != nil {
		// Let the agent drain what the kernel queued before measuring it.
		time.Sleep(500 * time.Millisecond)
		u, err := ag.end(cfg.requests)
		if err != nil {
			return r, err
		}
		r.agentStat = u
	}
	return r, nil
}

func printRun(out io.Writer, r result, requests int) {
	mode := "without agent"
	if r.agent {
		mode = "with agent   "
	}
	fmt.Fprintf(out, "round %d %s  p50 %-9v p95 %-9v p99 %-9v (%d requests in %v, %.0f req/s)",
		r.round, mode, r.lat.pct(50), r.lat.pct(95), r.lat.pct(99), len(r.lat), r.wall.Round(time.Millisecond),
		float64(len(r.lat))/r.wall.Seconds())
	if u := r.agentStat; u != nil {
		if u.kernelRuns > 0 {
			fmt.Fprintf(out, "  kernel %.0f ns/req", u.kernelNsPerRequest(requests))
		}
		fmt.Fprintf(out, "  agent CPU %.1f%%  RSS %.1f MiB  flows %d/%d",
			u.cpuPercent(), float64(u.rssBytes)/(1<<20), u.flows, 2*requests)
	}
	fmt.Fprintln(out)
}

// report prints the summary: percentiles pooled over every run of a mode,
// their ratio, and the agent's costs averaged over its runs.
func report(out io.Writer, cfg config, results []result, kernel *agentUsage) {
	var off, on latencies
	var usages []*agentUsage
	for _, r := range results {
		if r.agent {
			on = append(on, r.lat...)
			usages = append(usages, r.agentStat)
		} else {
			off = append(off, r.lat...)
		}
	}
	off.sort()
	on.sort()
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency\tp50\tp95\tp99\tmean\trequests\t")
	fmt.Fprintf(tw, "without agent\t%v\t%v\t%v\t%v\t%d\t\n", off.pct(50), off.pct(95), off.pct(99), off.mean(), len(off))
	fmt.Fprintf(tw, "with agent\t%v\t%v\t%v\t%v\t%d\t\n", on.pct(50), on.pct(95), on.pct(99), on.mean(), len(on))
	fmt.Fprintf(tw, "ratio with/without\t%.3f\t%.3f\t%.3f\t%.3f\t\t\n",
		ratio(on.pct(50), off.pct(50)), ratio(on.pct(95), off.pct(95)), ratio(on.pct(99), off.pct(99)), ratio(on.mean(), off.mean()))
	tw.Flush()

	var sum agentUsage
	for _, u := range usages {
		sum.add(u)
	}
	requests := cfg.requests * len(usages)
	fmt.Fprintln(out)
	fmt.Fprintf(out, "kernel: %.0f ns per request (sum of run_time_ns of the agent's %d programs / requests, kernel-time run), %.0f ns per program run, %.1f runs per request\n",
		kernel.kernelNsPerRequest(cfg.requests), kernel.programs, kernel.nsPerRun(), float64(kernel.kernelRuns)/float64(max(cfg.requests, 1)))
	fmt.Fprintf(out, "        (the programs run on every read/write-family syscall of the host: other processes' syscalls during a run count too)\n")
	names := slices.Sorted(maps.Keys(kernel.perProg))
	slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(kernel.perProg[b].ns, kernel.perProg[a].ns) })
	for _, name := range names {
		r := kernel.perProg[name]
		if r.runs == 0 {
			continue
		}
		fmt.Fprintf(out, "        %-16s %7.0f ns/req  %5.2f runs/req  %5.0f ns/run\n", name,
			float64(r.ns)/float64(max(cfg.requests, 1)), float64(r.runs)/float64(max(cfg.requests, 1)), float64(r.ns)/float64(r.runs))
	}
	fmt.Fprintf(out, "agent:  CPU %.2f%% of one core (%.1f ms per 1000 requests), RSS %.1f MiB at end, peak %.1f MiB\n",
		sum.cpuPercent(), float64(sum.cpu.Milliseconds())*1000/float64(max(requests, 1)),
		float64(sum.rssBytes)/float64(max(len(usages), 1))/(1<<20), float64(sum.peakRSSBytes)/(1<<20))
	fmt.Fprintf(out, "flows:  %d seen by the agent for %d requests (2 per request expected: h2load and nghttpd are both observed; other traffic on the host adds to it)\n",
		sum.flows, requests)
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// moduleRoot finds the directory holding go.mod, so that relative paths
// (bin/sextant) work from anywhere inside the repository.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func splitFlags(s string) []string { return strings.Fields(s) }
