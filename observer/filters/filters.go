// Package filters applies Hubble FlowFilters (the whitelist and blacklist of
// a GetFlows request) to Hubble flow events, with Cilium's semantics for
// every field it supports. A filter that sets a field this package does not
// support is rejected with codes.InvalidArgument, never silently ignored:
// the field check walks the message via protoreflect, so fields added to
// FlowFilter by a newer Cilium are rejected too.
//
// Semantics follow cilium pkg/hubble/filters (Apache-2.0, Copyright Authors
// of Hubble); that package is not imported because it pulls in Kubernetes.
package filters

import (
	"fmt"
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FilterFunc reports whether an event matches.
type FilterFunc func(*flowpb.Flow) bool

// kind builds the filters of one group of FlowFilter fields.
type kind struct {
	fields []protoreflect.Name // FlowFilter fields this kind implements
	build  func(*flowpb.FlowFilter) ([]FilterFunc, error)
}

// kinds lists every supported filter kind; each lives in its own file.
var kinds = []kind{
	httpKind,
	ipKind,
	ipVersionKind,
	portKind,
	protocolKind,
	labelsKind,
	podKind,
	workloadKind,
	verdictKind,
	dropReasonKind,
	identityKind,
	trafficDirectionKind,
	replyKind,
	nodeNameKind,
	eventTypeKind,
	uuidKind,
	traceIDKind,
}

// supported is the set of FlowFilter field names that some kind implements.
var supported = func() map[protoreflect.Name]bool {
	m := map[protoreflect.Name]bool{}
	for _, k := range kinds {
		for _, name := range k.fields {
			m[name] = true
		}
	}
	return m
}()

// Build compiles a GetFlows whitelist and blacklist into one FilterFunc:
// an event passes when it matches at least one whitelist filter (or the
// whitelist is empty) and no blacklist filter. Within one FlowFilter all
// set fields must match (AND); within one field any value may match (OR).
// Errors carry codes.InvalidArgument and name the offending filter and field.
func Build(whitelist, blacklist []*flowpb.FlowFilter) (FilterFunc, error) {
	allow, err := buildList("whitelist", whitelist)
	if err != nil {
		return nil, err
	}
	deny, err := buildList("blacklist", blacklist)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		if len(allow) > 0 && !slices.ContainsFunc(allow, func(m FilterFunc) bool { return m(f) }) {
			return false
		}
		return !slices.ContainsFunc(deny, func(m FilterFunc) bool { return m(f) })
	}, nil
}

func buildList(list string, ffs []*flowpb.FlowFilter) ([]FilterFunc, error) {
	out := make([]FilterFunc, 0, len(ffs))
	for i, ff := range ffs {
		m, err := buildFilter(ff)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s[%d]: %v", list, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// buildFilter ANDs the filters of every set field of ff.
func buildFilter(ff *flowpb.FlowFilter) (FilterFunc, error) {
	if err := checkSupported(ff); err != nil {
		return nil, err
	}
	var all []FilterFunc
	for _, k := range kinds {
		fs, err := k.build(ff)
		if err != nil {
			return nil, err
		}
		all = append(all, fs...)
	}
	return func(f *flowpb.Flow) bool {
		for _, m := range all {
			if !m(f) {
				return false
			}
		}
		return true
	}, nil
}

func checkSupported(ff *flowpb.FlowFilter) error {
	var err error
	ff.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := fd.Name()
		if supported[name] {
			return true
		}
		// An empty experimental message selects nothing.
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			v.Message().Range(func(sub protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
				err = fmt.Errorf("filter field %s.%s is not supported by sextant", name, sub.Name())
				return false
			})
			return err == nil
		}
		err = fmt.Errorf("filter field %s is not supported by sextant", name)
		return false
	})
	return err
}
