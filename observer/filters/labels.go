package filters

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var labelsKind = kind{
	fields: []protoreflect.Name{"source_label", "destination_label", "node_labels"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		var fs []FilterFunc
		for _, l := range []struct {
			field     string
			selectors []string
			get       func(*flowpb.Flow) []string
		}{
			{"source_label", ff.GetSourceLabel(), func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() }},
			{"destination_label", ff.GetDestinationLabel(), func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() }},
			{"node_labels", ff.GetNodeLabels(), func(f *flowpb.Flow) []string { return f.GetNodeLabels() }},
		} {
			if l.selectors == nil {
				continue
			}
			f, err := labelFilter(l.selectors, l.get)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", l.field, err)
			}
			fs = append(fs, f)
		}
		return fs, nil
	},
}

// label is one Cilium label "source:key=value"; sextant's own labels
// ("sextant.io/comm=curl") carry no source.
type label struct{ source, key, value string }

// anySource in a selector matches labels of every source, as does a
// selector key without a source.
const anySource = "any"

func parseLabel(s string) label {
	var l label
	key := s
	if i := strings.IndexByte(s, '='); i >= 0 {
		key, l.value = s[:i], s[i+1:]
	}
	if i := strings.IndexByte(key, ':'); i >= 0 {
		l.source, key = key[:i], key[i+1:]
	}
	l.key = key
	return l
}

// requirement is one term of a label selector.
type requirement struct {
	source, key string
	op          string   // "exists", "!", "=", "!=", "in", "notin"
	values      []string // for =, !=, in, notin
}

func (r requirement) matches(labels []string) bool {
	var found []string // values of labels with that key
	for _, s := range labels {
		l := parseLabel(s)
		if l.key == r.key && (r.source == anySource || r.source == l.source) {
			found = append(found, l.value)
		}
	}
	hasValue := func() bool {
		return slices.ContainsFunc(found, func(v string) bool { return slices.Contains(r.values, v) })
	}
	switch r.op {
	case "exists":
		return len(found) > 0
	case "!":
		return len(found) == 0
	case "=", "in":
		return hasValue()
	default: // "!=", "notin": absent keys match, as in Kubernetes
		return !hasValue()
	}
}

// selector is an AND of requirements.
type selector []requirement

func (s selector) matches(labels []string) bool {
	for _, r := range s {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

// parseSelector parses the Kubernetes label selector syntax that Hubble
// accepts, with Cilium source prefixes: "k=v", "k==v", "k!=v", "k", "!k",
// "k in (a,b)", "k notin (a,b)", joined by "," (AND). A key without a
// source prefix, or with "any:", matches labels of every source.
func parseSelector(s string) (selector, error) {
	terms, err := splitTerms(s)
	if err != nil {
		return nil, err
	}
	sel := make(selector, 0, len(terms))
	for _, t := range terms {
		r, err := parseRequirement(t)
		if err != nil {
			return nil, err
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// splitTerms splits at commas outside parentheses.
func splitTerms(s string) ([]string, error) {
	var terms []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("selector %q: unbalanced ')'", s)
			}
		case ',':
			if depth == 0 {
				terms = append(terms, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("selector %q: unbalanced '('", s)
	}
	terms = append(terms, s[start:])
	for i, t := range terms {
		terms[i] = strings.TrimSpace(t)
		if terms[i] == "" {
			return nil, fmt.Errorf("selector %q: empty requirement", s)
		}
	}
	return terms, nil
}

func parseRequirement(t string) (requirement, error) {
	var r requirement
	var key string
	switch {
	case strings.HasPrefix(t, "!"):
		r.op, key = "!", strings.TrimSpace(t[1:])
	case strings.Contains(t, "!="):
		i := strings.Index(t, "!=")
		r.op, key, r.values = "!=", t[:i], []string{strings.TrimSpace(t[i+2:])}
	case strings.Contains(t, "=="):
		i := strings.Index(t, "==")
		r.op, key, r.values = "=", t[:i], []string{strings.TrimSpace(t[i+2:])}
	case strings.Contains(t, "="):
		i := strings.Index(t, "=")
		r.op, key, r.values = "=", t[:i], []string{strings.TrimSpace(t[i+1:])}
	case strings.HasSuffix(t, ")"):
		open := strings.IndexByte(t, '(')
		fields := strings.Fields(t[:open])
		if open < 0 || len(fields) != 2 || (fields[1] != "in" && fields[1] != "notin") {
			return r, fmt.Errorf("requirement %q: want \"key in (a,b)\" or \"key notin (a,b)\"", t)
		}
		key, r.op = fields[0], fields[1]
		for _, v := range strings.Split(t[open+1:len(t)-1], ",") {
			r.values = append(r.values, strings.TrimSpace(v))
		}
	default:
		r.op, key = "exists", t
	}
	key = strings.TrimSpace(key)
	if key == "" || strings.ContainsAny(key, " \t()!=") {
		return r, fmt.Errorf("requirement %q: invalid key %q", t, key)
	}
	for _, v := range r.values {
		if strings.ContainsAny(v, " \t()!=,") {
			return r, fmt.Errorf("requirement %q: invalid value %q", t, v)
		}
	}
	r.source = anySource
	if i := strings.IndexByte(key, ':'); i >= 0 {
		r.source, key = key[:i], key[i+1:]
		if r.source == "" || key == "" {
			return r, fmt.Errorf("requirement %q: invalid key", t)
		}
	}
	r.key = key
	return r, nil
}

var errNoSelector = errors.New("empty selector")

// labelFilter matches when any selector matches the labels.
func labelFilter(selectors []string, get func(*flowpb.Flow) []string) (FilterFunc, error) {
	sels := make([]selector, 0, len(selectors))
	for _, s := range selectors {
		if strings.TrimSpace(s) == "" {
			return nil, errNoSelector
		}
		sel, err := parseSelector(s)
		if err != nil {
			return nil, err
		}
		sels = append(sels, sel)
	}
	return func(f *flowpb.Flow) bool {
		labels := get(f)
		return slices.ContainsFunc(sels, func(s selector) bool { return s.matches(labels) })
	}, nil
}
