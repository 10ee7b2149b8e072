package printer

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
)

var at = time.Date(2026, 11, 25, 19, 34, 1, 123456789, time.UTC)

// events converts a real flow with the real converter.
func events(t *testing.T) []*observerpb.GetFlowsResponse {
	t.Helper()
	f := &flow.Flow{
		Time: at, Latency: 12300 * time.Microsecond, TTFB: time.Millisecond, Node: "node-a", Observer: flow.SideClient,
		Protocol: "HTTP/2", Method: "GET", Scheme: "http", Authority: "localhost:8080", Path: "/hello?x=1", Status: 200,
		Source:      netip.MustParseAddrPort("127.0.0.1:54321"),
		Destination: netip.MustParseAddrPort("127.0.0.1:8080"),
		Process:     flow.Process{PID: 1234, Comm: "curl"},
	}
	var out []*observerpb.GetFlowsResponse
	for _, ev := range hubble.Events(f) {
		out = append(out, &observerpb.GetFlowsResponse{Time: ev.GetTime(), NodeName: ev.GetNodeName(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: ev}})
	}
	if len(out) != 2 {
		t.Fatalf("converter gave %d events, want request and response", len(out))
	}
	return out
}

func TestCompact(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Compact)
	p.Location = time.UTC
	for _, e := range events(t) {
		if err := p.Print(e); err != nil {
			t.Fatal(err)
		}
	}
	lost := &observerpb.GetFlowsResponse{Time: timestamppb.New(at), NodeName: "node-a",
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 7}}}
	if err := p.Print(lost); err != nil {
		t.Fatal(err)
	}
	want := "Nov 25 19:34:01.123 [node-a]: 127.0.0.1:54321 (curl:1234) -> 127.0.0.1:8080 http-request FORWARDED (HTTP/2 GET http://localhost:8080/hello?x=1)\n" +
		"Nov 25 19:34:01.135 [node-a]: 127.0.0.1:8080 -> 127.0.0.1:54321 (curl:1234) http-response FORWARDED (HTTP/2 200 12ms (GET http://localhost:8080/hello?x=1))\n" +
		"Nov 25 19:34:01.123 [node-a]: EVENTS LOST: HUBBLE_RING_BUFFER 7\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, Table)
	p.Location = time.UTC
	for _, e := range events(t) {
		if err := p.Print(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIMESTAMP") {
		t.Fatalf("table:\n%s", b.String())
	}
	// Columns line up: SOURCE starts at the same offset in every line.
	col := strings.Index(lines[0], "SOURCE")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "127.0.0.1:") {
			t.Fatalf("misaligned table:\n%s", b.String())
		}
	}
}

func TestJSONRoundTrips(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, JSON)
	in := events(t)
	for _, e := range in {
		if err := p.Print(e); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != len(in) {
		t.Fatalf("%d lines for %d events", len(lines), len(in))
	}
	for i, l := range lines {
		var got observerpb.GetFlowsResponse
		if err := protojson.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if !proto.Equal(&got, in[i]) {
			t.Fatalf("line %d differs after the round trip:\n%v\n%v", i, &got, in[i])
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"compact", "table", "json"} {
		if _, err := ParseFormat(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error("yaml accepted")
	}
}

// A policy verdict prints as Hubble's: the deciding endpoint by name and
// identity, the peer by identity, the verdict and its summary.
func TestCompactPolicyVerdict(t *testing.T) {
	f := &flow.Flow{Kind: flow.KindPolicyVerdict, Time: at, Node: "node-a", Destination: netip.MustParseAddrPort("192.0.2.1:53"),
		Process: flow.Process{PID: 77, Comm: "dig"},
		Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDenied, Direction: flow.Egress, Proto: 17, Count: 1,
			Source: flow.PolicyEndpoint{Identity: 256, ID: 1, Name: "web", Namespace: "shop"}, Destination: flow.PolicyEndpoint{Identity: 9}}}
	ev := hubble.Events(f)[0]
	p := New(nil, Compact)
	p.Location = time.UTC
	got := p.CompactLine(&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: ev}})
	want := "Nov 25 19:34:01.123 [node-a]: ? (dig:77) shop/web (ID:256) -> 192.0.2.1:53 (ID:9) policy-verdict DROPPED (UDP egress policy verdict DROPPED)"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
