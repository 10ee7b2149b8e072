package prometheus

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// benchFlows is a mix: 64 routes (ids collapsed), both sides, a few
// statuses, one in four with a traceparent, one in eight gRPC.
func benchFlows() []*flow.Flow {
	var fs []*flow.Flow
	st := uint32(0)
	for i := range 512 {
		side := flow.SideServer
		if i%2 == 1 {
			side = flow.SideClient
		}
		f := httpFlow(side, fmt.Sprintf("/api/r%d/%d?page=%d", i%64, i*7919, i), uint32(200+(i%3)*100), time.Duration(i)*time.Millisecond)
		if i%4 == 0 {
			f.TraceParent = fmt.Sprintf("00-%032x-00f067aa0ba902b7-01", i+1)
		}
		if i%8 == 0 {
			f.Path = "/grpc.testing.TestService/UnaryCall"
			f.GRPC = &flow.GRPC{Service: "grpc.testing.TestService", Method: "UnaryCall", Status: &st}
		}
		fs = append(fs, f)
	}
	return fs
}

// BenchmarkObserve is the worker's cost per flow (label values, route,
// series lookup, observations, exemplars).
func BenchmarkObserve(b *testing.B) {
	e, _ := newTestExporter(&testing.T{}, Config{})
	fs := benchFlows()
	for _, f := range fs {
		e.observe(f) // create the series: the steady state is what runs
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e.observe(fs[i%len(fs)])
	}
}

// BenchmarkObserveNoTrace: flows without traceparent (no exemplar).
func BenchmarkObserveNoTrace(b *testing.B) {
	e, _ := newTestExporter(&testing.T{}, Config{})
	fs := benchFlows()
	for _, f := range fs {
		f.TraceParent = ""
		e.observe(f)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e.observe(fs[i%len(fs)])
	}
}

// BenchmarkExport is what the collector's goroutine pays per flow: one
// send on the queue. The queue is emptied off the clock whenever it fills,
// so every timed send succeeds.
func BenchmarkExport(b *testing.B) {
	e := &Exporter{queue: make(chan *flow.Flow, DefaultQueueSize)}
	f := benchFlows()[0]
	b.ReportAllocs()
	for b.Loop() {
		if len(e.queue) == cap(e.queue) {
			b.StopTimer()
			for len(e.queue) > 0 {
				<-e.queue
			}
			b.StartTimer()
		}
		e.Export(f)
	}
	if d := e.dropped.Load(); d != 0 {
		b.Fatalf("%d flows dropped", d)
	}
}

// BenchmarkThroughput is the exporter end to end: Export, the queue, the
// worker. The producer waits for room instead of dropping, so ns/op is
// the worker's sustainable rate.
func BenchmarkThroughput(b *testing.B) {
	e, _ := newTestExporter(&testing.T{}, Config{})
	fs := benchFlows()
	for _, f := range fs {
		e.Export(f)
	}
	for len(e.queue) > 0 {
		runtime.Gosched()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for len(e.queue) == cap(e.queue) {
			runtime.Gosched()
		}
		e.Export(fs[i%len(fs)])
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(e.dropped.Load())/float64(b.N), "dropped/op")
}
