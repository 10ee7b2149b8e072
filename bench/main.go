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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

type config struct {
	short     bool
	agent     string // path of the sextant binary, or "inproc"
	modes     []mode
	workloads []workload
	capacity  []int // capacity steps, req/s (0: saturation)
	// capacityModes are the agent modes the capacity steps run in.
	capacityModes []mode
	rounds        int
	perRun        time.Duration // fixed-rate run length
	satN          int           // requests of a saturation run
	clients       int
	streams       int
	warmup        int
	keepTmp       bool
	agentFlags    string
	policyRules   int  // agent+policy: filler rules
	ownCgroup     bool // observe only the bench's own cgroup subtree
	mdPath        string
	svgPath       string
	command       string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childGRPCArg {
		if err := runChildGRPCServer(); err != nil {
			fmt.Fprintln(os.Stderr, "bench gRPC server:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == childAgentArg {
		if err := runChildAgent(len(os.Args) > 2 && os.Args[2] == childDiscardArg); err != nil {
			fmt.Fprintln(os.Stderr, "bench agent:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var modes, workloads, capacity, capacityModes string
	flag.BoolVar(&cfg.short, "short", false, "smoke run: every mode once with a few hundred requests, nothing written (CI); -workloads and -capacity given explicitly are kept")
	flag.StringVar(&cfg.agent, "agent", "bin/sextant", `sextant binary run as "<binary> agent", or "inproc" for the probes+collector pipeline in a child process (no relay mode)`)
	flag.StringVar(&cfg.agentFlags, "agent-flags", "--log-level warn", "extra flags for `sextant agent` (space separated)")
	flag.StringVar(&modes, "modes", "baseline,probes,agent-metrics,agent,agent+relay,agent+relay+exporters,proxy", "modes, interleaved in every round: baseline (nothing observes), probes (the kernel programs only: records read and discarded), agent-metrics (agent --metrics-only: /metrics, no flows kept), agent (agent keeping flows in its ring, nobody following, and /metrics), agent+relay (a relay follows every flow), agent+relay+exporters (the relay also writes every flow to its embedded store), agent+policy (agent with a CiliumNetworkPolicy enforced on the servers, -policy-rules), proxy (nghttpx in the path, no agent)")
	flag.StringVar(&workloads, "workloads", "1000:small,5000:small,5000:16k,0:small,grpc-unary:1000:small,grpc-stream:1000:small,grpc-unary:0:small", "workloads rate:size (rate in req/s, 0 = saturation; size small = 128 B, 16k = 16 KiB, or bytes): h2load → nghttpd; grpc-unary:rate:size and grpc-stream:rate:size: a Go gRPC client → the interop TestService (a stream returns 4 messages of size)")
	flag.StringVar(&capacity, "capacity", "10000,20000,40000,60000,0", "request rates stepped with the agent to find the highest lossless one ('' to skip)")
	flag.StringVar(&capacityModes, "capacity-modes", "agent-metrics,agent,agent+relay", "agent modes the capacity steps run in")
	flag.IntVar(&cfg.policyRules, "policy-rules", 100, "agent+policy: filler rules (never matching) before the one that allows the traffic")
	flag.BoolVar(&cfg.ownCgroup, "own-cgroup", false, "observe only the bench's own cgroup v2 subtree (the bench, its load generators and servers: agent --cgroup), not the rest of the host; for a bench that shares the host with other work, such as the test suite")
	flag.IntVar(&cfg.rounds, "rounds", 2, "rounds; each runs every mode once per workload, order rotated per round")
	flag.DurationVar(&cfg.perRun, "d", 5*time.Second, "length of a fixed-rate run (requests = rate × d)")
	flag.IntVar(&cfg.satN, "sat-n", 60000, "requests of a saturation run")
	flag.IntVar(&cfg.clients, "c", 4, "h2load clients (connections)")
	flag.IntVar(&cfg.streams, "m", 8, "max concurrent streams per connection")
	flag.IntVar(&cfg.warmup, "warmup", 2000, "requests of an unmeasured warm-up run")
	flag.BoolVar(&cfg.keepTmp, "keep", false, "keep the temporary directory (h2load logs)")
	flag.StringVar(&cfg.mdPath, "md", "docs/benchmarks.md", "write the results between the bench markers of this Markdown file ('' for none; -short: none)")
	flag.StringVar(&cfg.svgPath, "svg", "docs/benchmarks.svg", "write the latency plot here ('' for none; -short: none)")
	flag.Parse()
	if cfg.short {
		// Workloads and capacity given explicitly stay: the smoke test
		// picks what it covers.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["workloads"] {
			workloads = "500:small,0:small,grpc-unary:200:small,grpc-stream:200:small"
		}
		if !set["capacity"] {
			capacity = "1000"
		}
		cfg.rounds, cfg.perRun, cfg.satN, cfg.warmup = 1, time.Second, 500, 100
		cfg.mdPath, cfg.svgPath = "", ""
	}
	cfg.command = strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
	var err error
	if cfg.modes, err = parseModes(modes); err == nil {
		if cfg.workloads, err = parseWorkloads(workloads); err == nil {
			cfg.capacity, err = parseRates(capacity)
		}
	}
	if err == nil && len(cfg.capacity) > 0 {
		if cfg.agent == "inproc" {
			// One pipeline child serves every agent mode.
			capacityModes = string(modeAgent)
		}
		cfg.capacityModes, err = parseModes(capacityModes)
		for _, m := range cfg.capacityModes {
			if !m.withAgent() {
				err = fmt.Errorf("capacity mode %s runs no agent", m)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// workload is one load shape: a total request rate (0: saturation) and a
// response size, of h2load against nghttpd or, with grpc set, of gRPC
// calls against the interop TestService.
type workload struct {
	rate      int
	bodyBytes int
	grpc      string // "" (h2load), "unary" or "stream"
}

func (w workload) String() string {
	unit := "req/s"
	if w.grpc != "" {
		unit = "calls/s"
	}
	rate := "saturation"
	if w.rate > 0 {
		rate = fmt.Sprintf("%d %s", w.rate, unit)
	}
	if w.grpc != "" {
		return fmt.Sprintf("gRPC %s %s, %s", w.grpc, rate, sizeName(w.bodyBytes))
	}
	return fmt.Sprintf("%s, %s", rate, sizeName(w.bodyBytes))
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func parseWorkloads(s string) ([]workload, error) {
	var ws []workload
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var call string
		for _, c := range []string{"unary", "stream"} {
			if rest, ok := strings.CutPrefix(f, "grpc-"+c+":"); ok {
				call, f = c, rest
			}
		}
		rate, size, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("workload %q: want rate:size", f)
		}
		r, err := strconv.Atoi(rate)
		if err != nil || r < 0 {
			return nil, fmt.Errorf("workload %q: bad rate", f)
		}
		var b int
		switch size {
		case "small":
			b = 128
		case "16k":
			b = 16 << 10
		default:
			if b, err = strconv.Atoi(size); err != nil || b <= 0 {
				return nil, fmt.Errorf("workload %q: bad size", f)
			}
		}
		ws = append(ws, workload{rate: r, bodyBytes: b, grpc: call})
	}
	return ws, nil
}

func parseRates(s string) ([]int, error) {
	var rs []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.Atoi(f)
		if err != nil || r < 0 {
			return nil, fmt.Errorf("rate %q", f)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// result is one measured h2load run.
type result struct {
	w         workload
	mode      mode
	round     int
	requests  int
	lat       latencies
	wall      time.Duration
	agentStat *agentUsage // nil without the agent
}

func (r result) throughput() float64 { return float64(r.requests) / r.wall.Seconds() }

// bench holds what every run shares.
type bench struct {
	cfg   config
	agent agentLauncher
	srv   *server
	grpc  *grpcServer // nil without gRPC workloads
	dir   string
	out   io.Writer
	runs  int // numbers the h2load logs: h2load appends to an existing log
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
	var sizes []int
	for _, w := range cfg.workloads {
		sizes = append(sizes, w.bodyBytes)
	}
	sizes = append(sizes, 128) // capacity steps
	if slices.Contains(cfg.modes, modePolicy) {
		if agent.binary == "" {
			return fmt.Errorf("mode %s needs the sextant binary (-agent), not inproc", modePolicy)
		}
		if agent.policy, err = newBenchPolicy(tmp, cfg.policyRules); err != nil {
			return err
		}
		defer agent.policy.close() // after the servers in its cgroup stopped
	}
	srv, err := startNghttpd(ctx, tmp, sizes, agent.policy)
	if err != nil {
		return err
	}
	defer srv.stop()
	ports := []int{srv.port}
	b := &bench{cfg: cfg, agent: agent, srv: srv, dir: tmp, out: out}
	if slices.ContainsFunc(cfg.workloads, func(w workload) bool { return w.grpc != "" }) {
		if b.grpc, err = startGRPCServer(ctx, agent.policy); err != nil {
			return err
		}
		defer b.grpc.stop()
		ports = append(ports, b.grpc.port)
		fmt.Fprintf(out, "gRPC workloads: Go client (%d connections) → interop TestService 127.0.0.1:%d (child process)\n", cfg.clients, b.grpc.port)
	}
	if agent.policy != nil {
		if err := agent.policy.write(ports...); err != nil {
			return err
		}
	}
	env := describeMachine()
	fmt.Fprintf(out, "sextant bench: h2load (%d clients, -m %d) → nghttpd 127.0.0.1:%d; modes %v; %d round(s); agent: %s\n",
		cfg.clients, cfg.streams, srv.port, cfg.modes, cfg.rounds, agent)
	fmt.Fprintf(out, "machine: %s; load average at start %s\n", env.machine, env.loadStart)

	if cfg.warmup > 0 {
		warm := map[bool]bool{}
		for _, w := range cfg.workloads {
			if warm[w.grpc != ""] {
				continue
			}
			warm[w.grpc != ""] = true
			if _, _, err := b.drive(ctx, w, b.port(w), "warmup", cfg.warmup); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}

	var results []result
	kernel := map[workload]*agentUsage{}
	for _, w := range cfg.workloads {
		fmt.Fprintf(out, "\n== %s\n", w)
		for round := 1; round <= cfg.rounds; round++ {
			// Rotate the order so that no mode always runs first or
			// right after the agent started.
			order := slices.Clone(cfg.modes)
			k := (round - 1) % len(order)
			order = append(order[k:], order[:k]...)
			for _, m := range order {
				r, err := b.measure(ctx, w, m, round)
				if err != nil {
					return err
				}
				results = append(results, r)
				printRun(out, r)
			}
		}
		// bpf_stats (run time per program) is a kernel-wide switch that
		// costs every program run two clock reads: latency runs go
		// without it, as users run, and one more agent run measures the
		// kernel time.
		if slices.ContainsFunc(cfg.modes, mode.withAgent) {
			statsFD, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
			if err != nil {
				return fmt.Errorf("enable bpf_stats: %w", err)
			}
			// The kernel programs are the same in every agent mode.
			kr, err := b.measure(ctx, w, modeMetricsOnly, 0)
			statsFD.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "kernel-time run (bpf_stats on, not in the latency figures): ")
			printRun(out, kr)
			kernel[w] = kr.agentStat
		}
	}

	var capacity []result
	if !slices.ContainsFunc(cfg.modes, mode.withAgent) {
		cfg.capacityModes = nil // nothing observes: no capture to lose
	}
	for _, m := range cfg.capacityModes {
		fmt.Fprintf(out, "\n== capacity: %s, %s responses, rates stepped until capture is lossy\n", m, sizeName(128))
		for _, rate := range cfg.capacity {
			r, err := b.measure(ctx, workload{rate: rate, bodyBytes: 128}, m, 0)
			if err != nil {
				return err
			}
			printRun(out, r)
			capacity = append(capacity, r)
		}
	}
	env.loadEnd = loadAverage()
	rep := buildReport(cfg, results, kernel, capacity, env)
	fmt.Fprintln(out)
	rep.text(out)
	if cfg.mdPath != "" {
		if err := rep.writeMarkdown(filepath.Join(moduleRoot(), cfg.mdPath), cfg.svgPath); err != nil {
			return err
		}
		fmt.Fprintln(out, "wrote", cfg.mdPath)
	}
	if cfg.svgPath != "" {
		if err := os.WriteFile(filepath.Join(moduleRoot(), cfg.svgPath), rep.svg(), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(out, "wrote", cfg.svgPath)
	}
	return nil
}

func (b *bench) load(w workload, port int) h2loadRun {
	rps := 0
	if w.rate > 0 {
		rps = max(w.rate/b.cfg.clients, 1)
	}
	return h2loadRun{
		url:     fmt.Sprintf("http://127.0.0.1:%d/%s", port, bodyName(w.bodyBytes)),
		clients: b.cfg.clients, rps: rps, streams: b.cfg.streams, dir: b.dir,
	}
}

// port is the server port of a workload.
func (b *bench) port(w workload) int {
	if w.grpc != "" {
		return b.grpc.port
	}
	return b.srv.port
}

// drive runs n requests (or calls) of a workload against port.
func (b *bench) drive(ctx context.Context, w workload, port int, name string, n int) (latencies, time.Duration, error) {
	if w.grpc != "" {
		g := grpcRun{addr: fmt.Sprintf("127.0.0.1:%d", port), call: w.grpc, rate: w.rate, bodyBytes: w.bodyBytes,
			clients: b.cfg.clients, streams: b.cfg.streams}
		return g.run(ctx, n)
	}
	return b.load(w, port).run(ctx, name, n)
}

func (b *bench) requests(w workload) int {
	if w.rate == 0 {
		return b.cfg.satN
	}
	return max(int(float64(w.rate)*b.cfg.perRun.Seconds()), 1)
}

// measure runs h2load once in a mode: with a freshly started agent (and
// relay), through a freshly started proxy, or direct.
func (b *bench) measure(ctx context.Context, w workload, m mode, round int) (_ result, err error) {
	n := b.requests(w)
	r := result{w: w, mode: m, round: round, requests: n}
	port := b.port(w)
	var ag *runningAgent
	switch m {
	case modeProbes, modeMetricsOnly, modeAgent, modeFull, modeExporters, modePolicy:
		var err error
		if ag, err = b.agent.start(ctx, b.dir, m); err != nil {
			return r, err
		}
		defer func() {
			if serr := ag.stop(); err == nil {
				err = serr
			}
		}()
		if err := ag.begin(); err != nil {
			return r, err
		}
	case modeProxy:
		px, err := startProxy(ctx, b.dir, port)
		if err != nil {
			return r, err
		}
		defer px.stop()
		port = px.port
	}
	b.runs++
	name := fmt.Sprintf("%03d-%d-%d-%s-r%d", b.runs, w.rate, w.bodyBytes, strings.ReplaceAll(string(m), "+", "-"), round)
	lat, wall, err := b.drive(ctx, w, port, name, n)
	if err != nil {
		return r, err
	}
	r.lat, r.wall = lat, wall
	if ag != nil {
		// Let the agent (and relay) drain what the kernel queued before
		// measuring them.
		time.Sleep(500 * time.Millisecond)
		u, err := ag.end(n)
		if err != nil {
			return r, err
		}
		if ag.relay != nil {
			// The relay's figures are the run's; then it must have every
			// event the agent kept.
			if u.relayBehind, err = ag.relayCaughtUp(); err != nil {
				return r, err
			}
		}
		r.agentStat = u
	}
	return r, nil
}

func printRun(out io.Writer, r result) {
	fmt.Fprintf(out, "round %d %-11s  p50 %-9v p95 %-9v p99 %-9v max %-9v (%d requests in %v, %.0f req/s)",
		r.round, r.mode, r.lat.pct(50), r.lat.pct(95), r.lat.pct(99), r.lat.pct(100), len(r.lat), r.wall.Round(time.Millisecond),
		r.throughput())
	if u := r.agentStat; u != nil {
		if u.kernelRuns > 0 {
			fmt.Fprintf(out, "  kernel %.0f ns/req", u.kernelNsPerRequest(r.requests))
			if r.round > 0 {
				// bpf_stats is kernel-wide: another process turned it on.
				fmt.Fprint(out, " (bpf_stats was on during a latency run: enabled by another process)")
			}
		}
		fmt.Fprintf(out, "  agent CPU %.1f%%  RSS %.1f MiB  flows %d/%d  events %d  drops %d  lost %d",
			u.cpuPercent(), float64(u.rssBytes)/(1<<20), u.flows, 2*r.requests, u.events, u.kernelDrops, u.ringLost)
		if u.relayRSS > 0 {
			fmt.Fprintf(out, "  relay CPU %.1f%%  RSS %.1f MiB  behind %d", 100*u.relayCPU.Seconds()/u.wall.Seconds(), float64(u.relayRSS)/(1<<20), u.relayBehind)
		}
	}
	fmt.Fprintln(out)
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
