package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// eventTypeKind matches Cilium monitor event types (129 = L7 access log,
// which every sextant flow event is), optionally with a sub type.
var eventTypeKind = kind{
	fields: []protoreflect.Name{"event_type"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		types := ff.GetEventType()
		if len(types) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool {
			ev := f.GetEventType()
			if ev == nil {
				return false
			}
			return slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
				if t.GetType() != 0 && t.GetType() != ev.GetType() {
					return false
				}
				return !t.GetMatchSubType() || t.GetSubType() == ev.GetSubType()
			})
		}}, nil
	},
}

var uuidKind = kind{
	fields: []protoreflect.Name{"uuid"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		ids := ff.GetUuid()
		if len(ids) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(ids, f.GetUuid()) }}, nil
	},
}

// traceIDKind matches the W3C trace id taken from the traceparent header.
var traceIDKind = kind{
	fields: []protoreflect.Name{"trace_id"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		ids := ff.GetTraceId()
		if ids == nil {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool {
			return slices.Contains(ids, f.GetTraceContext().GetParent().GetTraceId())
		}}, nil
	},
}
