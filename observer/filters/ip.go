package filters

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var ipKind = kind{
	fields: []protoreflect.Name{"source_ip", "destination_ip"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		if v := ff.GetSourceIp(); v != nil {
			f, err := ipFilter(v, func(f *flowpb.Flow) string { return f.GetIP().GetSource() })
			if err != nil {
				return nil, fmt.Errorf("source_ip: %w", err)
			}
			fs = append(fs, f)
		}
		if v := ff.GetDestinationIp(); v != nil {
			f, err := ipFilter(v, func(f *flowpb.Flow) string { return f.GetIP().GetDestination() })
			if err != nil {
				return nil, fmt.Errorf("destination_ip: %w", err)
			}
			fs = append(fs, f)
		}
		return fs, nil
	},
}

// ipFilter matches an exact address ("10.0.0.1") or a CIDR ("10.0.0.0/8").
func ipFilter(specs []string, get func(*flowpb.Flow) string) (FilterFunc, error) {
	var addrs []netip.Addr
	var prefixes []netip.Prefix
	for _, s := range specs {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("invalid CIDR %q: %w", s, err)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("invalid IP address %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	return func(f *flowpb.Flow) bool {
		a, err := netip.ParseAddr(get(f))
		if err != nil {
			return false
		}
		return slices.Contains(addrs, a) || slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	}, nil
}

var ipVersionKind = kind{
	fields: []protoreflect.Name{"ip_version"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetIpVersion()
		if len(v) == 0 {
			return nil, nil
		}
		return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetIpVersion()) }}, nil
	},
}
