package filters

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Pod and workload filters keep Hubble's semantics against the Endpoint's
// namespace, pod_name and workloads. sextant observes processes, not pods,
// and leaves those fields empty rather than guessing them, so today these
// filters match no event (use source_label/destination_label with the
// sextant.io/* labels to select processes and containers). They are
// accepted rather than rejected so that they start to work unchanged once
// an enricher fills in Kubernetes metadata.
var podKind = kind{
	fields: []protoreflect.Name{"source_pod", "destination_pod"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		if v := ff.GetSourcePod(); v != nil {
			f, err := podFilter(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetSource() })
			if err != nil {
				return nil, fmt.Errorf("source_pod: %w", err)
			}
			fs = append(fs, f)
		}
		if v := ff.GetDestinationPod(); v != nil {
			f, err := podFilter(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetDestination() })
			if err != nil {
				return nil, fmt.Errorf("destination_pod: %w", err)
			}
			fs = append(fs, f)
		}
		return fs, nil
	},
}

// podFilter matches "namespace/pod-prefix", "namespace/" (any pod in the
// namespace) or "pod-prefix" (namespace "default"), as Hubble does.
func podFilter(specs []string, get func(*flowpb.Flow) *flowpb.Endpoint) (FilterFunc, error) {
	type spec struct{ ns, prefix string }
	ss := make([]spec, 0, len(specs))
	for _, s := range specs {
		if s == "" {
			return nil, errors.New("pod name must not be empty")
		}
		ns, pod, ok := strings.Cut(s, "/")
		if !ok {
			ns, pod = "default", s
		}
		ss = append(ss, spec{ns, pod})
	}
	return func(f *flowpb.Flow) bool {
		ep := get(f)
		ns, pod := ep.GetNamespace(), ep.GetPodName()
		if ns == "" && pod == "" {
			return false
		}
		return slices.ContainsFunc(ss, func(s spec) bool {
			return (s.prefix == "" || strings.HasPrefix(pod, s.prefix)) && (s.ns == "" || s.ns == ns)
		})
	}, nil
}

var workloadKind = kind{
	fields: []protoreflect.Name{"source_workload", "destination_workload"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		if v := ff.GetSourceWorkload(); len(v) > 0 {
			fs = append(fs, workloadFilter(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetSource() }))
		}
		if v := ff.GetDestinationWorkload(); len(v) > 0 {
			fs = append(fs, workloadFilter(v, func(f *flowpb.Flow) *flowpb.Endpoint { return f.GetDestination() }))
		}
		return fs, nil
	},
}

// workloadFilter matches a workload by name and/or kind (empty = any).
func workloadFilter(want []*flowpb.Workload, get func(*flowpb.Flow) *flowpb.Endpoint) FilterFunc {
	return func(f *flowpb.Flow) bool {
		for _, w := range get(f).GetWorkloads() {
			if slices.ContainsFunc(want, func(x *flowpb.Workload) bool {
				return (x.GetName() == "" || x.GetName() == w.GetName()) && (x.GetKind() == "" || x.GetKind() == w.GetKind())
			}) {
				return true
			}
		}
		return false
	}
}
