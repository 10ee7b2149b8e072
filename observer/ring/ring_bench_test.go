package ring

import (
	"context"
	"testing"

	"github.com/sextant/sextant/flow"
)

// BenchmarkWrite measures the collector's cost of publishing one flow when
// nobody follows.
func BenchmarkWrite(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	f := &flow.Flow{Protocol: "HTTP/2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
}

// BenchmarkWriteFollowed measures Write while a subscriber drains the stream
// concurrently, and reports how much that subscriber lost.
func BenchmarkWriteFollowed(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	ctx, cancel := context.WithCancel(context.Background())
	s := r.Subscribe(ctx, DefaultSubscriberBuffer)
	drained := make(chan int)
	go func() {
		n := 0
		for range s.Events() {
			n++
		}
		drained <- n
	}()

	f := &flow.Flow{Protocol: "HTTP/2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
	b.StopTimer()
	cancel()
	received := <-drained
	b.ReportMetric(float64(s.Lost())/float64(b.N)*100, "%lost")
	b.ReportMetric(float64(received)/float64(b.N)*100, "%received")
}

// BenchmarkWriteIgnored measures Write with a subscriber that never reads:
// every write takes the loss path.
func BenchmarkWriteIgnored(b *testing.B) {
	r := New[*flow.Flow](DefaultCapacity)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = r.Subscribe(ctx, 1)
	f := &flow.Flow{Protocol: "HTTP/2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Write(f)
	}
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
