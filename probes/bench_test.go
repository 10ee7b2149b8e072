package probes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sextant/sextant/testbed"
)

// Run with (root, quiet host):
//
//	go test -run XXX -bench . -benchtime 3x ./probes
//
// Every benchmark runs the capture paths side by side in one run.

// BenchmarkLoad measures Load (verification included) + Close per capture
// and reports the instructions the verifier processed per program.
func BenchmarkLoad(b *testing.B) {
	testbed.RequireRoot(b)
	for _, capture := range captures(b) {
		b.Run(capture.String(), func(b *testing.B) {
			var load time.Duration
			insns := map[string]uint32{}
			for b.Loop() {
				p, err := Load(Options{Capture: capture})
				if err != nil {
					b.Fatal(err)
				}
				load += p.LoadTime()
				for _, ps := range p.Stats().Programs {
					insns[ps.Name] = ps.Instructions
				}
				p.Close()
			}
			b.ReportMetric(float64(load.Milliseconds())/float64(b.N), "load-ms")
			for name, n := range insns {
				b.ReportMetric(float64(n), name+"-insns")
			}
		})
	}
}

// h2cRate is the request rate of BenchmarkH2C: 5000 req/s, the rate of
// the latency floor, one connection, both ends in this process.
const h2cRate = 5000

// BenchmarkH2C runs 128-byte h2c POSTs (128-byte responses) at h2cRate
// and as fast as one connection goes, with both ends traced and a reader consuming the records, and reports
// what the kernel programs cost per request (bpf_stats), per program, with
// records, user-memory reads and drops per request. "none" is the same
// workload untraced.
func BenchmarkH2C(b *testing.B) {
	testbed.RequireRoot(b)
	for _, rate := range []int{h2cRate, 0} {
		name := fmt.Sprintf("rate=%d", rate)
		if rate == 0 {
			name = "rate=max"
		}
		b.Run(name, func(b *testing.B) { benchH2C(b, rate) })
	}
}

