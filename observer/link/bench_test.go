package link

import (
	"testing"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

// BenchmarkEncode is the agent's cost per flow sent to a relay.
func BenchmarkEncode(b *testing.B) {
	batch := benchBatch()
	var enc Encoder
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		enc.Batch(batch, ring.Cursor{Instance: 1, Position: 2})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/flow")
	b.ReportMetric(float64(len(enc.buf))/float64(len(batch)), "bytes/flow")
}

// BenchmarkDecode is the relay's cost per flow received.
func BenchmarkDecode(b *testing.B) {
	batch := benchBatch()
	var enc Encoder
	raw := append([]byte(nil), enc.Batch(batch, ring.Cursor{Instance: 1})...)
	var dec Decoder
	into := make([]observer.Entry, 0, len(batch))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if into, _, err = dec.Batch(raw, into[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/flow")
}

func benchBatch() []observer.Entry {
	batch := make([]observer.Entry, 256)
	for i := range batch {
		f := full()
		f.GRPC = nil
		batch[i] = observer.Entry{Flow: f, ID: observer.FlowID{Boot: 1, Seq: uint64(i)}}
	}
	return batch
}
