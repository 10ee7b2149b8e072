package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var verdictKind = kind{
	fields: []protoreflect.Name{"verdict"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetVerdict()
		if len(v) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetVerdict()) }}, nil
	},
}

// dropReasonKind matches drop_reason_desc; as in Hubble, only dropped
// events have one (an audited deny was not dropped).
var dropReasonKind = kind{
	fields: []protoreflect.Name{"drop_reason_desc"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		reasons := ff.GetDropReasonDesc()
		if len(reasons) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool {
			return f.GetVerdict() == flowpb.Verdict_DROPPED && slices.Contains(reasons, f.GetDropReasonDesc())
		}}, nil
	},
}

// identityKind matches the security identity of the source or the
// destination endpoint (`--from-identity`, `--to-identity`; `--identity`
// is the two in separate filters). An event without that endpoint
// matches nothing.
var identityKind = kind{
	fields: []protoreflect.Name{"source_identity", "destination_identity"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		if ids := ff.GetSourceIdentity(); len(ids) > 0 {
			fs = append(fs, func(f *flowpb.Flow) bool {
				return f.GetSource() != nil && slices.Contains(ids, f.GetSource().GetIdentity())
			})
		}
		if ids := ff.GetDestinationIdentity(); len(ids) > 0 {
			fs = append(fs, func(f *flowpb.Flow) bool {
				return f.GetDestination() != nil && slices.Contains(ids, f.GetDestination().GetIdentity())
			})
		}
		return fs, nil
	},
}
