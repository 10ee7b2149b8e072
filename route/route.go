// Package route is the agent's enrichment stage that names each flow's
// route: the http.route template ("/api/users/{id}") that Prometheus
// labels, OTLP span names and the ClickHouse route column all use. It runs
// once per flow on the agent; the route travels with the flow to the relay,
// so every consumer sees the same string.
package route

import (
	"fmt"
	"strings"

	"github.com/sextant/sextant/flow"
)

// Placeholders that replace high-cardinality path segments when no
// configured pattern matches.
const (
	placeholderID    = "{id}"    // decimal numbers
	placeholderUUID  = "{uuid}"  // 8-4-4-4-12 hex UUIDs
	placeholderHash  = "{hash}"  // hex strings of 16 or more digits
	placeholderToken = "{token}" // long base64-ish strings with letters and digits
)

// minTokenLen is the shortest segment taken for an opaque token: long enough
// that words and slugs of everyday APIs ("preferences", "v2") stay.
const minTokenLen = 20

// Router turns request paths into http.route templates: the first
// configured pattern that matches wins; otherwise the path is kept with its
// high-cardinality segments collapsed. Query strings and fragments are
// never part of a route.
//
// Route is not safe for concurrent use (it reuses a buffer and interns the
// templates it builds); the exporter calls it from its one worker.
type Router struct {
	patterns []routePattern
	buf      []byte
	intern   map[string]string
	// maxIntern bounds intern: past it templates are built afresh (an
	// allocation) instead of remembered, so hostile paths cannot grow it.
	maxIntern int
}

// routePattern is one configured template, e.g. /api/users/{id}/orders.
type routePattern struct {
	template string
	segs     []string // literal segments; "" where the pattern has a {variable}
	vars     []bool
	rest     bool // the last segment is {name...}: it matches one or more segments
}

// DefaultMaxTemplates bounds the collapsed templates a Router remembers.
const DefaultMaxTemplates = 8000

// New compiles patterns. A pattern is an absolute path whose segments
// are literals or {name} (exactly one non-empty segment); the last segment
// may be {name...} (one or more segments). The pattern itself is the route.
func New(patterns []string, maxIntern int) (*Router, error) {
	if maxIntern <= 0 {
		maxIntern = DefaultMaxTemplates
	}
	r := &Router{intern: make(map[string]string), maxIntern: maxIntern}
	for _, p := range patterns {
		rp, err := compilePattern(p)
		if err != nil {
			return nil, err
		}
		r.patterns = append(r.patterns, rp)
	}
	return r, nil
}

func compilePattern(p string) (routePattern, error) {
	if !strings.HasPrefix(p, "/") {
		return routePattern{}, fmt.Errorf("route pattern %q: must start with /", p)
	}
	if strings.ContainsAny(p, "?#") {
		return routePattern{}, fmt.Errorf("route pattern %q: query and fragment are never part of a route", p)
	}
	rp := routePattern{template: p}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		isVar := strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && len(s) > 2
		if isVar && strings.HasSuffix(s, "...}") {
			if i != len(parts)-1 {
				return routePattern{}, fmt.Errorf("route pattern %q: %s must be the last segment", p, s)
			}
			rp.rest = true
		} else if strings.ContainsAny(s, "{}") && !isVar {
			return routePattern{}, fmt.Errorf("route pattern %q: segment %q: a variable takes a whole segment, as {name}", p, s)
		}
		if isVar {
			s = ""
		}
		rp.segs = append(rp.segs, s)
		rp.vars = append(rp.vars, isVar)
	}
	return rp, nil
}

// StripQuery cuts the query string and fragment off a path.
func StripQuery(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		return path[:i]
	}
	return path
}

// Enrich sets f.Route: a gRPC method's path is its own template
// (/package.Service/Method); an HTTP path is templated.
func (r *Router) Enrich(f *flow.Flow) {
	if f.GRPC != nil {
		f.Route = StripQuery(f.Path)
		return
	}
	f.Route = r.Route(f.Path)
}

// Route returns the route of a request path ("" for an empty path). It
// allocates only the first time it builds a given collapsed template.
func (r *Router) Route(path string) string {
	path = StripQuery(path)
	if path == "" {
		return ""
	}
	for i := range r.patterns {
		if r.patterns[i].match(path) {
			return r.patterns[i].template
		}
	}
	return r.collapse(path)
}

// match reports whether path has the pattern's shape, walking the segments
// in place.
func (rp *routePattern) match(path string) bool {
	if path[0] != '/' {
		return false
	}
	rest := path[1:]
	for i, lit := range rp.segs {
		last := i == len(rp.segs)-1
		if last && rp.rest {
			return rest != ""
		}
		seg := rest
		j := strings.IndexByte(rest, '/')
		if j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		if rp.vars[i] {
			if seg == "" {
				return false
			}
		} else if seg != lit {
			return false
		}
		if last {
			return j < 0 // no further segments
		}
		if j < 0 {
			return false // the path ended before the pattern
		}
	}
	return false
}

// collapse replaces ids, uuids, hashes and tokens. A path without any keeps
// its own string, and a template built before is returned interned: no
// allocation either way.
func (r *Router) collapse(path string) string {
	b := r.buf[:0]
	found := false
	start := 0
	for i := 0; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		seg := path[start:i]
		if p := classify(seg); p != "" {
			b = append(b, p...)
			found = true
		} else {
			b = append(b, seg...)
		}
		if i < len(path) {
			b = append(b, '/')
		}
		start = i + 1
	}
	r.buf = b
	if !found {
		return path
	}
	if s, ok := r.intern[string(b)]; ok { // the compiler reads b in place
		return s
	}
	s := string(b)
	if len(r.intern) < r.maxIntern {
		r.intern[s] = s
	}
	return s
}

// classify names the placeholder for a high-cardinality segment, or "".
func classify(seg string) string {
	if seg == "" {
		return ""
	}
	digits, hex, b64, upper, lower := 0, 0, 0, 0, 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
			b64++
		case c >= 'a' && c <= 'f':
			hex++
			b64++
			lower++
		case c >= 'A' && c <= 'F':
			hex++
			b64++
			upper++
		case c >= 'g' && c <= 'z':
			b64++
			lower++
		case c >= 'G' && c <= 'Z':
			b64++
			upper++
		case c == '-' || c == '_' || c == '=' || c == '+' || c == '.' || c == '~':
			b64++
		}
	}
	n := len(seg)
	switch {
	case digits == n:
		return placeholderID
	case isUUID(seg):
		return placeholderUUID
	case hex == n && n >= 16:
		return placeholderHash
	case b64 == n && n >= minTokenLen && digits > 0 && upper+lower > 0:
		return placeholderToken
	case b64 == n && n >= minTokenLen && strings.HasSuffix(seg, "=") && upper > 0 && lower > 0:
		return placeholderToken // padded base64 without digits
	}
	return ""
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
