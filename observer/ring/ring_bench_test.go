package ring

import (
	"context"
	"testing"

	"github.com/sextant/sextant/flow"
)

// BenchmarkWrite measures the collector's cost of keeping one flow when
// nobody follows.
func BenchmarkWrite(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	f := &flow.Flow{Protocol: "HTTP/2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
}

// BenchmarkWriteFollowed measures Write while a reader drains the ring in
// batches concurrently, and reports how much that reader lost.
func BenchmarkWriteFollowed(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	rd := r.Follow()
	stop := make(chan struct{})
	drained := make(chan uint64)
	go func() {
		buf := make([]*flow.Flow, 256)
		var n uint64
		for {
			k, _ := rd.Read(buf)
			n += uint64(k)
			if k == 0 && !rd.Wait(context.Background(), stop) {
				drained <- n
				return
			}
		}
	}()
	f := &flow.Flow{Protocol: "HTTP/2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
	b.StopTimer()
	close(stop)
	received := <-drained
	b.ReportMetric(float64(rd.Lost())/float64(b.N)*100, "%lost")
	b.ReportMetric(float64(received)/float64(b.N)*100, "%received")
}

// BenchmarkLast measures a history read of 1000 flows from a full ring.
func BenchmarkLast(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	f := &flow.Flow{}
	for range DefaultCapacity {
		r.Write(f)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Last(1000)
	}
}
