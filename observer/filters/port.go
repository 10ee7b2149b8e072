package filters

import (
	"fmt"
	"slices"
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var portKind = kind{
	fields: []protoreflect.Name{"source_port", "destination_port"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		if v := ff.GetSourcePort(); v != nil {
			f, err := portFilter(v, sourcePort)
			if err != nil {
				return nil, fmt.Errorf("source_port: %w", err)
			}
			fs = append(fs, f)
		}
		if v := ff.GetDestinationPort(); v != nil {
			f, err := portFilter(v, destinationPort)
			if err != nil {
				return nil, fmt.Errorf("destination_port: %w", err)
			}
			fs = append(fs, f)
		}
		return fs, nil
	},
}

func sourcePort(f *flowpb.Flow) (uint32, bool) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return l4.GetTCP().GetSourcePort(), true
	case l4.GetUDP() != nil:
		return l4.GetUDP().GetSourcePort(), true
	case l4.GetSCTP() != nil:
		return l4.GetSCTP().GetSourcePort(), true
	}
	return 0, false
}

func destinationPort(f *flowpb.Flow) (uint32, bool) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return l4.GetTCP().GetDestinationPort(), true
	case l4.GetUDP() != nil:
		return l4.GetUDP().GetDestinationPort(), true
	case l4.GetSCTP() != nil:
		return l4.GetSCTP().GetDestinationPort(), true
	}
	return 0, false
}

func portFilter(specs []string, get func(*flowpb.Flow) (uint32, bool)) (FilterFunc, error) {
	ports := make([]uint32, 0, len(specs))
	for _, s := range specs {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q: %w", s, err)
		}
		ports = append(ports, uint32(p))
	}
	return func(f *flowpb.Flow) bool {
		p, ok := get(f)
		return ok && slices.Contains(ports, p)
	}, nil
}
