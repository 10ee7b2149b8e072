package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var trafficDirectionKind = kind{
	fields: []protoreflect.Name{"traffic_direction"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetTrafficDirection()
		if len(v) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTrafficDirection()) }}, nil
	},
}

// replyKind filters on is_reply. As in Hubble, an event whose is_reply is
// unknown matches neither true nor false, except dropped events, which count
// as non-replies (older clients filter on the deprecated reply field).
var replyKind = kind{
	fields: []protoreflect.Name{"reply"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetReply()
		if len(v) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool {
			if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
				return false
			}
			return slices.Contains(v, f.GetIsReply().GetValue())
		}}, nil
	},
}
