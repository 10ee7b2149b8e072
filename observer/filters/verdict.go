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
