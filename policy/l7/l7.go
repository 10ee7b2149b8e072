// Package l7 evaluates CiliumNetworkPolicy HTTP rules on observed
// requests: which requests the node proxy would refuse. Where no proxy is
// in the path, sextant reports them as AUDIT verdicts.
//
// Matching follows Cilium's translation to Envoy: method, path and host
// are RE2 regular expressions matched against the whole :method, :path
// (query included) and :authority; `headers` entries are "Name" (present)
// or "Name value" (exact); headerMatches name+value are exact. gRPC is
// written as method POST and path /package.Service/Method.
package l7

import (
	"regexp"
	"strings"
	"sync"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/resolve"
)

// Outcome of an evaluation.
type Outcome uint8

const (
	// Allowed: a rule without L7 conditions covers the port, or an HTTP rule matches.
	Allowed Outcome = iota
	// Denied: the port has HTTP rules and none matches.
	Denied
	// Unknown: the request lacks what a rule needs (a header that
	// sextant never exports, such as Authorization, or a path it could
	// not decode) and no other rule matched: not guessed.
	Unknown
)

func (o Outcome) String() string { return [...]string{"allowed", "denied", "unknown"}[o] }

// Result of Evaluate.
type Result struct {
	Outcome   Outcome
	AllowedBy []resolve.Ref
	DeniedBy  []resolve.Ref // the rules whose HTTP conditions did not match
}

var cache sync.Map // regexp source → *regexp.Regexp (anchored)

func fullMatch(re, s string) bool {
	v, ok := cache.Load(re)
	if !ok {
		c, err := regexp.Compile(`^(?:` + re + `)$`)
		if err != nil {
			return false // validated at decoding: unreachable
		}
		v, _ = cache.LoadOrStore(re, c)
	}
	return v.(*regexp.Regexp).MatchString(s)
}

// Applies says whether an L7 rule covers a request from remote to port (TCP).
func Applies(r resolve.L7Rule, remote uint32, port uint16) bool {
	return (r.Remote == 0 || uint32(r.Remote) == remote) &&
		(r.Proto == resolve.ProtoAny || r.Proto == resolve.ProtoTCP) &&
		(r.Lo == 0 || (port >= r.Lo && port <= r.Hi))
}

// Evaluate decides a request against the L7 rules that cover it (see Applies).
func Evaluate(f *flow.Flow, rules []resolve.L7Rule) Result {
	var res Result
	unknown := false
	var restricted []resolve.Ref
	for _, r := range rules {
		if r.HTTP == nil {
			res.AllowedBy = append(res.AllowedBy, r.Ref)
			continue
		}
		restricted = append(restricted, r.Ref)
		for i := range r.HTTP {
			switch match(f, &r.HTTP[i]) {
			case Allowed:
				res.AllowedBy = append(res.AllowedBy, r.Ref)
			case Unknown:
				unknown = true
			}
		}
	}
	switch {
	case len(res.AllowedBy) > 0 || len(restricted) == 0:
		res.Outcome = Allowed
	case unknown:
		res.Outcome = Unknown
	default:
		res.Outcome = Denied
		res.DeniedBy = restricted
	}
	return res
}

func has(f *flow.Flow, field string) bool {
	for _, u := range f.Unknown {
		if u == field {
			return false
		}
	}
	return true
}

// match: Allowed (matches), Denied (does not), Unknown (cannot tell).
func match(f *flow.Flow, h *api.PortRuleHTTP) Outcome {
	unknown := false
	check := func(re, value, field string) bool {
		if re == "" {
			return true
		}
		if value == "" && !has(f, field) {
			unknown = true
			return true
		}
		return fullMatch(re, value)
	}
	if !check(h.Method, f.Method, "method") || !check(h.Path, f.Path, "path") || !check(h.Host, f.Authority, "authority") {
		return Denied
	}
	for _, hdr := range h.Headers {
		name, value, exact := strings.Cut(hdr, " ")
		name = strings.TrimRight(name, ":")
		switch ok, known := header(f, name, value, exact); {
		case !known:
			unknown = true
		case !ok:
			return Denied
		}
	}
	for _, hm := range h.HeaderMatches {
		switch ok, known := header(f, hm.Name, hm.Value, hm.Value != ""); {
		case !known:
			unknown = true
		case !ok:
			return Denied
		}
	}
	if unknown {
		return Unknown
	}
	return Allowed
}

// header checks a request header; known is false for the headers sextant
// never exports (their presence and value are not in the flow).
func header(f *flow.Flow, name, value string, exact bool) (ok, known bool) {
	if flow.IsSecret(name) {
		return false, false
	}
	for _, h := range f.RequestHeaders {
		if strings.EqualFold(h.Name, name) {
			if !exact {
				return true, true
			}
			if h.Truncated {
				return false, false
			}
			if h.Value == value {
				return true, true
			}
		}
	}
	if !has(f, "request_headers") {
		return false, false
	}
	return false, true
}
