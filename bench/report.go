package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// machine is what the report says about where it ran.
type machine struct {
	machine, loadStart, loadEnd string
	tools                       []string
	date                        time.Time
}

func describeMachine() machine {
	m := machine{date: time.Now().UTC(), loadStart: loadAverage()}
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(raw))
	}
	mem := ""
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(raw), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	m.machine = fmt.Sprintf("%d × %s%s, %s, %s", runtime.NumCPU(), cpu, mem, kernel, runtime.Version())
	for _, tool := range [][]string{{"h2load", "--version"}, {"nghttpd", "--version"}, {"nghttpx", "--version"}} {
		out, err := exec.Command(tool[0], tool[1:]...).Output()
		if err != nil {
			continue
		}
		m.tools = append(m.tools, strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]))
	}
	return m
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// row is one mode of one workload, pooled over its rounds.
type row struct {
	w        workload
	mode     mode
	lat      latencies
	requests int
	wall     time.Duration
	usage    *agentUsage // nil without the agent
	kernel   *agentUsage // kernel-time run of the workload (agent rows)
}

func (r row) throughput() float64 { return float64(r.requests) / r.wall.Seconds() }

type report struct {
	cfg      config
	env      machine
	rows     []row
	capacity []result
}

func buildReport(cfg config, results []result, kernel map[workload]*agentUsage, capacity []result, env machine) *report {
	rep := &report{cfg: cfg, env: env, capacity: capacity}
	for _, w := range cfg.workloads {
		for _, m := range cfg.modes {
			r := row{w: w, mode: m}
			for _, res := range results {
				if res.w != w || res.mode != m {
					continue
				}
				r.lat = append(r.lat, res.lat...)
				r.requests += res.requests
				r.wall += res.wall
				if res.agentStat != nil {
					if r.usage == nil {
						r.usage = &agentUsage{}
					}
					r.usage.add(res.agentStat)
				}
			}
			r.lat.sort()
			if m.withAgent() {
				r.kernel = kernel[w]
			}
			rep.rows = append(rep.rows, r)
		}
	}
	return rep
}

