package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/cilium/ebpf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/probes"
)

// childAgentArg makes the bench binary run as the in-process pipeline
// (-agent inproc): probes + collector, counting flows, in its own process so
// its CPU and memory can be measured apart from the bench.
const childAgentArg = "__sextant_bench_agent"

// childDiscardArg, after childAgentArg, makes the child read the probes'
// records and throw them away: the probes mode.
const childDiscardArg = "discard"

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

type agentLauncher struct {
	binary string // empty: in-process pipeline child
	flags  []string
	policy *benchPolicy // with the agent+policy mode
}

func newAgentLauncher(cfg config) (agentLauncher, error) {
	if cfg.agent == "inproc" {
		if cfg.ownCgroup {
			own, err := ownCgroup()
			if err != nil {
				return agentLauncher{}, err
			}
			os.Setenv(ownCgroupEnv, filepath.Join(identity.Cgroup2Mount("/proc/self/mountinfo"), own))
		}
		return agentLauncher{}, nil
	}
	bin := cfg.agent
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(moduleRoot(), bin)
	}
	if _, err := os.Stat(bin); err != nil {
		return agentLauncher{}, fmt.Errorf("agent binary: %w (build it: go build -o bin/sextant ./cmd/sextant; or run with -agent inproc)", err)
	}
	a := agentLauncher{binary: bin, flags: splitFlags(cfg.agentFlags)}
	if cfg.ownCgroup {
		own, err := ownCgroup()
		if err != nil {
			return a, err
		}
		a.flags = append(a.flags, "--cgroup", own)
	}
	return a, nil
}

// ownCgroupEnv tells the -agent inproc child the cgroup directory to
// capture in (-own-cgroup).
const ownCgroupEnv = "SEXTANT_BENCH_CGROUP_DIR"

// ownCgroup is this process's cgroup v2 path, relative to the mount.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	own := identity.UnifiedCgroup(b)
	if own == "" {
		return "", errors.New("-own-cgroup: this process is in no cgroup v2 hierarchy")
	}
	return own, nil
}

func (a agentLauncher) String() string {
	if a.binary == "" {
		return "in-process pipeline (probes + collector) in a child process"
	}
	return strings.Join(append([]string{a.binary, "agent"}, a.flags...), " ")
}

// runningAgent is one started agent process.
type runningAgent struct {
	cmd    *exec.Cmd
	exited chan struct{}
	// binary agent: its Observer API
	conn   *grpc.ClientConn
	client observerpb.ObserverClient
	// in-process child: a line protocol on stdin/stdout
	stdin io.WriteCloser
	lines chan string

	childEvents, childDrops, childGaps uint64

	after      func() error // after the agent stopped (agent+policy: its pins removed)
	metricsURL string       // binary agent: its /metrics
	socket     string       // binary agent: its Observer API (for a relay)
	relay      *relayProc   // modeFull
	before     snapshot
}

