package http2

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/flow"
)

// FuzzRecords feeds arbitrary record sequences (as a hostile or broken
// kernel side could produce) into the decoder: it must never panic, and
// every flow it reports must carry a request it actually decoded.
func FuzzRecords(f *testing.F) {
	// Seed with a real connection's records.
	client, tp := h2cPair(f, exchangeHandler())
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("http://%s/status/200/seed/%d", tp.addr(), i))
		drain(f, resp, err)
	}
	f.Add(encodeRecords(tp.records()))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewConn(Config{MaxStreams: 8, MaxHeaderBlock: 1 << 12}, &Stats{}, len(b)%2 == 0, flow.Egress, func(f *flow.Flow) {
			if f.Protocol != "HTTP/2" {
				t.Fatalf("bad flow %+v", f)
			}
		})
		for _, r := range decodeRecords(b) {
			c.Handle(r)
		}
		c.Close(time.Now())
	})
}

// Record encoding for the fuzzer: dir|type|flags(3 bytes) stream(4) len(4)
// offset(2) value(4) value2(4) datalen(2) data.
const recHeader = 3 + 4 + 4 + 2 + 4 + 4 + 2

func encodeRecords(rs []*Record) []byte {
	var b []byte
	for _, r := range rs {
		b = append(b, byte(r.Dir), byte(r.Type), byte(r.Flags))
		b = binary.BigEndian.AppendUint32(b, r.StreamID)
		b = binary.BigEndian.AppendUint32(b, r.Len)
		b = binary.BigEndian.AppendUint16(b, uint16(r.Offset))
		b = binary.BigEndian.AppendUint32(b, r.Value)
		b = binary.BigEndian.AppendUint32(b, r.Value2)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}

func decodeRecords(b []byte) []*Record {
	var rs []*Record
	t := time.Unix(0, 0)
	for len(b) >= recHeader {
		r := &Record{
			Dir: flow.Direction(b[0] & 1), Type: http2.FrameType(b[1] % 10), Flags: http2.Flags(b[2]),
			StreamID: binary.BigEndian.Uint32(b[3:]) & 0x7fffffff, Len: binary.BigEndian.Uint32(b[7:]) & 0xffffff,
			Offset: uint32(binary.BigEndian.Uint16(b[11:])), Value: binary.BigEndian.Uint32(b[13:]),
			Value2: binary.BigEndian.Uint32(b[17:]), Time: t,
		}
		n := int(binary.BigEndian.Uint16(b[21:]))
		b = b[recHeader:]
		n = min(n, len(b))
		r.Data, b = b[:n], b[n:]
		r.GRPCMessages = uint32(n)
		t = t.Add(time.Millisecond)
		rs = append(rs, r)
	}
	return rs
}

// BenchmarkDecode measures the user-space decode path: records of real
// HTTP/2 exchanges (Go client and server, HPACK dynamic table in use) to
// flows. Reports flows/s on one core.
func BenchmarkDecode(b *testing.B) {
	client, tp := h2cPair(b, exchangeHandler())
	const n = 200
	for i := range n {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/status/200/api/v1/users/%d?size=100", tp.addr(), i), nil)
		req.Header.Set("traceparent", fmt.Sprintf("00-%032x-%016x-01", i, i))
		resp, err := client.Do(req)
		drain(b, resp, err)
	}
	recs := tp.records()
	flows := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c := NewConn(Config{}, &Stats{}, false, flow.Egress, func(*flow.Flow) { flows++ })
		for _, r := range recs {
			c.Handle(r)
		}
	}
	b.ReportMetric(float64(flows)/b.Elapsed().Seconds(), "flows/s")
	if flows != n*b.N {
		b.Fatalf("decoded %d flows, want %d", flows, n*b.N)
	}
}
