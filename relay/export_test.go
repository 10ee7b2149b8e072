package relay

import (
	"context"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
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
// body sizes, gRPC counts and outcome survive the trip through Hubble events.
func TestExportCarriesAgentFlows(t *testing.T) {
	a := startAgent(t, "node1", nil)
	base := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	st := uint32(0)
	want := []*flow.Flow{
		{Time: base, Latency: time.Millisecond, TTFB: time.Microsecond, Node: "node1", Observer: flow.SideServer,
			Protocol: "HTTP/2", Method: "POST", Path: "/pkg.S/M", Status: 200, RequestBytes: 7, ResponseBytes: 9,
			GRPC:   &flow.GRPC{Service: "pkg.S", Method: "M", Status: &st, StatusSource: "trailers", RequestMessages: 1, ResponseMessages: 1},
			Source: netip.MustParseAddrPort("127.0.0.1:4000"), Destination: netip.MustParseAddrPort("127.0.0.1:80")},
		{Time: base.Add(time.Millisecond), Latency: time.Second, Node: "node1", Observer: flow.SideClient,
			Protocol: "HTTP/1.1", Method: "GET", Path: "/slow", Outcome: flow.OutcomeClosed},
	}
	for _, f := range want {
		evs := hubble.Events(f)
		if err := hubble.AttachFlow(evs[len(evs)-1], f); err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			a.ring.Write(&observerpb.GetFlowsResponse{Time: ev.GetTime(), NodeName: "node1",
				ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: ev}})
		}
	}
	r, _ := startRelay(t, Options{Agents: a.addrs, Since: base.Add(-time.Hour), SortWindow: 100 * time.Millisecond}, nil)
	sub := r.Subscribe(0)
	rec := &recorder{}
	done := make(chan uint64)
	go func() {
		_, bad := Export(sub, rec, testLogger(t))
		done <- bad
	}()
	deadline := time.Now().Add(20 * time.Second)
	for rec.len() < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for duplicates to show
	sub.Close()
	if bad := <-done; bad != 0 {
		t.Fatalf("%d undecodable events", bad)
	}
	if len(rec.flows) != len(want) {
		t.Fatalf("exported %d flows, want %d", len(rec.flows), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(rec.flows[i], want[i]) {
			t.Errorf("flow %d:\n got %+v\nwant %+v", i, rec.flows[i], want[i])
		}
	}
}
