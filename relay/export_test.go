package relay

import (
	"context"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

type recorder struct {
	mu    sync.Mutex
	flows []*flow.Flow
}

func (r *recorder) Export(f *flow.Flow) {
	r.mu.Lock()
	r.flows = append(r.flows, f)
	r.mu.Unlock()
}

func (r *recorder) Close(context.Context) error { return nil }

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

// Exporters behind the relay get each agent flow exactly once, whole:
// body sizes, gRPC counts, outcome, headers and process survive the link.
func TestExportCarriesAgentFlows(t *testing.T) {
	a := startAgent(t, "node1", nil)
	base := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	st := uint32(0)
	want := []*flow.Flow{
		{Time: base, Latency: time.Millisecond, TTFB: time.Microsecond, Node: "node1", Observer: flow.SideServer,
			Protocol: "HTTP/2", Method: "POST", Path: "/pkg.S/M", Status: 200, RequestBytes: 7, ResponseBytes: 9,
			GRPC:   &flow.GRPC{Service: "pkg.S", Method: "M", Status: &st, StatusSource: "trailers", RequestMessages: 1, ResponseMessages: 1},
			Source: netip.MustParseAddrPort("127.0.0.1:4000"), Destination: netip.MustParseAddrPort("127.0.0.1:80"),
			Scheme: "http", Authority: "svc:80", Route: "/pkg.S/M", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			RequestHeaders:  []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "x-long", Value: "abc", Truncated: true}},
			ResponseHeaders: []flow.Header{{Name: "grpc-status", Value: "0"}},
			Process:         flow.Process{PID: 7, Comm: "svc", Exe: "/bin/svc", CgroupID: 9, Cgroup: "/a", ContainerID: "c0ffee"},
			ConnID:          3, StreamID: 5},
		{Time: base.Add(time.Millisecond), Latency: time.Second, Node: "node1", Observer: flow.SideClient,
			Protocol: "HTTP/1.1", Method: "GET", Path: "/slow", Outcome: flow.OutcomeClosed, ResetCode: 2, ResetBy: flow.SideServer,
			Source: netip.MustParseAddrPort("[2001:db8::1]:5000"), Destination: netip.MustParseAddrPort("[2001:db8::2]:80"),
			Unknown: []string{"authority", "status"}},
	}
	for _, f := range want {
		a.feed.Export(f)
	}
	r, _ := startRelay(t, Options{Agents: a.addrs, Since: base.Add(-time.Hour), SortWindow: 100 * time.Millisecond}, nil)
	sub := r.Subscribe()
	rec := &recorder{}
	done := make(chan uint64)
	go func() { done <- Export(sub, rec) }()
	deadline := time.Now().Add(20 * time.Second)
	for rec.len() < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for duplicates to show
	sub.Close()
	if n := <-done; n != uint64(len(want)) || len(rec.flows) != len(want) {
		t.Fatalf("exported %d flows (Export says %d), want %d", len(rec.flows), n, len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(rec.flows[i], want[i]) {
			t.Errorf("flow %d:\n got %+v\nwant %+v", i, rec.flows[i], want[i])
		}
	}
}
