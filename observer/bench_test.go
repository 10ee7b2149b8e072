package observer

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
)

// benchFlow is an h2load request to nghttpd as the collector emits it,
// observed at the server.
func benchFlow() *flow.Flow {
	return &flow.Flow{
		Time: time.Now(), Latency: 180 * time.Microsecond, TTFB: 150 * time.Microsecond, Node: "bench",
		Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "127.0.0.1:8080",
		Path: "/small", Route: "/small", Status: 200, ResponseBytes: 128,
		RequestHeaders:  []flow.Header{{Name: "user-agent", Value: "h2load nghttp2/1.52.0"}},
		ResponseHeaders: []flow.Header{{Name: "server", Value: "nghttpd nghttp2/1.52.0"}, {Name: "content-length", Value: "128"}, {Name: "date", Value: "Wed, 02 Dec 2026 10:00:00 GMT"}},
		Source:          netip.MustParseAddrPort("127.0.0.1:40000"), Destination: netip.MustParseAddrPort("127.0.0.1:8080"),
		Process: flow.Process{PID: 4242, Comm: "nghttpd", Exe: "/usr/bin/nghttpd", CgroupID: 77, Cgroup: "/user.slice"},
		ConnID:  7, StreamID: 13,
	}
}

// BenchmarkFeedExport is what keeping a flow costs the agent's collector
// when nobody reads: one ring slot.
func BenchmarkFeedExport(b *testing.B) {
	feed := NewFeed(NewRing(2048), "bench")
	f := benchFlow()
	b.ReportAllocs()
	for b.Loop() {
		feed.Export(f)
	}
}

// BenchmarkEagerConversion is what the agent paid per flow before events
// were built lazily: both Hubble events and the flow as JSON for the
// relay, whether anyone read them or not (the reference for the above).
func BenchmarkEagerConversion(b *testing.B) {
	f := benchFlow()
	b.ReportAllocs()
	for b.Loop() {
		evs := hubble.Events(f)
		if _, err := json.Marshal(f); err != nil || len(evs) != 2 {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildEvents is what a Hubble client costs per flow it reads
// (both events built, no filter), in its own goroutine.
func BenchmarkBuildEvents(b *testing.B) {
	e := Entry{Flow: benchFlow(), ID: FlowID{Boot: 1, Seq: 2}}
	q, err := newQuery(nil)
	if err != nil {
		b.Fatal(err)
	}
	var evs []event
	b.ReportAllocs()
	for b.Loop() {
		evs = e.events(evs[:0])
		for _, ev := range evs {
			if _, ok := q.accept(ev); !ok {
				b.Fatal("refused")
			}
		}
	}
}
