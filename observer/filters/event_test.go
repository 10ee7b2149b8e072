package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
)

func TestEventType(t *testing.T) {
	req, _ := exchange(t, "GET", "/", 200, flow.SideServer) // type 129
	tests := []struct {
		types []*flowpb.EventTypeFilter
		want  bool
	}{
		{[]*flowpb.EventTypeFilter{{Type: 129}}, true},
		{[]*flowpb.EventTypeFilter{{Type: 4}}, false}, // trace
		{[]*flowpb.EventTypeFilter{{Type: 4}, {Type: 129}}, true},
		{[]*flowpb.EventTypeFilter{{Type: 129, MatchSubType: true, SubType: 0}}, true},
		{[]*flowpb.EventTypeFilter{{Type: 129, MatchSubType: true, SubType: 3}}, false},
		{[]*flowpb.EventTypeFilter{{Type: 0}}, true}, // any type
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{EventType: tt.types}, req); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.types, got, tt.want)
		}
	}
	if match(t, &flowpb.FlowFilter{EventType: []*flowpb.EventTypeFilter{{}}}, &flowpb.Flow{}) {
		t.Error("event without type matched")
	}
}

func TestUUID(t *testing.T) {
	req, resp := exchange(t, "GET", "/", 200, flow.SideServer)
	ff := &flowpb.FlowFilter{Uuid: []string{resp.Uuid}}
	if match(t, ff, req) || !match(t, ff, resp) {
		t.Error("uuid must select exactly its event")
	}
}

func TestTraceID(t *testing.T) {
	ev := &flowpb.Flow{TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}}}
	if !match(t, &flowpb.FlowFilter{TraceId: []string{"x", "4bf92f3577b34da6a3ce929d0e0e4736"}}, ev) {
		t.Error("trace id did not match")
	}
	if match(t, &flowpb.FlowFilter{TraceId: []string{"4bf92f3577b34da6a3ce929d0e0e4737"}}, ev) {
		t.Error("other trace id matched")
	}
	if match(t, &flowpb.FlowFilter{TraceId: []string{"4bf92f3577b34da6a3ce929d0e0e4736"}}, &flowpb.Flow{}) {
		t.Error("event without trace context matched")
	}
}