func benchH2C(b *testing.B, rate int) {
	modes := append([]Capture{-1}, captures(b)...)
	for _, capture := range modes {
		name := "none"
		if capture >= 0 {
			name = capture.String()
		}
		b.Run(name, func(b *testing.B) {
			var p *Probes
			var records atomic.Uint64
			if capture >= 0 {
				var err error
				p, err = Load(Options{TraceSelf: true, KernelStats: true, Capture: capture})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { p.Run(ctx, func(ev *Event) { records.Add(1); ev.Release() }); close(done) }()
				defer func() { cancel(); <-done }()
			}
			addr := h2cServer(b)
			c := h2cClient()
			defer c.CloseIdleConnections()
			body := bytes.Repeat([]byte{'x'}, 128)
			post := func() {
				resp, err := c.Post("http://"+addr+"/echo/b", "text/plain", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				var sink bytes.Buffer
				sink.ReadFrom(resp.Body)
				resp.Body.Close()
			}
			post() // the connection and its state exist before counting
			var before Stats
			if p != nil {
				before = p.Stats()
			}
			var tick time.Duration
			if rate > 0 {
				tick = time.Second / time.Duration(rate)
			}
			next := time.Now()
			for b.Loop() {
				post()
				if tick == 0 {
					continue
				}
				next = next.Add(tick)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
			if p == nil {
				return
			}
			time.Sleep(2 * pollInterval) // records in flight
			reportBPF(b, before, p.Stats(), float64(b.N))
			b.ReportMetric(float64(records.Load())/float64(b.N), "events/req")
		})
	}
}

// noSocketLoops are workloads of a process that does no socket I/O: what
// it pays for the probes being loaded is their cost on every syscall.
var noSocketLoops = []struct {
	name  string
	setup func(b *testing.B) func()
}{
	{"getppid", func(*testing.B) func() { return func() { unix.Getppid() } }},
	{"pipe", func(b *testing.B) func() {
		var p [2]int
		if err := unix.Pipe(p[:]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		buf := make([]byte, 64)
		return func() {
			unix.Write(p[1], buf)
			unix.Read(p[0], buf)
		}
	}},
	{"file", func(b *testing.B) func() {
		path := filepath.Join(b.TempDir(), "f")
		if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
			b.Fatal(err)
		}
		fd, err := unix.Open(path, unix.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { unix.Close(fd) })
		buf := make([]byte, 64)
		return func() { unix.Pread(fd, buf, 0) }
	}},
}

// threadCPU is the CPU time (user + system) of the calling OS thread.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNoSocketIO measures the CPU a process that does no socket I/O
// spends on a loop of operations (getppid; a 64-byte pipe write+read; a
// 64-byte pread of a cached file) with no probes attached, with socket
// capture, with syscall capture and with main's programs (before this
// branch) attached. All stay loaded;
// each round attaches one mode at a time, in rotating order, for 200k
// calls: a ratio is a mode's CPU over the no-probes CPU of the same round
// (adjacent in time, so host noise cancels), and the median over rounds
// is reported.
func BenchmarkNoSocketIO(b *testing.B) {
	testbed.RequireRoot(b)
	const calls = 200_000
	type switchable struct {
		name           string
		attach, detach func()
	}
	var loaded []switchable
	for _, c := range captures(b) {
		p, err := Load(Options{Capture: c})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		detach(b, p)
		loaded = append(loaded, switchable{c.String(), func() { attach(b, p) }, func() { detach(b, p) }})
	}
	m := loadMain(b)
	loaded = append(loaded, switchable{"main", func() { m.attach(b) }, m.detach})
	for _, w := range noSocketLoops {
		b.Run(w.name, func(b *testing.B) {
			op := w.setup(b)
			ratios := make([][]float64, len(loaded))
			var none []time.Duration
			round := 0
			for b.Loop() {
				cpu := make([]time.Duration, len(loaded)+1)
				for k := range cpu {
					i := (k + round) % len(cpu) // 0: no probes
					if i > 0 {
						loaded[i-1].attach()
					}
					cpu[i] = cpuOf(b, op, calls)
					if i > 0 {
						loaded[i-1].detach()
					}
				}
				none = append(none, cpu[0])
				for i := range loaded {
					ratios[i] = append(ratios[i], float64(cpu[i+1])/float64(cpu[0]))
				}
				round++
			}
			b.ReportMetric(float64(median(none).Nanoseconds())/calls, "none-ns/call")
			for i, l := range loaded {
				r := medianF(ratios[i])
				b.ReportMetric(r, l.name+"-ratio")
				b.ReportMetric(r*float64(median(none).Nanoseconds())/calls, l.name+"-ns/call")
			}
		})
	}
}

// detach and attach switch loaded probes off and on without reloading.
func detach(b *testing.B, p *Probes) {
	for _, l := range p.links {
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	p.links = nil
}

func attach(b *testing.B, p *Probes) {
	for _, name := range attachPoints[p.capture] {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.coll.Programs[name]})
		if err != nil {
			b.Fatal(err)
		}
		p.links = append(p.links, l)
	}
}

// cpuOf is the CPU time of this OS thread for calls runs of op.
func cpuOf(b *testing.B, op func(), calls int) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU(b)
	for i := 0; i < calls; i++ {
		op()
	}
	return threadCPU(b) - start
}

