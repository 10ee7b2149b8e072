package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/testbed"
)

// How long the tests wait. Generous: the machine has 2 noisy cores, and
// nothing here is a timing assertion — only a bound on how long a missing
// flow is waited for before it counts as missing.
const (
	flowTimeout = 60 * time.Second
	// grace is how long the test keeps listening after the expected count
	// arrived, so that extra flows get their chance to show up.
	grace = 2 * time.Second
)

// pipeline is the agent in-process: real probes feeding a real collector.
type pipeline struct {
	t      *testing.T
	probes *probes.Probes
	coll   *collector.Collector

	mu    sync.Mutex // guards flows and records
	flows []*flow.Flow
	// records of every connection, to show what the kernel sent when a
	// flow comes out wrong.
	records map[uint64][]*probes.Event

	cancel context.CancelFunc
	done   chan error // Run's result
}

func startPipeline(t *testing.T) *pipeline {
	return startPipelineWith(t, collector.Config{Node: "e2e"})
}

func startPipelineWith(t *testing.T, cfg collector.Config) *pipeline {
	t.Helper()
	testbed.RequireRoot(t)
	p, err := probes.Load(probes.Options{Capture: testCapture(t)})
	if err != nil {
		t.Fatalf("load probes: %v", err)
	}
	pl := &pipeline{t: t, probes: p, done: make(chan error, 1), records: map[uint64][]*probes.Event{}}
	pl.coll = collector.New(cfg, func(f *flow.Flow) {
		pl.mu.Lock()
		pl.flows = append(pl.flows, f)
		pl.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	pl.cancel = cancel
	// The agent's own drive loop, with a tap that keeps every record.
	go func() { pl.done <- pl.coll.Run(ctx, tap{p, pl.keep}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-pl.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("probes Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("probes Run did not return within 30s of cancel")
		}
		st := p.Stats()
		t.Logf("probes stats: events=%d invalid=%d drops=%v", st.Events, st.Invalid, st.Drops)
		t.Logf("collector stats: %+v", pl.coll.Stats())
		if err := p.Close(); err != nil {
			t.Errorf("close probes: %v", err)
		}
	})
	return pl
}

// running fails the test when Run has returned while it should not have.
func (pl *pipeline) requireRunning() {
	pl.t.Helper()
	select {
	case err := <-pl.done:
		pl.done <- err // keep it for Cleanup
		pl.t.Fatalf("probes Run returned early: %v", err)
	default:
	}
}

func (pl *pipeline) collectorStats() collector.Stats { return pl.coll.Stats() }

// keep copies a record (the collector owns ev) to show what the kernel
// sent when a flow comes out wrong.
func (pl *pipeline) keep(ev *probes.Event) {
	rec := *ev
	pl.mu.Lock()
	pl.records[ev.ConnID] = append(pl.records[ev.ConnID], &rec)
	pl.mu.Unlock()
}

// tap is a collector.Source that shows every record to see first.
type tap struct {
	src collector.Source
	see func(*probes.Event)
}

func (t tap) Run(ctx context.Context, sink func(*probes.Event)) error {
	return t.src.Run(ctx, func(ev *probes.Event) {
		t.see(ev)
		sink(ev)
	})
}

// matching returns the flows (so far) that keep says belong to the workload.
func (pl *pipeline) matching(keep func(*flow.Flow) bool) []*flow.Flow {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []*flow.Flow
	for _, f := range pl.flows {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// await polls until at least want workload flows arrived (or flowTimeout),
// then listens for grace more so that extra flows are caught too.
func (pl *pipeline) await(keep func(*flow.Flow) bool, want int) []*flow.Flow {
	pl.t.Helper()
	deadline := time.Now().Add(flowTimeout)
	for len(pl.matching(keep)) < want && time.Now().Before(deadline) {
		pl.requireRunning()
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(grace)
	pl.requireRunning()
	return pl.matching(keep)
}

// workload selects the flows of a workload: any flow whose process is one
// of the workload's, or whose client or server end is one of its server
// ports on 127.0.0.1. Both tests are needed: a flow with a wrong pid or a
// wrong address must still be caught as wrong, not filtered away.
func workload(pids []uint32, ports []uint16) func(*flow.Flow) bool {
	return func(f *flow.Flow) bool {
		if slices.Contains(pids, f.Process.PID) {
			return true
		}
		for _, ap := range []struct {
			port uint16
			ok   bool
		}{{f.Source.Port(), f.Source.IsValid()}, {f.Destination.Port(), f.Destination.IsValid()}} {
			if ap.ok && slices.Contains(ports, ap.port) {
				return true
			}
		}
		return false
	}
}

// ---------------------------------------------------------------------------
// Expectations.

// want is one expected flow. Every field is compared exactly.
type want struct {
	Observer  flow.Side
	PID       uint32
	Protocol  string
	Method    string
	Scheme    string
	Authority string
	Path      string
	Status    uint32
	GRPC      *wantGRPC // nil: the flow must not be gRPC
	ReqBytes  uint64
	RespBytes uint64
	Outcome   flow.Outcome
	ResetCode uint32
	ResetBy   flow.Side
	// AnyResetBy accepts a reset by either end (both race to reset when a
	// gRPC deadline expires: the client and grpc-go's server timer).
	AnyResetBy bool
	// Client and Server are the two ends (Source and Destination of the
	// flow); a zero port means "any" (the client's ephemeral port).
	ServerPort uint16
	// ServerIP is the server's address when ServerPort is set ("" means
	// 127.0.0.1); the client's is the same (loopback).
	ServerIP string
	// Headers that must be among RequestHeaders with exactly this value.
	ReqHeaders map[string]string
	// Or is another exact flow the exchange may legitimately have produced
	// instead (e.g. which end's deadline timer won a race on the wire).
	Or *want
}

type wantGRPC struct {
	Service, Method string
	Status          *uint32
	StatusSource    string
	Message         string
	ReqMsgs         uint32
	RespMsgs        uint32
}

func u32(v uint32) *uint32 { return &v }

// both returns the expectation as seen from the client and from the server.
func (w want) both(clientPID, serverPID uint32) []want {
	c, s := w, w
	c.Observer, c.PID = flow.SideClient, clientPID
	s.Observer, s.PID = flow.SideServer, serverPID
	if w.Or != nil {
		or := w.Or.both(clientPID, serverPID)
		c.Or, s.Or = &or[0], &or[1]
	}
	return []want{c, s}
}

// unknownOK says which fields a flow may leave undecoded (named in
// flow.Unknown); everything not named must still be exactly right.
type unknownOK func(w want, field string) bool

func noUnknown(want, string) bool { return false }

// mismatch explains why f is not w ("" when it is), nor its alternative.
func (w want) mismatch(f *flow.Flow, allow unknownOK) string {
	m := w.mismatchOne(f, allow)
	if m != "" && w.Or != nil && w.Or.mismatch(f, allow) == "" {
		return ""
	}
	return m
}

func (w want) mismatchOne(f *flow.Flow, allow unknownOK) string {
	for _, u := range f.Unknown {
		if !allow(w, u) {
			return fmt.Sprintf("unknown %q not allowed", u)
		}
	}
	unknown := func(field string) bool { return slices.Contains(f.Unknown, field) }
	var bad []string
	check := func(field string, ok bool, got, exp any) {
		if !ok && !unknown(field) {
			bad = append(bad, fmt.Sprintf("%s=%v want %v", field, got, exp))
		}
	}
	check("observer", f.Observer == w.Observer, f.Observer, w.Observer)
	check("pid", f.Process.PID == w.PID, f.Process.PID, w.PID)
	check("protocol", f.Protocol == w.Protocol, f.Protocol, w.Protocol)
	check("method", f.Method == w.Method, f.Method, w.Method)
	check("scheme", f.Scheme == w.Scheme, f.Scheme, w.Scheme)
	check("authority", f.Authority == w.Authority, f.Authority, w.Authority)
	check("path", f.Path == w.Path, f.Path, w.Path)
	check("status", f.Status == w.Status, f.Status, w.Status)
	check("request_bytes", f.RequestBytes == w.ReqBytes, f.RequestBytes, w.ReqBytes)
	check("response_bytes", f.ResponseBytes == w.RespBytes, f.ResponseBytes, w.RespBytes)
	check("outcome", f.Outcome == w.Outcome, f.Outcome, w.Outcome)
	check("reset_code", f.ResetCode == w.ResetCode, f.ResetCode, w.ResetCode)
	if w.AnyResetBy {
		check("reset_by", f.ResetBy == flow.SideClient || f.ResetBy == flow.SideServer, f.ResetBy, "client or server")
	} else {
		check("reset_by", f.ResetBy == w.ResetBy, f.ResetBy, w.ResetBy)
	}
	if w.ServerPort != 0 {
		ip := w.ServerIP
		if ip == "" {
			ip = "127.0.0.1"
		}
		check("destination", f.Destination.Port() == w.ServerPort && f.Destination.Addr().String() == ip,
			f.Destination, net.JoinHostPort(ip, fmt.Sprint(w.ServerPort)))
		check("source", f.Source.Addr().String() == ip && f.Source.Port() != w.ServerPort && f.Source.Port() != 0,
			f.Source, net.JoinHostPort(ip, "<ephemeral>"))
	}
	for name, value := range w.ReqHeaders {
		var got []string
		exact := false
		for _, h := range f.RequestHeaders {
			if strings.EqualFold(h.Name, name) {
				got = append(got, h.Value)
				// A value cut to the flow's limit must say so and be a
				// true prefix; a silently shortened value is a wrong one.
				exact = h.Value == value || h.Truncated && len(h.Value) > 0 && strings.HasPrefix(value, h.Value)
			}
		}
		check("request_headers", len(got) == 1 && exact,
			fmt.Sprintf("%s: %d values %v", name, len(got), abbreviate(got)), fmt.Sprintf("%s: %s", name, abbreviate([]string{value})))
	}
	switch {
	case w.GRPC == nil && f.GRPC != nil:
		bad = append(bad, fmt.Sprintf("grpc=%+v want none", *f.GRPC))
	case w.GRPC != nil && f.GRPC == nil:
		if !unknown("grpc") {
			bad = append(bad, fmt.Sprintf("grpc=none want %+v", *w.GRPC))
		}
	case w.GRPC != nil:
		g, e := f.GRPC, w.GRPC
		// Service and method come from :path.
		check("path", g.Service == e.Service, "grpc.service "+g.Service, e.Service)
		check("path", g.Method == e.Method, "grpc.method "+g.Method, e.Method)
		check("grpc_status", eqStatus(g.Status, e.Status), fmtStatus(g.Status), fmtStatus(e.Status))
		check("grpc_status", g.StatusSource == e.StatusSource, "source "+g.StatusSource, e.StatusSource)
		check("grpc_message", g.Message == e.Message, g.Message, e.Message)
		check("grpc_request_messages", g.RequestMessages == e.ReqMsgs, g.RequestMessages, e.ReqMsgs)
		check("grpc_response_messages", g.ResponseMessages == e.RespMsgs, g.ResponseMessages, e.RespMsgs)
	}
	return strings.Join(bad, ", ")
}

func eqStatus(a, b *uint32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func fmtStatus(s *uint32) string {
	if s == nil {
		return "none"
	}
	return fmt.Sprint(*s)
}

func abbreviate(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		if len(v) > 40 {
			v = fmt.Sprintf("%s…(%d bytes)", v[:20], len(v))
		}
		out[i] = v
	}
	return out
}

func (w want) String() string {
	s := fmt.Sprintf("%s pid=%d %s %s %s%s status=%d req=%d resp=%d %s",
		w.Observer, w.PID, w.Protocol, w.Method, w.Authority, abbreviate([]string{w.Path})[0], w.Status, w.ReqBytes, w.RespBytes, w.Outcome)
	if w.GRPC != nil {
		s += fmt.Sprintf(" grpc=%s/%s status=%s(%s) %q msgs=%d/%d", w.GRPC.Service, w.GRPC.Method,
			fmtStatus(w.GRPC.Status), w.GRPC.StatusSource, w.GRPC.Message, w.GRPC.ReqMsgs, w.GRPC.RespMsgs)
	}
	if w.Or != nil {
		s += " | or " + w.Or.String()
	}
	return s
}

// key identifies a want by every field mismatch looks at.
func (w want) key() string {
	k := fmt.Sprintf("%v|%d|%s|%s|%s|%s|%s|%d|%d|%d|%v|%d|%v|%v|%d", w.Observer, w.PID, w.Protocol, w.Method, w.Scheme,
		w.Authority, w.Path, w.Status, w.ReqBytes, w.RespBytes, w.Outcome, w.ResetCode, w.ResetBy, w.AnyResetBy, w.ServerPort)
	k += "|" + w.ServerIP
	if g := w.GRPC; g != nil {
		k += fmt.Sprintf("|grpc %s|%s|%s|%s|%q|%d|%d", g.Service, g.Method, fmtStatus(g.Status), g.StatusSource, g.Message, g.ReqMsgs, g.RespMsgs)
	}
	names := make([]string, 0, len(w.ReqHeaders))
	for n := range w.ReqHeaders {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		k += "|" + n + "=" + w.ReqHeaders[n]
	}
	if w.Or != nil {
		k += "|or " + w.Or.key()
	}
	return k
}

func describe(f *flow.Flow) string {
	s := fmt.Sprintf("%s pid=%d(%s) %s %s %s%s status=%d req=%d resp=%d %s %s->%s conn=%d stream=%d",
		f.Observer, f.Process.PID, f.Process.Comm, f.Protocol, f.Method, f.Authority, abbreviate([]string{f.Path})[0],
		f.Status, f.RequestBytes, f.ResponseBytes, f.Outcome, f.Source, f.Destination, f.ConnID, f.StreamID)
	if f.Outcome == flow.OutcomeReset || f.ResetCode != 0 {
		s += fmt.Sprintf(" reset=%d by %s", f.ResetCode, f.ResetBy)
	}
	if f.GRPC != nil {
		g := f.GRPC
		s += fmt.Sprintf(" grpc=%s/%s status=%s(%s) %q msgs=%d/%d", g.Service, g.Method,
			fmtStatus(g.Status), g.StatusSource, g.Message, g.RequestMessages, g.ResponseMessages)
	}
	if len(f.Unknown) > 0 {
		s += fmt.Sprintf(" unknown=%v", f.Unknown)
	}
	return s
}

// assertFlows is the package-level assertFlows plus, on failure, the
// kernel records of the connections behind the first wrong flows.
func (pl *pipeline) assertFlows(got []*flow.Flow, wants []want, allow unknownOK) {
	pl.t.Helper()
	extra := assertFlows(pl.t, got, wants, allow)
	shown := map[uint64]bool{}
	for _, f := range extra {
		if len(shown) == 2 {
			break
		}
		if shown[f.ConnID] {
			continue
		}
		shown[f.ConnID] = true
		pl.mu.Lock()
		recs := pl.records[f.ConnID]
		pl.mu.Unlock()
		var b strings.Builder
		fmt.Fprintf(&b, "records of conn %d (%s, pid %d):\n", f.ConnID, f.Observer, f.Process.PID)
		for i, ev := range recs {
			if i == 80 {
				fmt.Fprintf(&b, "  … %d more\n", len(recs)-i)
				break
			}
			fmt.Fprintf(&b, "  %s\n", describeRecord(ev))
		}
		pl.t.Log(b.String())
	}
}

func describeRecord(ev *probes.Event) string {
	s := fmt.Sprintf("%s %v seq=%d tid=%d %v", ev.Time.Format("15:04:05.000000"), ev.Dir, ev.Seq, ev.TID, ev.Kind)
	switch ev.Kind {
	case probes.KindConn:
		s += fmt.Sprintf(" %v %v->%v comm=%s", ev.Conn.Proto, ev.Conn.Local, ev.Conn.Remote, ev.Conn.Comm)
	case probes.KindH2Frame:
		s += fmt.Sprintf(" %v flags=%#x stream=%d len=%d off=%d grpc=%d value=%d data=%d", ev.FrameType, uint8(ev.Flags), ev.StreamID, ev.FrameLen, ev.Offset, ev.GRPCMessages, ev.Value, len(ev.Data))
	case probes.KindH1Data:
		s += fmt.Sprintf(" len=%d head=%q", ev.Len, abbreviate([]string{string(ev.Data)})[0])
	case probes.KindParseError:
		s += fmt.Sprintf(" reason=%d frame=%x", ev.Reason, ev.FrameHeader)
	}
	return s
}

// assertFlows requires a perfect one-to-one match between flows and wants:
// 0 missing, 0 extra, 0 wrong. The match is a maximum bipartite matching,
// so the verdict does not depend on the order flows arrived in.
func assertFlows(t *testing.T, got []*flow.Flow, wants []want, allow unknownOK) (extra []*flow.Flow) {
	t.Helper()
	// Identical wants (h2load: 2000 of them) share one adjacency list, so
	// the expensive comparison runs once per distinct want and flow.
	adjOf := map[string][]int{}
	adj := make([][]int, len(wants))
	keys := make([]string, len(wants))
	for i, w := range wants {
		keys[i] = w.key()
		a, ok := adjOf[keys[i]]
		if !ok {
			a = []int{}
			for j, f := range got {
				if w.mismatch(f, allow) == "" {
					a = append(a, j)
				}
			}
			adjOf[keys[i]] = a
		}
		adj[i] = a
	}
	flowOf := make([]int, len(wants)) // want -> flow
	wantOf := make([]int, len(got))   // flow -> want
	for i := range flowOf {
		flowOf[i] = -1
	}
	for j := range wantOf {
		wantOf[j] = -1
	}
	var augment func(i int, seen []bool) bool
	augment = func(i int, seen []bool) bool {
		for _, j := range adj[i] {
			if seen[j] {
				continue
			}
			seen[j] = true
			if wantOf[j] < 0 || augment(wantOf[j], seen) {
				wantOf[j], flowOf[i] = i, j
				return true
			}
		}
		return false
	}
	// Once a want finds no augmenting path, none of its twins will either
	// (the matching did not change): skip them instead of searching again.
	failed := map[string]bool{}
	for i := range wants {
		if failed[keys[i]] {
			continue
		}
		if !augment(i, make([]bool, len(got))) {
			failed[keys[i]] = true
		}
	}
	var missing []want
	for i, j := range flowOf {
		if j < 0 {
			missing = append(missing, wants[i])
		}
	}
	for j, i := range wantOf {
		if i < 0 {
			extra = append(extra, got[j])
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		t.Logf("all %d flows exact", len(wants))
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "flows: %d expected, %d observed; %d missing, %d extra or wrong\n", len(wants), len(got), len(missing), len(extra))
	const maxShown = 20
	for k, w := range missing {
		if k == maxShown {
			fmt.Fprintf(&b, "  … %d more missing\n", len(missing)-maxShown)
			break
		}
		fmt.Fprintf(&b, "  MISSING %s\n", w)
		// The nearest unmatched flow explains most "wrong" cases.
		if near := nearest(w, extra, allow); near != "" {
			fmt.Fprintf(&b, "          nearest: %s\n", near)
		}
	}
	for k, f := range extra {
		if k == maxShown {
			fmt.Fprintf(&b, "  … %d more extra\n", len(extra)-maxShown)
			break
		}
		fmt.Fprintf(&b, "  EXTRA   %s\n", describe(f))
	}
	t.Error(b.String())
	return extra
}

// nearest finds the unmatched flow differing from w in the fewest fields.
func nearest(w want, flows []*flow.Flow, allow unknownOK) string {
	best, bestN := "", 1<<30
	for _, f := range flows {
		m := w.mismatch(f, allow)
		if n := strings.Count(m, ",") + 1; n < bestN {
			best, bestN = describe(f)+" ["+m+"]", n
		}
	}
	return best
}

// testCapture is the capture path the suite runs on: $SEXTANT_CAPTURE
// (auto, socket, syscall), so that `go tool task test` proves both.
func testCapture(t testing.TB) probes.Capture {
	c, err := probes.ParseCapture(cmp.Or(os.Getenv("SEXTANT_CAPTURE"), "auto"))
	if err != nil {
		t.Fatalf("SEXTANT_CAPTURE: %v", err)
	}
	return c
}