func (a agentLauncher) start(ctx context.Context, dir string, m mode) (*runningAgent, error) {
	withRelay := m.withRelay()
	ra := &runningAgent{exited: make(chan struct{}), lines: make(chan string, 16)}
	var cmd *exec.Cmd
	socket := filepath.Join(dir, "agent.sock")
	if a.binary != "" && m != modeProbes {
		metricsPort, err := freePort()
		if err != nil {
			return nil, err
		}
		ra.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
		ra.socket = socket
		args := append([]string{"agent", "--socket", socket,
			"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort)}, a.flags...)
		if m == modeMetricsOnly {
			args = append(args, "--metrics-only")
		}
		if m == modePolicy {
			args = append(args, a.policy.agentFlags()...)
			ra.after = func() error { return a.policy.cleanup(a.binary) }
		}
		cmd = exec.Command(a.binary, args...)
		cmd.Stdout = os.Stderr // the agent's logs are not the bench's output
		cmd.Stderr = os.Stderr
		if m != modeMetricsOnly {
			conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			ra.conn, ra.client = conn, observerpb.NewObserverClient(conn)
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(exe, childAgentArg)
		if m == modeProbes {
			cmd.Args = append(cmd.Args, childDiscardArg)
		}
		cmd.Stderr = os.Stderr
		if ra.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		go func() {
			defer close(ra.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				ra.lines <- sc.Text()
			}
		}()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	ra.cmd = cmd
	go func() { _ = cmd.Wait(); close(ra.exited) }()
	if err := ra.waitReady(ctx); err != nil {
		ra.stop()
		return nil, err
	}
	if m == modePolicy {
		if err := waitEnforced(ra.metricsURL); err != nil {
			ra.stop()
			return nil, err
		}
	}
	if withRelay {
		if a.binary == "" {
			ra.stop()
			return nil, fmt.Errorf("mode %s needs the sextant binary (-agent), not inproc", m)
		}
		rp, err := startRelay(ctx, a.binary, dir, ra.socket, m == modeExporters)
		if err != nil {
			ra.stop()
			return nil, err
		}
		ra.relay = rp
	}
	return ra, nil
}

// waitReady waits until the agent has its programs attached: the binary
// agent answers its status API (it opens the socket after loading) or, in
// metrics-only mode, holds its programs and serves /metrics; the child
// prints READY.
func (ra *runningAgent) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	if ra.client == nil && ra.metricsURL == "" {
		select {
		case line := <-ra.lines:
			if line != "READY" {
				return fmt.Errorf("agent child said %q, want READY", line)
			}
			return nil
		case <-ra.exited:
			return errors.New("agent child exited before it was ready")
		case <-time.After(time.Until(deadline)):
			return errors.New("agent child not ready after 2m")
		}
	}
	for time.Now().Before(deadline) {
		select {
		case <-ra.exited:
			return fmt.Errorf("agent exited before it was ready (%v)", ra.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		var err error
		if ra.client != nil {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = ra.client.ServerStatus(sctx, &observerpb.ServerStatusRequest{})
			cancel()
		} else {
			_, err = promCounters(ra.metricsURL)
		}
		if err == nil && len(agentPrograms(ra.cmd.Process.Pid)) > 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("agent not ready after 2m")
}

// stop ends the agent (and relay) and undoes what outlives them; an error
// there means the next runs would not be what they say.
func (ra *runningAgent) stop() error {
	if ra.relay != nil {
		ra.relay.stop()
	}
	_ = ra.cmd.Process.Signal(syscall.SIGTERM)
	if ra.stdin != nil {
		ra.stdin.Close()
	}
	select {
	case <-ra.exited:
	case <-time.After(15 * time.Second):
		_ = ra.cmd.Process.Kill()
		<-ra.exited
	}
	if ra.after != nil {
		return ra.after()
	}
	return nil
}

// snapshot is the agent's cumulative counters at one moment.
type snapshot struct {
	at         time.Time
	cpu        time.Duration
	kernelNs   uint64
	kernelRuns uint64
	programs   int
	flows      uint64
	perProg    map[string]progRun // by program name
	// from the agent's /metrics (or the inproc child): records read from
	// the ring buffer, kernel drops, events lost between collector and
	// followers, sequence gaps the collector detected
	events, kernelDrops, ringLost, seqGaps uint64
	relayCPU                               time.Duration
	// ringWritten: events the agent's ring took (flows' events and lost
	// notices); relayMerged: events the relay merged of them.
	ringWritten, relayMerged uint64
}

// progRun is the bpf_stats of one program (summed over programs that share
// a name).
type progRun struct{ ns, runs uint64 }

func (ra *runningAgent) snapshot() (snapshot, error) {
	pid := ra.cmd.Process.Pid
	s := snapshot{at: time.Now()}
	var err error
	if s.cpu, err = processCPU(pid); err != nil {
		return s, err
	}
	ids := agentPrograms(pid)
	if len(ids) == 0 {
		return s, fmt.Errorf("agent pid %d holds no eBPF programs", pid)
	}
	s.perProg = map[string]progRun{}
	for _, id := range ids {
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return s, fmt.Errorf("open program %d: %w", id, err)
		}
		st, err := prog.Stats()
		name := fmt.Sprintf("prog_%d", id)
		if info, err := prog.Info(); err == nil && info.Name != "" {
			name = info.Name
		}
		prog.Close()
		if err != nil {
			return s, fmt.Errorf("stats of program %d: %w", id, err)
		}
		s.kernelNs += uint64(st.Runtime)
		s.kernelRuns += st.RunCount
		pr := s.perProg[name]
		pr.ns += uint64(st.Runtime)
		pr.runs += st.RunCount
		s.perProg[name] = pr
	}
	s.programs = len(ids)
	if ra.metricsURL != "" {
		m, err := promCounters(ra.metricsURL)
		if err != nil {
			return s, err
		}
		// Exchanges, not Observer API events (SeenFlows counts a request
		// and a response event per exchange): comparable with inproc.
		s.flows = uint64(m["sextant_collector_flows_total"])
		s.events = uint64(m["sextant_probe_records_total"])
		s.kernelDrops = uint64(m[lostDropsKey])
		s.ringLost = uint64(m["sextant_ring_follower_lost_total"])
		s.ringWritten = uint64(m["sextant_ring_written_total"])
		s.seqGaps = uint64(m["sextant_collector_sequence_gaps_total"])
	} else {
		if s.flows, err = ra.flowsSeen(); err != nil {
			return s, err
		}
		s.events, s.kernelDrops, s.seqGaps = ra.childCounters()
	}
	if ra.relay != nil {
		if s.relayCPU, err = processCPU(ra.relay.cmd.Process.Pid); err != nil {
			return s, err
		}
		m, err := promCounters(ra.relay.metricsURL)
		if err != nil {
			return s, err
		}
		s.relayMerged = uint64(m["sextant_relay_events_merged_total"])
	}
	return s, nil
}

// relayCaughtUp waits (up to 10 s) until the relay merged every event the
// agent's ring took since begin, and reports how many it still lacks.
func (ra *runningAgent) relayCaughtUp() (behind uint64, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := ra.snapshot()
		if err != nil {
			return 0, err
		}
		want, got := s.ringWritten-ra.before.ringWritten, s.relayMerged-ra.before.relayMerged
		if got >= want || time.Now().After(deadline) {
			if got >= want {
				return 0, nil
			}
			return want - got, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flowsSeen asks the in-process child for its counts.
func (ra *runningAgent) flowsSeen() (uint64, error) {
	if _, err := io.WriteString(ra.stdin, "count\n"); err != nil {
		return 0, fmt.Errorf("ask agent child: %w", err)
	}
	select {
	case line := <-ra.lines:
		var n uint64
		if _, err := fmt.Sscanf(line, "FLOWS %d EVENTS %d DROPS %d GAPS %d", &n, &ra.childEvents, &ra.childDrops, &ra.childGaps); err != nil {
			return 0, fmt.Errorf("agent child said %q, want FLOWS n EVENTS e DROPS d GAPS g", line)
		}
		return n, nil
	case <-time.After(10 * time.Second):
		return 0, errors.New("agent child did not answer count")
	}
}

// childCounters are what the inproc child said with its last flow count.
func (ra *runningAgent) childCounters() (events, drops, gaps uint64) {
	return ra.childEvents, ra.childDrops, ra.childGaps
}

func (ra *runningAgent) begin() (err error) {
	ra.before, err = ra.snapshot()
	return err
}

// agentUsage is what the agent cost during one run (or, summed, several).
type agentUsage struct {
	cpu, wall    time.Duration
	kernelNs     uint64
	kernelRuns   uint64
	programs     int
	rssBytes     uint64
	anonBytes    uint64 // private memory (RssAnon): RSS without the binary's text and the mapped ring buffer
	peakRSSBytes uint64
	flows        uint64
	perProg      map[string]progRun

	events, kernelDrops, ringLost, seqGaps uint64
	relayCPU                               time.Duration
	relayRSS, relayPeakRSS                 uint64 // 0 without a relay
	// relayBehind: events the agent's ring took that the relay had not
	// merged 10 s after the run (0 without a relay).
	relayBehind uint64
	runs        int // runs summed in
}

func (ra *runningAgent) end(requests int) (*agentUsage, error) {
	after, err := ra.snapshot()
	if err != nil {
		return nil, err
	}
	b := ra.before
	u := &agentUsage{
		cpu:         after.cpu - b.cpu,
		wall:        after.at.Sub(b.at),
		kernelNs:    after.kernelNs - b.kernelNs,
		kernelRuns:  after.kernelRuns - b.kernelRuns,
		programs:    after.programs,
		flows:       after.flows - b.flows,
		perProg:     map[string]progRun{},
		events:      after.events - b.events,
		kernelDrops: after.kernelDrops - b.kernelDrops,
		ringLost:    after.ringLost - b.ringLost,
		seqGaps:     after.seqGaps - b.seqGaps,
		relayCPU:    after.relayCPU - b.relayCPU,
		runs:        1,
	}
	if ra.relay != nil {
		if u.relayRSS, _, u.relayPeakRSS, err = processRSS(ra.relay.cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	for name, a := range after.perProg {
		pb := b.perProg[name]
		u.perProg[name] = progRun{ns: a.ns - pb.ns, runs: a.runs - pb.runs}
	}
	u.rssBytes, u.anonBytes, u.peakRSSBytes, err = processRSS(ra.cmd.Process.Pid)
	return u, err
}

func (u *agentUsage) add(o *agentUsage) {
	u.cpu += o.cpu
	u.wall += o.wall
	u.kernelNs += o.kernelNs
	u.kernelRuns += o.kernelRuns
	u.programs += o.programs
	u.rssBytes += o.rssBytes
	u.anonBytes += o.anonBytes
	u.peakRSSBytes = max(u.peakRSSBytes, o.peakRSSBytes)
	u.flows += o.flows
	u.events += o.events
	u.kernelDrops += o.kernelDrops
	u.ringLost += o.ringLost
	u.seqGaps += o.seqGaps
	u.relayCPU += o.relayCPU
	u.relayRSS += o.relayRSS
	u.relayPeakRSS = max(u.relayPeakRSS, o.relayPeakRSS)
	u.relayBehind += o.relayBehind
	u.runs += o.runs
	if u.perProg == nil {
		u.perProg = map[string]progRun{}
	}
	for name, r := range o.perProg {
		pr := u.perProg[name]
		pr.ns += r.ns
		pr.runs += r.runs
		u.perProg[name] = pr
	}
}

func (u *agentUsage) kernelNsPerRequest(requests int) float64 {
	return float64(u.kernelNs) / float64(max(requests, 1))
}

func (u *agentUsage) nsPerRun() float64 {
	return float64(u.kernelNs) / float64(max(u.kernelRuns, 1))
}

func (u *agentUsage) cpuPercent() float64 {
	if u.wall <= 0 {
		return 0
	}
	return 100 * float64(u.cpu) / float64(u.wall)
}

// agentPrograms lists the ids of the eBPF programs a process holds, from
// the prog_id lines of its fds' fdinfo (program fds and link fds both
// name one).
func agentPrograms(pid int) []ebpf.ProgramID {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	seen := map[ebpf.ProgramID]bool{}
	var ids []ebpf.ProgramID
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			v, ok := strings.CutPrefix(line, "prog_id:")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil || seen[ebpf.ProgramID(n)] {
				continue
			}
			seen[ebpf.ProgramID(n)] = true
			ids = append(ids, ebpf.ProgramID(n))
		}
	}
	return ids
}

// processCPU is utime+stime of a process (/proc/<pid>/stat fields 14, 15).
func processCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// processRSS is VmRSS, RssAnon and VmHWM (peak) of a process.
func processRSS(pid int) (rss, anon, peak uint64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "RssAnon":
			anon = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, anon, peak, nil
}

// runChildAgent is the -agent inproc pipeline: the same probes and
// collector the agent runs, minus its API, counting flows.
//
// SEXTANT_BENCH_PROFILE=<prefix> writes <prefix>.cpu and <prefix>.heap
// (pprof) of the child when it stops: where the user-space cost is.
func runChildAgent(discard bool) error {
	if prefix := os.Getenv("SEXTANT_BENCH_PROFILE"); prefix != "" {
		f, err := os.Create(prefix + ".cpu")
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			if h, err := os.Create(prefix + ".heap"); err == nil {
				pprof.Lookup("heap").WriteTo(h, 0)
				h.Close()
			}
		}()
	}
	p, err := probes.Load(probes.Options{Cgroup: os.Getenv(ownCgroupEnv)})
	if err != nil {
		return err
	}
	defer p.Close()
	var flows atomic.Uint64
	c := collector.New(collector.Config{Node: "bench"}, func(*flow.Flow) { flows.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		if discard {
			done <- p.Run(ctx, func(ev *probes.Event) { ev.Release() })
			return
		}
		done <- c.Run(ctx, p) // the agent's own drive loop
	}()
	fmt.Println("READY")
	// Stdin: "count" asks for the flow count; EOF (or SIGTERM) ends.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				cancel()
				return <-done
			}
			if line == "count" {
				st := p.Stats()
				drops := st.Lost()
				gaps := c.Stats().SeqGaps
				fmt.Printf("FLOWS %d EVENTS %d DROPS %d GAPS %d\n", flows.Load(), st.Events, drops, gaps)
			}
		case <-term:
			cancel()
			return <-done
		case err := <-done:
			return fmt.Errorf("probes stopped: %w", err)
		}
	}
}