func medianF(fs []float64) float64 {
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkNonHTTPSocket measures what a socket that is not HTTP costs
// once the probes gave up on it: a 64-byte write + read on a TCP
// connection, bpf_stats per op.
func BenchmarkNonHTTPSocket(b *testing.B) {
	testbed.RequireRoot(b)
	for _, capture := range captures(b) {
		b.Run(capture.String(), func(b *testing.B) {
			benchSocketPair(b, Options{TraceSelf: true, KernelStats: true, Capture: capture})
		})
	}
}

// BenchmarkDetect measures what a new TCP connection that is not HTTP
// costs while the probes look for a protocol: detectTries writes of 1 KiB
// (TLS-like bytes) and their reads on a fresh connection, bpf_stats per
// connection. Every connection of the host pays this once.
func BenchmarkDetect(b *testing.B) {
	testbed.RequireRoot(b)
	buf := bytes.Repeat([]byte{0x16, 0x03, 0x01, 0x02}, 256)
	for _, capture := range captures(b) {
		b.Run(capture.String(), func(b *testing.B) {
			p, err := Load(Options{TraceSelf: true, KernelStats: true, Capture: capture})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ns uint64
			got := make([]byte, len(buf))
			for b.Loop() {
				b.StopTimer()
				c, s := acceptedPair(b, ln)
				w, r := blockingFile(b, c), blockingFile(b, s)
				c.Close()
				s.Close()
				before := p.Stats()
				b.StartTimer()
				for range detectTries {
					if _, err := w.Write(buf); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(r, got); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				for i, ps := range p.Stats().Programs {
					ns += ps.RunTimeNs - before.Programs[i].RunTimeNs
				}
				w.Close()
				r.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(ns)/float64(b.N), "bpf-ns/conn")
		})
	}
}

// BenchmarkScope measures what Options.Cgroup costs per 64-byte TCP
// write + read (a socket that is not HTTP, past detection), bpf_stats per
// op: unscoped; scoped, the process in the scope (it pays the check on
// top); scoped, the process outside (the programs return after the check).
func BenchmarkScope(b *testing.B) {
	testbed.RequireRoot(b)
	in := testbed.NewCgroup(b, "scope-bench-in")
	in.Join(b)
	out := testbed.NewCgroup(b, "scope-bench-out")
	for _, capture := range captures(b) {
		for _, m := range []struct{ name, cgroup string }{{"unscoped", ""}, {"in", in.Dir}, {"out", out.Dir}} {
			b.Run(capture.String()+"/"+m.name, func(b *testing.B) {
				benchSocketPair(b, Options{TraceSelf: true, KernelStats: true, Capture: capture, Cgroup: m.cgroup})
			})
		}
	}
}

// benchSocketPair reports bpf_stats time per 64-byte write + read on a TCP
// connection that the probes gave up on (not HTTP).
func benchSocketPair(b *testing.B, opts Options) {
	p, err := Load(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	w, r := tcpPair(b)
	buf := make([]byte, 64)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := 0; i < 2*detectTries; i++ { // past detection
		unix.Write(w, buf)
		unix.Read(r, buf)
	}
	before := p.Stats()
	for b.Loop() {
		if _, err := unix.Write(w, buf); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(r, buf); err != nil {
			b.Fatal(err)
		}
	}
	var ns uint64
	for i, ps := range p.Stats().Programs {
		ns += ps.RunTimeNs - before.Programs[i].RunTimeNs
	}
	b.ReportMetric(float64(ns)/float64(b.N), "bpf-ns/op")
}

// detectTries mirrors capture.h: chunks tried before a socket is given up.
const detectTries = 4

func tcpPair(b *testing.B) (w, r int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, s := acceptedPair(b, ln)
	b.Cleanup(func() { c.Close(); s.Close() })
	return rawFD(b, c), rawFD(b, s)
}

// acceptedPair dials ln and accepts: both ends of a new connection.
func acceptedPair(b *testing.B, ln net.Listener) (c, s net.Conn) {
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, err = ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	return c, s
}

// rawFD is the fd of a TCP connection, switched to blocking mode so the
// benchmark's reads wait for data instead of returning EAGAIN. (A dup:
// syscall capture sees it as its own socket, which is fine here.)
func rawFD(b *testing.B, c net.Conn) int {
	f := blockingFile(b, c)
	b.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// blockingFile is a dup of a TCP connection's fd in blocking mode.
func blockingFile(b *testing.B, c net.Conn) *os.File {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkH2Load is the bench's workload (go run ./bench): h2load drives
// nghttpd at 5000 req/s over 4 connections (up to 8 streams each, as the
// bench runs it), GETs of a 128-byte document,
// both ends traced; BPF time per request per program (bpf_stats, which
// also counts other processes' socket I/O on the host: run it quiet).
// The scoped mode traces only the benchmark's cgroup (h2load and nghttpd
// run in it): other processes' I/O then costs only the scope check, so
// it measures the workload's own cost on a busy host (on this VM a
// neighbour opening connections made 60 % of the unscoped figure).
func BenchmarkH2Load(b *testing.B) {
	testbed.RequireRoot(b)
	h2load, nghttpd := needTool(b, "h2load"), needTool(b, "nghttpd")
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "small"), bytes.Repeat([]byte{'s'}, 128), 0o644); err != nil {
		b.Fatal(err)
	}
	cg := testbed.NewCgroup(b, "h2load-bench")
	addr := startNghttpdWith(b, cg.Command, nghttpd, dir)
	modes := tracedModes(b)
	if len(captures(b)) > 1 {
		modes = append(modes, tracedMode{CaptureSocket.String() + "-scoped", func(b *testing.B) func() Stats {
			return startProbes(b, Options{KernelStats: true, Capture: CaptureSocket, Cgroup: cg.Dir})
		}})
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			stats := mode.start(b)
			const clients = 4
			n := max(b.N, clients)
			before := stats()
			b.ResetTimer()
			out, err := cg.Command(h2load, "-n", fmt.Sprint(n), "-c", fmt.Sprint(clients), "-m", "8", "-t", "1",
				"--rps", fmt.Sprint(h2cRate/clients), "http://"+addr+"/small").CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte(fmt.Sprintf("%d succeeded", n))) {
				b.Fatalf("h2load: %v\n%s", err, out)
			}
			b.StopTimer()
			time.Sleep(2 * pollInterval)
			after := stats()
			reportBPF(b, before, after, float64(n))
			b.ReportMetric(float64(after.Events-before.Events)/float64(n), "events/req")
		})
	}
}

