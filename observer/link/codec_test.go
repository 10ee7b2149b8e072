package link

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
	"unsafe"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC)

func u32(v uint32) *uint32 { return &v }

// full sets every field of a flow, with values that need every varint
// width and a header block longer than 127 bytes (a widened length).
func full() *flow.Flow {
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'a' + byte(i%26)
	}
	return &flow.Flow{
		Time: t0, Latency: 3 * time.Millisecond, TTFB: time.Millisecond, Node: "node-1", Observer: flow.SideServer,
		Protocol: "HTTP/2", Method: "POST", Scheme: "https", Authority: "svc.example:8443", Path: "/pkg.Svc/Get?x=1",
		Status: 200, Route: "/pkg.Svc/Get",
		GRPC: &flow.GRPC{Service: "pkg.Svc", Method: "Get", Status: u32(0), StatusSource: "trailers", Message: "ok",
			RequestMessages: 1, ResponseMessages: 70000},
		RequestBytes: 1 << 40, ResponseBytes: 9,
		RequestHeaders:  []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "x-long", Value: string(long), Truncated: true}},
		ResponseHeaders: []flow.Header{{Name: "grpc-status", Value: "0"}},
		TraceParent:     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Source:          netip.MustParseAddrPort("10.0.0.1:40000"),
		Destination:     netip.MustParseAddrPort("[fe80::1%eth0]:8443"),
		Process:         flow.Process{PID: 4242, Comm: "svc", Exe: "/usr/bin/svc", CgroupID: 1 << 33, Cgroup: "/kubepods/pod1/abc", ContainerID: "abc123"},
		ConnID:          1<<64 - 1, StreamID: 1<<31 - 1, Outcome: flow.OutcomeReset, ResetCode: 8, ResetBy: flow.SideClient,
		Unknown: []string{"authority", "status"},
		Policy: &flow.Policy{
			Verdict: flow.VerdictAudit, DropReason: flow.PolicyDenied, MatchType: 2, Direction: flow.Ingress,
			Source:           flow.PolicyEndpoint{Identity: 1<<24 | 7, Labels: []string{"cidr:10.0.0.0/8", "reserved:world-ipv4"}},
			Destination:      flow.PolicyEndpoint{Identity: 256, ID: 3, Name: "svc", Namespace: "shop", Labels: []string{"k8s:app=svc"}},
			IngressAllowedBy: []flow.PolicyRef{{Kind: "CiliumNetworkPolicy", Name: "svc", Namespace: "shop", Labels: []string{"k8s:io.cilium.k8s.policy.name=svc"}, Revision: 1 << 40}},
			IngressDeniedBy:  []flow.PolicyRef{{Kind: "CiliumNetworkPolicy", Name: "svc-l7", Namespace: "shop", Revision: 9}, {Name: "second"}},
			EgressAllowedBy:  []flow.PolicyRef{{Kind: "CiliumClusterwideNetworkPolicy", Name: "all"}},
			EgressDeniedBy:   []flow.PolicyRef{{Name: "x"}},
			Proto:            6, Count: 1 << 20, Revision: 9, Hook: flow.HookL7Audit,
		},
	}
}

