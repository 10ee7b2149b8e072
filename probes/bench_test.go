package probes

import (
	"context"
	"sync/atomic"
	"testing"
)

// BenchmarkLoad measures Load (verification included) + Close and reports
// the instructions the verifier processed for the frame walker.
func BenchmarkLoad(b *testing.B) {
	requireRoot(b)
	var insns uint32
	for b.Loop() {
		p, err := Load(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, ps := range p.Stats().Programs {
			insns += ps.Instructions
		}
		b.ReportMetric(float64(p.LoadTime().Milliseconds()), "load-ms")
		p.Close()
	}
	b.ReportMetric(float64(insns)/float64(b.N), "verified-insns")
}

// BenchmarkTracedH2C runs h2c requests with the probes attached and a
// reader consuming the records: the cost of being observed, end to end.
// Compare with BenchmarkUntracedH2C.
func BenchmarkTracedH2C(b *testing.B) {
	requireRoot(b)
	p, err := Load(Options{TraceSelf: true, KernelStats: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Uint64
	done := make(chan struct{})
	go func() { p.Run(ctx, func(*Event) { n.Add(1) }); close(done) }()
	benchH2C(b)
	cancel()
	<-done
	st := p.Stats()
	b.ReportMetric(float64(n.Load())/float64(b.N), "records/op")
	for _, ps := range st.Programs {
		if ps.RunCount == 0 {
			continue
		}
		if ps.Name == sextantProgExitIo {
			b.ReportMetric(float64(ps.RunTimeNs)/float64(ps.RunCount), "exit-ns/run")
		}
		b.Logf("%-15s %8d runs %6.0f ns/run", ps.Name, ps.RunCount, float64(ps.RunTimeNs)/float64(ps.RunCount))
	}
	for i, d := range st.Drops {
		if d != 0 {
			b.Logf("drops[%s] = %d", DropReason(i), d)
		}
	}
}

func BenchmarkUntracedH2C(b *testing.B) { benchH2C(b) }

func benchH2C(b *testing.B) {
	addr := h2cServer(b)
	c := h2cClient()
	defer c.CloseIdleConnections()
	for b.Loop() {
		doRequests(b, c, addr, 1, "bench")
	}
}