func (rep *report) baseline(w workload) *row {
	for i := range rep.rows {
		if rep.rows[i].w == w && rep.rows[i].mode == modeBaseline {
			return &rep.rows[i]
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// cells are a row's figures in table order; "–" where a figure does not
// apply to the mode.
func (rep *report) cells(r row) []string {
	na := "–"
	c := []string{r.w.String(), string(r.mode), fmt.Sprintf("%.0f", r.throughput()),
		ms(r.lat.pct(50)), ms(r.lat.pct(95)), ms(r.lat.pct(99)), ms(r.lat.pct(100))}
	if b := rep.baseline(r.w); b != nil && len(b.lat) > 0 {
		c = append(c, fmt.Sprintf("%.3f", ratio(r.lat.pct(95), b.lat.pct(95))), fmt.Sprintf("%.3f", r.throughput()/b.throughput()))
	} else {
		c = append(c, na, na)
	}
	u := r.usage
	if u == nil {
		return append(c, na, na, na, na, na, na, na, na, na, na)
	}
	kernel := na
	if k := r.kernel; k != nil && k.kernelRuns > 0 {
		kernel = fmt.Sprintf("%.0f", k.kernelNsPerRequest(rep.cfg.requestsOf(r.w)))
	}
	// vCPU per 1000 req/s = (CPU s / run s) / (requests / run s / 1000)
	// = CPU seconds per 1000 requests; the drain after the run counts,
	// as it is work the requests caused.
	perK := func(cpu time.Duration) string {
		return fmt.Sprintf("%.4f", cpu.Seconds()*1000/float64(r.requests))
	}
	relayCPU, relayRSS := na, na
	if u.relayRSS > 0 {
		relayCPU, relayRSS = perK(u.relayCPU), fmt.Sprintf("%.1f", float64(u.relayRSS)/float64(u.runs)/(1<<20))
	}
	return append(c, kernel, perK(u.cpu), fmt.Sprintf("%.1f", float64(u.rssBytes)/float64(u.runs)/(1<<20)),
		fmt.Sprintf("%.1f", float64(u.anonBytes)/float64(u.runs)/(1<<20)),
		relayCPU, relayRSS,
		fmt.Sprintf("%.0f", float64(u.events)/r.wall.Seconds()),
		fmt.Sprint(u.kernelDrops), fmt.Sprint(u.ringLost),
		fmt.Sprintf("%d/%d", u.flows, 2*r.requests))
}

var header = []string{"workload", "mode", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "p95 ×base", "req/s ×base",
	"kernel ns/req", "agent vCPU per 1k req/s", "agent RSS MiB", "agent anon MiB", "relay vCPU per 1k req/s", "relay RSS MiB",
	"events/s", "kernel drops", "ring lost", "flows/expected"}

func (cfg config) requestsOf(w workload) int {
	if w.rate == 0 {
		return cfg.satN
	}
	return max(int(float64(w.rate)*cfg.perRun.Seconds()), 1)
}

func (rep *report) capacityCells(r result) []string {
	u := r.agentStat
	target := "saturation"
	if r.w.rate > 0 {
		target = fmt.Sprint(r.w.rate)
	}
	return []string{string(r.mode), target, fmt.Sprintf("%.0f", r.throughput()), ms(r.lat.pct(50)), ms(r.lat.pct(99)),
		fmt.Sprintf("%.0f", float64(u.events)/r.wall.Seconds()), fmt.Sprint(u.kernelDrops), fmt.Sprint(u.ringLost), fmt.Sprint(u.seqGaps),
		relayBehind(r), fmt.Sprintf("%d/%d", u.flows, 2*r.requests), lossless(r)}
}

func relayBehind(r result) string {
	if !r.mode.withRelay() {
		return "–"
	}
	return fmt.Sprint(r.agentStat.relayBehind)
}

var capacityHeader = []string{"mode", "target req/s", "achieved req/s", "p50 ms", "p99 ms", "events/s", "kernel drops", "ring lost", "seq gaps", "relay behind", "flows/expected", "lossless"}

// lossless: every request seen on both sides (flows of other processes on
// the host can only add), nothing dropped in the kernel or the ring, and
// with a relay every event the agent kept merged by the relay.
func lossless(r result) string {
	u := r.agentStat
	if u.kernelDrops == 0 && u.ringLost == 0 && u.seqGaps == 0 && u.flows >= uint64(2*r.requests) && u.relayBehind == 0 {
		return "yes"
	}
	return "no"
}

// highestLossless is the highest achieved rate of a lossless capacity step
// in mode m.
func (rep *report) highestLossless(m mode) (float64, bool) {
	best, ok := 0.0, false
	for _, r := range rep.capacity {
		if r.mode == m && lossless(r) == "yes" && r.throughput() > best {
			best, ok = r.throughput(), true
		}
	}
	return best, ok
}

func (rep *report) text(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	short := []string{"workload", "mode", "req/s", "p50", "p95", "p99", "max", "p95×", "thr×", "kns/req", "agCPU/1k", "agRSS", "agAnon", "rlCPU/1k", "rlRSS", "ev/s", "kdrop", "lost", "flows"}
	fmt.Fprintln(tw, strings.Join(short, "\t")+"\t")
	for _, r := range rep.rows {
		fmt.Fprintln(tw, strings.Join(rep.cells(r), "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(out, "(latency in ms; CPU in vCPU per 1000 req/s; RSS in MiB; kns/req from a separate bpf_stats run)")
	if len(rep.capacity) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join(capacityHeader, "\t")+"\t")
		for _, r := range rep.capacity {
			fmt.Fprintln(tw, strings.Join(rep.capacityCells(r), "\t")+"\t")
		}
		tw.Flush()
		for _, m := range rep.cfg.capacityModes {
			if best, ok := rep.highestLossless(m); ok {
				fmt.Fprintf(out, "capacity: lossless up to %.0f req/s with %s (highest lossless step)\n", best, m)
			} else {
				fmt.Fprintf(out, "capacity: no step was lossless with %s\n", m)
			}
		}
	}
	rep.kernelBreakdown(out)
}

// kernelBreakdown lists the kernel time by program for the first workload
// with a kernel-time run.
func (rep *report) kernelBreakdown(out io.Writer) {
	for _, r := range rep.rows {
		k := r.kernel
		if k == nil || k.kernelRuns == 0 {
			continue
		}
		n := rep.cfg.requestsOf(r.w)
		fmt.Fprintf(out, "kernel time by program (%s, %d programs, %.1f runs per request; other processes' syscalls count too):\n", r.w, k.programs, float64(k.kernelRuns)/float64(n))
		names := slices.Sorted(maps.Keys(k.perProg))
		slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(k.perProg[b].ns, k.perProg[a].ns) })
		for _, name := range names {
			p := k.perProg[name]
			if p.runs == 0 {
				continue
			}
			fmt.Fprintf(out, "  %-16s %7.0f ns/req  %5.2f runs/req  %5.0f ns/run\n", name,
				float64(p.ns)/float64(n), float64(p.runs)/float64(n), float64(p.ns)/float64(p.runs))
		}
		return
	}
}

const (
	mdBegin = "<!-- bench:begin (written by go run ./bench; edits between these markers are overwritten) -->"
	mdEnd   = "<!-- bench:end -->"
)

// writeMarkdown replaces the measured section of path (between the markers)
// and keeps what people wrote around it.
func (rep *report) writeMarkdown(path, svgPath string) error {
	var b bytes.Buffer
	fmt.Fprintln(&b, mdBegin)
	fmt.Fprintf(&b, "Measured %s.\n\n", rep.env.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %s\n", rep.env.machine)
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min): %s at start, %s at end\n", rep.env.loadStart, rep.env.loadEnd)
	if len(rep.env.tools) > 0 {
		fmt.Fprintf(&b, "- Tools: %s\n", strings.Join(rep.env.tools, "; "))
	}
	fmt.Fprintf(&b, "- Command: `%s` (as root; agent: `%s`)\n", rep.cfg.command, rep.cfg.agent)
	fmt.Fprintf(&b, "- Load: h2load, %d clients, -m %d; fixed-rate runs of %v each, saturation runs of %d requests; %d round(s), modes interleaved with the order rotated per round\n",
		rep.cfg.clients, rep.cfg.streams, rep.cfg.perRun, rep.cfg.satN, rep.cfg.rounds)
	if slices.ContainsFunc(rep.cfg.workloads, func(w workload) bool { return w.grpc != "" }) {
		fmt.Fprintf(&b, "- gRPC workloads: a Go load generator (grpc-go, %d connections, open loop at the fixed rate; at saturation %d callers) calls the grpc-go interop TestService in a child process; unary: UnaryCall, stream: StreamingOutputCall returning %d messages; latency from sending to the end of the response; req/s are calls/s, 2 flows expected per call\n",
			rep.cfg.clients, rep.cfg.clients*rep.cfg.streams, streamMessages)
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(&b, "|"+strings.Repeat("---|", len(header)))
	for _, r := range rep.rows {
		fmt.Fprintln(&b, "| "+strings.Join(rep.cells(r), " | ")+" |")
	}
	if len(rep.capacity) > 0 {
		fmt.Fprintf(&b, "\nCapacity (%s responses):\n\n", sizeName(128))
		fmt.Fprintln(&b, "| "+strings.Join(capacityHeader, " | ")+" |")
		fmt.Fprintln(&b, "|"+strings.Repeat("---|", len(capacityHeader)))
		for _, r := range rep.capacity {
			fmt.Fprintln(&b, "| "+strings.Join(rep.capacityCells(r), " | ")+" |")
		}
		fmt.Fprintln(&b)
		for _, m := range rep.cfg.capacityModes {
			if best, ok := rep.highestLossless(m); ok {
				fmt.Fprintf(&b, "- %s: highest lossless step **%.0f req/s**.\n", m, best)
			} else {
				fmt.Fprintf(&b, "- %s: no step was lossless.\n", m)
			}
		}
	}
	fmt.Fprintln(&b, "\n```")
	rep.kernelBreakdown(&b)
	fmt.Fprintln(&b, "```")
	if svgPath != "" {
		if rel, ok := strings.CutPrefix(svgPath, "docs/"); ok {
			svgPath = rel
		}
		fmt.Fprintf(&b, "\n![latency percentiles by mode](%s)\n", svgPath)
	}
	fmt.Fprintln(&b, mdEnd)

	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var doc string
	i, j := bytes.Index(old, []byte(mdBegin)), bytes.Index(old, []byte(mdEnd))
	switch {
	case i >= 0 && j > i:
		doc = string(old[:i]) + b.String() + string(old[j+len(mdEnd)+1:])
	default:
		doc = "# Benchmarks\n\n" + b.String()
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// svg plots P50/P95/P99 by mode, one panel per workload, each panel on its
// own linear scale (saturation latencies are queueing, far above the rest).
func (rep *report) svg() []byte {
	const panelW, panelH, top, left, barW = 300, 260, 40, 50, 12
	colors := map[string]string{"p50": "#4c78a8", "p95": "#f58518", "p99": "#e45756"}
	var b bytes.Buffer
	width := left + len(rep.cfg.workloads)*panelW + 20
	height := top + panelH + 90
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">sextant bench: h2load latency percentiles (ms) by mode, %s</text>`+"\n", left, rep.env.date.Format("2006-01-02"))
	for i, p := range []string{"p50", "p95", "p99"} {
		x := width - 200 + i*60
		fmt.Fprintf(&b, `<rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17">%s</text>`+"\n", x, colors[p], x+14, p)
	}
	for wi, w := range rep.cfg.workloads {
		x0 := left + wi*panelW
		var rows []row
		var maxv time.Duration
		for _, r := range rep.rows {
			if r.w == w {
				rows = append(rows, r)
				maxv = max(maxv, r.lat.pct(99))
			}
		}
		if maxv == 0 {
			maxv = time.Millisecond
		}
		y := func(d time.Duration) float64 {
			return float64(top+panelH) - float64(d)/float64(maxv)*float64(panelH-10)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0+10, top-6, w)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`+"\n", x0, top+panelH, x0+panelW-20, top+panelH)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`+"\n", x0, top, x0, top+panelH)
		for _, frac := range []float64{0.5, 1} {
			d := time.Duration(float64(maxv) * frac)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-3, y(d)+4, ms(d))
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y(d), x0+panelW-20, y(d))
		}
		groupW := (panelW - 30) / max(len(rows), 1)
		for ri, r := range rows {
			gx := x0 + 10 + ri*groupW
			for pi, p := range []string{"p50", "p95", "p99"} {
				d := r.lat.pct([]float64{50, 95, 99}[pi])
				bx := gx + pi*barW
				fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s %s: %s ms</title></rect>`+"\n",
					bx, y(d), barW-1, float64(top+panelH)-y(d), colors[p], w, r.mode, p, ms(d))
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" transform="rotate(-35 %d %d)">%s</text>`+"\n",
				gx+3*barW, top+panelH+14, gx+3*barW, top+panelH+14, r.mode)
		}
	}
	fmt.Fprintln(&b, "</svg>")
	return b.Bytes()
}