// verdictFlow is a policy verdict as the agent's verdict stage makes it.
func verdictFlow() *flow.Flow {
	return &flow.Flow{Kind: flow.KindPolicyVerdict, Time: t0, Node: "node-1",
		Source: netip.MustParseAddrPort("10.0.0.1:0"), Destination: netip.MustParseAddrPort("10.0.0.9:53"),
		Process: flow.Process{PID: 7, CgroupID: 99},
		Policy: &flow.Policy{Verdict: flow.VerdictDropped, DropReason: flow.PolicyDeny, Direction: flow.Egress, Proto: 17, Count: 5, Hook: "sendmsg",
			Source: flow.PolicyEndpoint{Identity: 256, ID: 1, Name: "web"}, Destination: flow.PolicyEndpoint{Identity: 2},
			EgressDeniedBy: []flow.PolicyRef{{Kind: "CiliumNetworkPolicy", Name: "no-dns", Namespace: "default"}}}}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry observer.Entry
	}{
		{"every field", observer.Entry{Flow: full(), ID: observer.FlowID{Boot: 0xdeadbeefcafe, Seq: 1 << 50}}},
		{"zero flow", observer.Entry{Flow: &flow.Flow{}}},
		{"policy verdict", observer.Entry{Flow: verdictFlow(), ID: observer.FlowID{Boot: 1, Seq: 3}}},
		{"zero policy", observer.Entry{Flow: &flow.Flow{Policy: &flow.Policy{}}}},
		{"request half", observer.Entry{Flow: &flow.Flow{Time: t0, Path: "/"}, ID: observer.FlowID{Boot: 1, Seq: 2}, Half: observer.RequestHalf}},
		{"response half", observer.Entry{Flow: &flow.Flow{Time: t0, Status: 204}, Half: observer.ResponseHalf}},
		{"gRPC without status", observer.Entry{Flow: &flow.Flow{GRPC: &flow.GRPC{Service: "s"}}}},
		{"lost, with CPU", observer.Entry{Lost: &observer.Lost{Time: t0, Node: "n", Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, Count: 7, CPU: 0}}},
		{"lost, CPU unknown", observer.Entry{Lost: &observer.Lost{Time: t0, Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, Count: 1 << 40, CPU: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var enc Encoder
			next := ring.Cursor{Instance: 99, Position: 1 << 40, Weight: 3}
			b := enc.Batch([]observer.Entry{tc.entry, tc.entry}, next)
			var dec Decoder
			got, cursor, err := dec.Batch(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cursor != next {
				t.Errorf("cursor %+v, want %+v", cursor, next)
			}
			if len(got) != 2 {
				t.Fatalf("%d entries, want 2", len(got))
			}
			for _, g := range got {
				if !reflect.DeepEqual(g, tc.entry) {
					t.Errorf("got  %+v %+v %+v\nwant %+v %+v %+v", g, g.Flow, g.Lost, tc.entry, tc.entry.Flow, tc.entry.Lost)
				}
			}
			// Strings that repeat from flow to flow are kept once.
			if f := got[0].Flow; f != nil && f.Node != "" && unsafe.StringData(f.Node) != unsafe.StringData(got[1].Flow.Node) {
				t.Errorf("node name allocated for each flow")
			}
		})
	}
}

func TestFollowRequestRoundTrip(t *testing.T) {
	for _, r := range []FollowRequest{
		{},
		{Since: t0},
		{Cursor: ring.Cursor{Instance: 5, Position: 1000, Weight: 1999}, Since: t0},
	} {
		got, err := DecodeFollowRequest(AppendFollowRequest(nil, r))
		if err != nil || got != r {
			t.Errorf("%+v: got %+v, %v", r, got, err)
		}
	}
}

// A newer peer may add fields: they are skipped.
func TestUnknownFieldsSkipped(t *testing.T) {
	b := AppendFlow(nil, &flow.Flow{Path: "/x", Status: 200})
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "from the future")
	b = protowire.AppendTag(b, 100, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 1)
	var d Decoder
	f, err := d.Flow(b)
	if err != nil || f.Path != "/x" || f.Status != 200 {
		t.Fatalf("%+v, %v", f, err)
	}
}

