package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// BenchmarkMerge measures the relay's merge throughput: three in-process
// agents serve 50k flow events each over loopback gRPC, interleaved in
// time, and the relay merges them into one time-ordered stream read by a
// subscriber. Reported as flows/s (events through the whole path: agent
// marshal, gRPC, relay unmarshal, dedupe, sort window, ring, subscriber).
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
			a.write(base.Add(time.Duration(k*3+i) * time.Microsecond))
		}
	}
	// One last event at the same time on every agent, so that the sort
	// window releases the tail at once rather than after SortWindow.
	end := base.Add(time.Minute)
	for _, a := range agents {
		a.write(end)
	}
	total := 3 * (perAgent + 1)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	var elapsed time.Duration
	var late uint64
	for range b.N {
		r, err := New(Options{Agents: addrs, AllowInsecure: true, Since: base.Add(-time.Second), Log: log})
		if err != nil {
			b.Fatal(err)
		}
		sub := r.Subscribe(total)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			_ = r.Run(ctx)
		}()
		for n := 0; n < total; n++ {
			select {
			case <-sub.Events():
			case <-time.After(30 * time.Second):
				b.Fatalf("%d of %d events after 30s (stats %+v)", n, total, r.Stats())
			}
		}
		elapsed += time.Since(start)
		st := r.Stats()
		if st.Duplicates != 0 || sub.Dropped() != 0 {
			b.Fatalf("stats %+v, dropped %d", st, sub.Dropped())
		}
		// Late events are not wrong (an agent stalled longer than the
		// sort window, as happens on a loaded machine), but they are
		// worth seeing next to the throughput.
		late += st.Late
		cancel()
		<-done
	}
	b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "flows/s")
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
	a := &testAgent{t: t, name: name, ring: newRing(1 << 18), addrs: []string{addr}}
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