// tracedMode is a set of kernel programs a benchmark runs under: one of
// this branch's captures, or main's programs.
type tracedMode struct {
	name  string
	start func(b *testing.B) (stats func() Stats) // loads, attaches, reads; undone at cleanup
}

func tracedModes(b *testing.B) []tracedMode {
	var modes []tracedMode
	for _, c := range captures(b) {
		modes = append(modes, tracedMode{c.String(), func(b *testing.B) func() Stats {
			return startProbes(b, Options{KernelStats: true, Capture: c})
		}})
	}
	modes = append(modes, tracedMode{"main", func(b *testing.B) func() Stats {
		st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			b.Fatal(err)
		}
		m := loadMain(b)
		m.attach(b)
		b.Cleanup(func() { m.detach(); st.Close() })
		return m.stats
	}})
	return modes
}

// startProbes loads and runs the probes, records discarded, until the
// benchmark ends; it returns their statistics.
func startProbes(b *testing.B, opts Options) func() Stats {
	p, err := Load(opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, func(ev *Event) { ev.Release() }); close(done) }()
	b.Cleanup(func() { cancel(); <-done; p.Close() })
	return p.Stats
}

// reportBPF reports kernel program time per request, in total and per
// program, with records and user-memory reads per request.
func reportBPF(b *testing.B, before, after Stats, n float64) {
	var total uint64
	for i, ps := range after.Programs {
		ns := ps.RunTimeNs - before.Programs[i].RunTimeNs
		runs := ps.RunCount - before.Programs[i].RunCount
		total += ns
		b.ReportMetric(float64(ns)/n, ps.Name+"-ns/req")
		if runs > 0 {
			b.Logf("%-13s %6.2f runs/req %6.0f ns/run", ps.Name, float64(runs)/n, float64(ns)/float64(runs))
		}
	}
	b.ReportMetric(float64(total)/n, "bpf-ns/req")
	b.ReportMetric(float64(after.Records-before.Records)/n, "records/req")
	b.ReportMetric(float64(after.UserReads-before.UserReads)/n, "reads/req")
	b.ReportMetric(float64(after.Chunks-before.Chunks)/n, "chunks/req")
	for i, d := range after.Drops {
		if d != before.Drops[i] {
			b.Logf("drops[%s] = %d", DropReason(i), d-before.Drops[i])
		}
	}
}

// mainProbes are the programs this branch replaced (main at 10e65c5,
// syscall capture with one record per frame, testdata/), loaded as they
// were so that benchmarks put before and after side by side in one run.
type mainProbes struct {
	coll   *ebpf.Collection
	links  []link.Link
	reader *ringbuf.Reader
	done   chan struct{}
}

const mainObject = "testdata/sextant_main_10e65c5.o"

func loadMain(b *testing.B) *mainProbes {
	b.Helper()
	spec, err := ebpf.LoadCollectionSpec(mainObject)
	if err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	m := &mainProbes{coll: coll, done: make(chan struct{})}
	b.Cleanup(m.close)
	if err := coll.Maps["excluded"].Put(uint32(os.Getpid()), uint8(1)); err != nil {
		b.Fatal(err)
	}
	m.reader, err = ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		b.Fatal(err)
	}
	go func() { // drain: the records are not this branch's format
		defer close(m.done)
		var rec ringbuf.Record
		for m.reader.ReadInto(&rec) == nil {
		}
	}()
	return m
}

func (m *mainProbes) attach(b *testing.B) {
	for _, name := range []string{"sys_exit", "sys_enter", "process_exit"} {
		l, err := link.AttachTracing(link.TracingOptions{Program: m.coll.Programs[name]})
		if err != nil {
			b.Fatal(err)
		}
		m.links = append(m.links, l)
	}
}

func (m *mainProbes) detach() {
	for _, l := range m.links {
		l.Close()
	}
	m.links = nil
}

func (m *mainProbes) close() {
	m.detach()
	if m.reader != nil {
		m.reader.Close()
		<-m.done
		m.reader = nil
	}
	m.coll.Close()
}

// stats mirrors Probes.Stats' program part.
func (m *mainProbes) stats() Stats {
	var s Stats
	names := make([]string, 0, len(m.coll.Programs))
	for name := range m.coll.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ps := ProgramStats{Name: name}
		if st, err := m.coll.Programs[name].Stats(); err == nil {
			ps.RunTimeNs, ps.RunCount = uint64(st.Runtime), st.RunCount
		}
		s.Programs = append(s.Programs, ps)
	}
	return s
}