// Malformed input is an error (ErrMalformed), never a panic or a wrong
// flow.
func TestMalformedBatches(t *testing.T) {
	var enc Encoder
	good := append([]byte(nil), enc.Batch([]observer.Entry{{Flow: full()}}, ring.Cursor{Instance: 1})...)
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	entry := func(b []byte) []byte { // a batch of one entry b
		return protowire.AppendBytes(tag(1, protowire.BytesType), b)
	}
	flowField := func(b []byte) []byte { // an entry with flow b
		return entry(protowire.AppendBytes(tag(1, protowire.BytesType), b))
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(num, protowire.VarintType), v)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"truncated tag", []byte{0x80}},
		{"length past the end", append(tag(1, protowire.BytesType), 0x7f, 1, 2)},
		{"group wire type", tag(1, protowire.StartGroupType)},
		{"entry as a varint", varint(1, 3)},
		{"empty entry", entry(nil)},
		{"flow and lost in one entry", entry(append(protowire.AppendBytes(tag(1, protowire.BytesType), nil), protowire.AppendBytes(tag(5, protowire.BytesType), nil)...))},
		{"half out of range", entry(append(protowire.AppendBytes(tag(1, protowire.BytesType), nil), varint(4, 3)...))},
		{"outcome out of range", flowField(varint(24, 5))},
		{"observer side out of range", flowField(varint(5, 3))},
		{"reset side out of range", flowField(varint(26, 9))},
		{"status beyond 32 bits", flowField(varint(11, 1<<32))},
		{"path as a varint", flowField(varint(10, 1))},
		{"bad address", flowField(protowire.AppendBytes(tag(19, protowire.BytesType), []byte{1, 2, 3}))},
		{"header as a varint", flowField(varint(16, 1))},
		{"broken header", flowField(protowire.AppendBytes(tag(16, protowire.BytesType), []byte{0x0a, 0x05}))},
		{"kind out of range", flowField(varint(28, 2))},
		{"policy verdict without its policy", flowField(varint(28, 1))},
		{"policy as a varint", flowField(varint(29, 1))},
		{"verdict out of range", flowField(protowire.AppendBytes(tag(29, protowire.BytesType), varint(1, 3)))},
		{"direction out of range", flowField(protowire.AppendBytes(tag(29, protowire.BytesType), varint(4, 2)))},
		{"match type beyond 8 bits", flowField(protowire.AppendBytes(tag(29, protowire.BytesType), varint(3, 256)))},
		{"broken policy ref", flowField(protowire.AppendBytes(tag(29, protowire.BytesType), protowire.AppendBytes(tag(7, protowire.BytesType), []byte{0x0a, 0x05})))},
		{"cpu out of range", entry(protowire.AppendBytes(tag(5, protowire.BytesType), varint(5, 1<<40)))},
		{"cursor instance as a varint", varint(2, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			if _, _, err := d.Batch(tc.b, nil); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Batch(%x): %v, want ErrMalformed", tc.b, err)
			}
		})
	}
	if _, err := DecodeFollowRequest(varint(1, 5)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("follow request with a varint instance: %v", err)
	}
}

// FuzzBatch: whatever the bytes, decoding returns an error or entries that
// encode and decode again to the same entries; it never panics.
func FuzzBatch(f *testing.F) {
	var enc Encoder
	f.Add(append([]byte(nil), enc.Batch([]observer.Entry{{Flow: full(), ID: observer.FlowID{Boot: 1, Seq: 2}}}, ring.Cursor{Instance: 3, Position: 4})...))
	f.Add(append([]byte(nil), enc.Batch([]observer.Entry{{Lost: &observer.Lost{Time: t0, Count: 3, CPU: 1}}, {Flow: &flow.Flow{}, Half: observer.ResponseHalf}}, ring.Cursor{})...))
	f.Add(append([]byte(nil), enc.Batch([]observer.Entry{{Flow: verdictFlow()}, {Flow: &flow.Flow{Policy: &flow.Policy{}}}}, ring.Cursor{Instance: 5})...))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		entries, cursor, err := d.Batch(b, nil)
		if err != nil {
			return
		}
		var e2 Encoder
		again, cursor2, err := d.Batch(e2.Batch(entries, cursor), nil)
		if err != nil {
			t.Fatalf("re-encoded batch: %v", err)
		}
		if cursor2 != cursor && cursor.Instance != 0 {
			t.Fatalf("cursor %+v, then %+v", cursor, cursor2)
		}
		if len(again) != len(entries) {
			t.Fatalf("%d entries, then %d", len(entries), len(again))
		}
		for i := range entries {
			if !reflect.DeepEqual(normal(entries[i]), normal(again[i])) {
				t.Fatalf("entry %d: %+v, then %+v", i, entries[i].Flow, again[i].Flow)
			}
		}
	})
}

// normal drops what an encoding does not tell apart: an empty list from
// none, a zero time's location.
func normal(e observer.Entry) observer.Entry {
	if f := e.Flow; f != nil {
		c := *f
		if len(c.RequestHeaders) == 0 {
			c.RequestHeaders = nil
		}
		if len(c.ResponseHeaders) == 0 {
			c.ResponseHeaders = nil
		}
		if len(c.Unknown) == 0 {
			c.Unknown = nil
		}
		if c.Policy != nil {
			p := *c.Policy
			for _, refs := range []*[]flow.PolicyRef{&p.IngressAllowedBy, &p.IngressDeniedBy, &p.EgressAllowedBy, &p.EgressDeniedBy} {
				if len(*refs) == 0 {
					*refs = nil
				}
				for i := range *refs {
					if len((*refs)[i].Labels) == 0 {
						(*refs)[i].Labels = nil
					}
				}
			}
			for _, e := range []*flow.PolicyEndpoint{&p.Source, &p.Destination} {
				if len(e.Labels) == 0 {
					e.Labels = nil
				}
			}
			c.Policy = &p
		}
		e.Flow = &c
	}
	return e
}
