package filters

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var nodeNameKind = kind{
	fields: []protoreflect.Name{"node_name"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetNodeName()
		if v == nil {
			return nil, nil
		}
		re, err := compileNodeNamePatterns(v)
		if err != nil {
			return nil, fmt.Errorf("node_name: %w", err)
		}
		return []FilterFunc{func(f *flowpb.Flow) bool {
			name := f.GetNodeName()
			if name == "" {
				return false
			}
			// Hubble node names may be "cluster/node"; bare names belong to
			// Cilium's default cluster.
			if !strings.Contains(name, "/") {
				name = defaultClusterName + "/" + name
			}
			return re.MatchString(name)
		}}, nil
	},
}

// defaultClusterName is Cilium's default cluster name (pkg/defaults.ClusterName).
const defaultClusterName = "default"

// Node name patterns are Hubble's: "[cluster/]node", each part a lower-case
// DNS-like name in which "*" matches any run of [-.0-9a-z]; an empty part
// matches any name. Ported from cilium pkg/hubble/filters/patterns.go
// (Apache-2.0, Copyright Authors of Hubble).
const namePartRegexp = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

func compileNodeNamePatterns(patterns []string) (*regexp.Regexp, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range patterns {
		if i > 0 {
			sb.WriteByte('|')
		}
		if err := appendNodeNamePattern(&sb, p); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	sb.WriteString(`)\z`)
	return regexp.Compile(sb.String())
}

func appendNodeNamePattern(sb *strings.Builder, pattern string) error {
	if pattern == "" {
		return errors.New("empty pattern")
	}
	cluster, node, ok := strings.Cut(pattern, "/")
	if !ok {
		cluster, node = "", pattern
	} else if strings.Contains(node, "/") {
		return errors.New("too many slashes")
	}
	if err := appendNamePart(sb, cluster); err != nil {
		return err
	}
	sb.WriteByte('/')
	return appendNamePart(sb, node)
}

func appendNamePart(sb *strings.Builder, part string) error {
	if part == "" {
		sb.WriteString(namePartRegexp)
		return nil
	}
	part = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(part), "."))
	if part == "" || strings.HasSuffix(part, ".") {
		return errors.New("invalid trailing dots")
	}
	for _, r := range part {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-', r == '_', '0' <= r && r <= '9', 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("invalid character %q", r)
		}
	}
	return nil
}
