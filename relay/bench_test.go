package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/observer"
)

// BenchmarkMerge measures the relay's merge throughput: three in-process
// agents serve 50k flows each (a request and a response event apiece)
// over loopback gRPC, interleaved in time, and the relay merges them into
// one time-ordered stream read by a subscriber. Reported as flows/s
// (through the whole path: agent link encoding, gRPC, relay decoding,
// sort window, ring, subscriber) and allocations per flow.
func BenchmarkMerge(b *testing.B) {
	const perAgent = 50000
	t := &testing.T{}
	var agents []*testAgent
	var addrs []string
	base := time.Now().Add(-time.Hour)
	for _, name := range []string{"node1", "node2", "node3"} {
		a := benchAgent(b, t, name)
		agents = append(agents, a)
		addrs = append(addrs, a.addrs[0])
	}
	for k := range perAgent {
		for i, a := range agents {
			a.writeAnswered(base.Add(time.Duration(k*3+i)*time.Microsecond), 50*time.Microsecond)
		}
	}
	// One last flow at the same time on every agent, so that the sort
	// window releases the tail at once rather than after SortWindow.
	end := base.Add(time.Minute)
	for _, a := range agents {
		a.writeAnswered(end, 0)
	}
	flows := 3 * (perAgent + 1)
	events := 2*3*perAgent + 3

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	var elapsed time.Duration
	var late, mallocs uint64
	buf := make([]observer.Entry, 1024)
	for range b.N {
		r, err := New(Options{Agents: addrs, AllowInsecure: true, Since: base.Add(-time.Second), Log: log, RingSize: events})
		if err != nil {
			b.Fatal(err)
		}
		sub := r.Subscribe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		go func() {
			defer close(done)
			_ = r.Run(ctx)
		}()
		timeout := time.AfterFunc(60*time.Second, sub.Close)
		for n := 0; n < events; {
			k, ok := sub.Read(buf)
			if !ok {
				b.Fatalf("%d of %d events after 60s (stats %+v)", n, events, r.Stats())
			}
			n += k
		}
		timeout.Stop()
		elapsed += time.Since(start)
		runtime.ReadMemStats(&after)
		mallocs += after.Mallocs - before.Mallocs
		st := r.Stats()
		if sub.Dropped() != 0 {
			b.Fatalf("stats %+v, dropped %d", st, sub.Dropped())
		}
		// Late events are not wrong (an agent stalled longer than the
		// sort window, as happens on a loaded machine), but they are
		// worth seeing next to the throughput.
		late += st.Late
		sub.Close()
		cancel()
		<-done
	}
	b.ReportMetric(float64(mallocs)/float64(flows*b.N), "allocs/flow")
	b.ReportMetric(float64(flows*b.N)/elapsed.Seconds(), "flows/s")
	b.ReportMetric(float64(late)/float64(b.N), "late/op")
	b.ReportMetric(0, "ns/op")
}

// benchAgent is startAgent for a benchmark: the gRPC server lives until the
// benchmark ends.
func benchAgent(b *testing.B, t *testing.T, name string) *testAgent {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := &testAgent{t: t, name: name, ring: observer.NewRing(1 << 17), addrs: []string{addr}}
	a.feed = observer.NewFeed(a.ring, name)
	a.start()
	b.Cleanup(a.stop)
	// Fail fast when the agent is not serving.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err != nil {
		b.Fatalf("agent %s: %v", name, err)
	}
	return a
}
