package xds

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sextant/sextant/proxy/config"
)

// Filter names in HTTP connection managers.
const (
	faultFilter     = "envoy.filters.http.fault"
	rateLimitFilter = "envoy.filters.http.local_ratelimit"
	rbacFilter      = "envoy.filters.http.rbac"
	routerFilter    = "envoy.filters.http.router"
)

// front is one name (or set of addresses) clients reach routes by: a
// route's hostname (gRPC: the name a client dials, xds:///name) or a
// Backend the route is attached to (its addresses are redirected).
type front struct {
	name    string
	byHost  bool
	addrs   []netip.AddrPort
	entries []routeEntry
}

// routeEntry is one match of one rule of one route.
type routeEntry struct {
	kind     string // HTTPRoute or GRPCRoute
	ns, name string
	origin   config.Origin
	rulePath string // "spec.rules[i]"
	match    string // "spec.rules[i].matches[j]", "" for a rule without matches
	http     *gwv1.HTTPRouteRule
	hm       *gwv1.HTTPRouteMatch
	grpc     *gwv1.GRPCRouteRule
	gm       *gwv1.GRPCRouteMatch
}

func (t *translation) fronts() []*front {
	byName := map[string]*front{}
	var order []string
	get := func(name string, byHost bool) *front {
		if f, ok := byName[name]; ok {
			return f
		}
		f := &front{name: name, byHost: byHost}
		byName[name] = f
		order = append(order, name)
		return f
	}
	attach := func(ns string, hostnames []gwv1.Hostname, parents []gwv1.ParentReference, entries []routeEntry) {
		for _, h := range hostnames {
			f := get(string(h), true)
			f.entries = append(f.entries, entries...)
		}
		for _, p := range parents {
			b, err := t.set.ResolveBackend(p.Group, p.Kind, p.Namespace, p.Name, ns)
			if err != nil {
				continue // config validated it
			}
			f := get(config.Name(b.Obj.Namespace, b.Obj.Name), false)
			if f.addrs == nil {
				for _, e := range b.Obj.Spec.Endpoints {
					f.addrs = append(f.addrs, netip.AddrPortFrom(netip.MustParseAddr(e.Address), uint16(e.Port)))
				}
			}
			f.entries = append(f.entries, entries...)
		}
	}
	for _, r := range t.set.HTTPRoutes {
		base := routeEntry{kind: config.TargetHTTPRoute, ns: r.Obj.Namespace, name: r.Obj.Name, origin: r.Origin}
		rules := r.Obj.Spec.Rules
		entries := ruleEntries(base, len(rules), func(i int) int { return len(rules[i].Matches) }, func(e *routeEntry, i, j int) {
			e.http = &rules[i]
			if j >= 0 {
				e.hm = &rules[i].Matches[j]
			}
		})
		attach(r.Obj.Namespace, r.Obj.Spec.Hostnames, r.Obj.Spec.ParentRefs, entries)
	}
	for _, r := range t.set.GRPCRoutes {
		base := routeEntry{kind: config.TargetGRPCRoute, ns: r.Obj.Namespace, name: r.Obj.Name, origin: r.Origin}
		rules := r.Obj.Spec.Rules
		entries := ruleEntries(base, len(rules), func(i int) int { return len(rules[i].Matches) }, func(e *routeEntry, i, j int) {
			e.grpc = &rules[i]
			if j >= 0 {
				e.gm = &rules[i].Matches[j]
			}
		})
		attach(r.Obj.Namespace, r.Obj.Spec.Hostnames, r.Obj.Spec.ParentRefs, entries)
	}
	out := make([]*front, 0, len(order))
	for _, n := range order {
		f := byName[n]
		slices.SortStableFunc(f.entries, func(a, b routeEntry) int { return cmp.Compare(b.precedence(), a.precedence()) })
		out = append(out, f)
	}
	return out
}

// ruleEntries makes one entry per match of each rule (one for a rule
// without matches: it matches everything); fill sets the rule (i) and
// match (j, -1 for none).
func ruleEntries(base routeEntry, rules int, matches func(i int) int, fill func(e *routeEntry, i, j int)) []routeEntry {
	var out []routeEntry
	for i := range rules {
		e := base
		e.rulePath = fmt.Sprintf("spec.rules[%d]", i)
		if matches(i) == 0 {
			fill(&e, i, -1)
			out = append(out, e)
		}
		for j := range matches(i) {
			m := e
			m.match = fmt.Sprintf("spec.rules[%d].matches[%d]", i, j)
			fill(&m, i, j)
			out = append(out, m)
		}
	}
	return out
}

// precedence orders matches as Gateway API says: an exact path before a
// prefix, a longer prefix first, then a method, then more header and
// query matches (GRPCRoute: service and method before service only).
func (e routeEntry) precedence() int {
	score := 0
	if m := e.hm; m != nil {
		if m.Path != nil && m.Path.Value != nil {
			switch ptr(m.Path.Type, gwv1.PathMatchPathPrefix) {
			case gwv1.PathMatchExact:
				score += 1 << 30
			case gwv1.PathMatchPathPrefix:
				score += len(*m.Path.Value) << 16
			}
		}
		if m.Method != nil {
			score += 1 << 12
		}
		score += len(m.Headers)<<6 + len(m.QueryParams)
	}
	if m := e.gm; m != nil {
		if m.Method != nil {
			if m.Method.Service != nil {
				score += 1 << 29
			}
			if m.Method.Method != nil {
				score += 1 << 28
			}
		}
		score += len(m.Headers) << 6
	}
	return score
}

func ptr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// route translates one entry; false when the profile cannot express it
// (a warning says why).
func (t *translation) route(e routeEntry) (*routev3.Route, bool) {
	at := func(p string) string { return e.origin.At(p) }
	r := &routev3.Route{Name: fmt.Sprintf("%s/%s/%s", e.kind, config.Name(e.ns, e.name), e.match), Match: &routev3.RouteMatch{}}
	if e.match == "" {
		r.Name = fmt.Sprintf("%s/%s/%s", e.kind, config.Name(e.ns, e.name), e.rulePath)
	}
	ok := true
	if e.hm != nil {
		ok = t.httpMatch(e, r.Match)
	} else if e.gm != nil {
		t.grpcMatch(e.gm, r.Match)
	}
	if r.Match.PathSpecifier == nil {
		r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	if !ok {
		return nil, false
	}
	var refs []gwv1.BackendRef
	if e.http != nil {
		refs, _ = config.RuleBackendRefs(e.http.BackendRefs)
	} else {
		refs, _ = config.RuleBackendRefs(e.grpc.BackendRefs)
	}
	filtersAt := e.rulePath + ".filters"
	// A redirect replaces the action.
	if e.http != nil {
		for i, f := range e.http.Filters {
			if f.Type != gwv1.HTTPRouteFilterRequestRedirect || f.RequestRedirect == nil {
				continue
			}
			if t.profile == GRPC {
				t.warn(at(fmt.Sprintf("%s[%d]", filtersAt, i)), "RequestRedirect", "gRPC clients ignore routes with a redirect action: route %s left out", r.Name)
				return nil, false
			}
			r.Action = &routev3.Route_Redirect{Redirect: redirectAction(f.RequestRedirect)}
			return r, true
		}
	}
	action := &routev3.RouteAction{}
	r.Action = &routev3.Route_Route{Route: action}
	t.clusterAction(e, refs, action)
	t.filters(e, r, action, filtersAt)
	if e.http != nil {
		t.httpTimeoutsRetry(e, action)
	}
	t.routePolicies(e, r, action)
	return r, true
}

func (t *translation) httpMatch(e routeEntry, m *routev3.RouteMatch) bool {
	hm := e.hm
	if p := hm.Path; p != nil && p.Value != nil {
		v := *p.Value
		switch ptr(p.Type, gwv1.PathMatchPathPrefix) {
		case gwv1.PathMatchExact:
			m.PathSpecifier = &routev3.RouteMatch_Path{Path: v}
		case gwv1.PathMatchPathPrefix:
			switch {
			case v == "/" || strings.HasSuffix(v, "/"):
				m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: v}
			case t.profile == Envoy:
				m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: v}
			default:
				// grpc-go knows plain prefixes only: /foo also matches
				// /foobar there.
				t.warn(e.origin.At(e.match+".path"), "PathPrefix", "gRPC matches %q as a plain string prefix (also %sx…)", v, v)
				m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: v}
			}
		case gwv1.PathMatchRegularExpression:
			m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
		}
	}
	if hm.Method != nil {
		m.Headers = append(m.Headers, exactHeader(":method", string(*hm.Method)))
	}
	for _, h := range hm.Headers {
		if ptr(h.Type, gwv1.HeaderMatchExact) == gwv1.HeaderMatchRegularExpression {
			m.Headers = append(m.Headers, regexHeader(strings.ToLower(string(h.Name)), h.Value))
		} else {
			m.Headers = append(m.Headers, exactHeader(strings.ToLower(string(h.Name)), h.Value))
		}
	}
	if len(hm.QueryParams) > 0 {
		if t.profile == GRPC {
			t.warn(e.origin.At(e.match+".queryParams"), "queryParams", "gRPC clients ignore routes with query parameter matches: this match left out")
			return false
		}
		for _, q := range hm.QueryParams {
			sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}}
			if ptr(q.Type, gwv1.QueryParamMatchExact) == gwv1.QueryParamMatchRegularExpression {
				sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: q.Value}}
			}
			m.QueryParameters = append(m.QueryParameters, &routev3.QueryParameterMatcher{
				Name: string(q.Name), QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}})
		}
	}
	return true
}

func (t *translation) grpcMatch(gm *gwv1.GRPCRouteMatch, m *routev3.RouteMatch) {
	if mm := gm.Method; mm != nil {
		svc, meth := ptr(mm.Service, ""), ptr(mm.Method, "")
		if ptr(mm.Type, gwv1.GRPCMethodMatchExact) == gwv1.GRPCMethodMatchExact {
			switch {
			case svc != "" && meth != "":
				m.PathSpecifier = &routev3.RouteMatch_Path{Path: "/" + svc + "/" + meth}
			case svc != "":
				m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/" + svc + "/"}
			case meth != "":
				m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `/[^/]+/` + regexp.QuoteMeta(meth)}}
			}
		} else {
			m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/" + cmp.Or(svc, `[^/]+`) + "/" + cmp.Or(meth, `[^/]+`)}}
		}
	}
	for _, h := range gm.Headers {
		if ptr(h.Type, gwv1.GRPCHeaderMatchExact) == gwv1.GRPCHeaderMatchRegularExpression {
			m.Headers = append(m.Headers, regexHeader(strings.ToLower(string(h.Name)), h.Value))
		} else {
			m.Headers = append(m.Headers, exactHeader(strings.ToLower(string(h.Name)), h.Value))
		}
	}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
}

func regexHeader(name, expr string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: expr}}}}}
}

// clusterAction sends to one cluster or splits by weight. Weight-0
// entries stay (a canary at 0 %: Envoy and grpc-go skip them).
func (t *translation) clusterAction(e routeEntry, refs []gwv1.BackendRef, a *routev3.RouteAction) {
	type wc struct {
		name   string
		weight uint32
	}
	var wcs []wc
	var total uint32
	for _, ref := range refs {
		b, err := t.set.ResolveBackend(ref.Group, ref.Kind, ref.Namespace, ref.Name, e.ns)
		if err != nil {
			continue
		}
		w := uint32(ptr(ref.Weight, 1))
		wcs = append(wcs, wc{clusterName(b), w})
		total += w
	}
	if len(wcs) == 1 && total > 0 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].name}
		return
	}
	if total == 0 {
		// Gateway API: no backend with weight → 500 (gRPC: UNAVAILABLE).
		// Neither profile has a direct response inside a route action;
		// the first cluster with weight 1 stands in and a warning says so.
		t.warn(e.origin.At(e.rulePath+".backendRefs"), "weights", "every backendRef has weight 0: traffic goes to %s", wcs[0].name)
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].name}
		return
	}
	split := &routev3.WeightedCluster{}
	for _, c := range wcs {
		split.Clusters = append(split.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c.name, Weight: wrapperspb.UInt32(c.weight)})
	}
	a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: split}
}

func clusterName(b config.Doc[*config.Backend]) string {
	return config.Name(b.Obj.Namespace, b.Obj.Name)
}

// filters applies header modifiers, URL rewrites and mirrors (Envoy only:
// grpc-go honours none of them).
func (t *translation) filters(e routeEntry, r *routev3.Route, a *routev3.RouteAction, at string) {
	type filter struct {
		typ       string
		req, resp *gwv1.HTTPHeaderFilter
		rewrite   *gwv1.HTTPURLRewriteFilter
		mirror    *gwv1.HTTPRequestMirrorFilter
	}
	var fs []filter
	if e.http != nil {
		for _, f := range e.http.Filters {
			fs = append(fs, filter{string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, f.URLRewrite, f.RequestMirror})
		}
	} else {
		for _, f := range e.grpc.Filters {
			fs = append(fs, filter{string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, nil, f.RequestMirror})
		}
	}
	for i, f := range fs {
		if f.typ == string(gwv1.HTTPRouteFilterRequestRedirect) {
			continue
		}
		if t.profile == GRPC {
			t.warn(e.origin.At(fmt.Sprintf("%s[%d]", at, i)), f.typ, "not honoured by gRPC clients: left out of route %s", r.Name)
			continue
		}
		switch {
		case f.req != nil:
			r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, headerOptions(f.req)...)
			r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, f.req.Remove...)
		case f.resp != nil:
			r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, headerOptions(f.resp)...)
			r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, f.resp.Remove...)
		case f.rewrite != nil:
			if h := f.rewrite.Hostname; h != nil {
				a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*h)}
			}
			if p := f.rewrite.Path; p != nil {
				switch p.Type {
				case gwv1.FullPathHTTPPathModifier:
					a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: ptr(p.ReplaceFullPath, "/")}
				case gwv1.PrefixMatchHTTPPathModifier:
					a.PrefixRewrite = ptr(p.ReplacePrefixMatch, "/")
				}
			}
		case f.mirror != nil:
			b, err := t.set.ResolveBackend(f.mirror.BackendRef.Group, f.mirror.BackendRef.Kind, f.mirror.BackendRef.Namespace, f.mirror.BackendRef.Name, e.ns)
			if err != nil {
				continue
			}
			mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: clusterName(b)}
			if f.mirror.Percent != nil {
				mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: uint32(*f.mirror.Percent), Denominator: typev3.FractionalPercent_HUNDRED}}
			}
			a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, mp)
		}
	}
}

func headerOptions(f *gwv1.HTTPHeaderFilter) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range f.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range f.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

func redirectAction(f *gwv1.HTTPRequestRedirectFilter) *routev3.RedirectAction {
	r := &routev3.RedirectAction{}
	if f.Scheme != nil {
		r.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		r.HostRedirect = string(*f.Hostname)
	}
	if f.Port != nil {
		r.PortRedirect = uint32(*f.Port)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			r.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: ptr(p.ReplaceFullPath, "/")}
		case gwv1.PrefixMatchHTTPPathModifier:
			r.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: ptr(p.ReplacePrefixMatch, "/")}
		}
	}
	switch ptr(f.StatusCode, 302) {
	case 301:
		r.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 303:
		r.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		r.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		r.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		r.ResponseCode = routev3.RedirectAction_FOUND
	}
	return r
}

// httpToGRPC maps HTTP statuses to the gRPC codes a gRPC client sees for
// them (gRPC's HTTP-to-gRPC status mapping).
var httpToGRPC = map[int]string{500: "internal", 502: "unavailable", 503: "unavailable", 504: "unavailable", 429: "unavailable"}

func (t *translation) httpTimeoutsRetry(e routeEntry, a *routev3.RouteAction) {
	rule := e.http
	if to := rule.Timeouts; to != nil {
		if to.Request != nil {
			d, _ := config.ParseDuration(*to.Request)
			t.streamTimeout(a, d)
		}
		if to.BackendRequest != nil {
			if t.profile == GRPC {
				t.warn(e.origin.At(e.rulePath+".timeouts.backendRequest"), "backendRequest", "grpc-go has no per-try timeout")
			} else {
				d, _ := config.ParseDuration(*to.BackendRequest)
				if a.RetryPolicy == nil {
					a.RetryPolicy = &routev3.RetryPolicy{}
				}
				a.RetryPolicy.PerTryTimeout = durationpb.New(d)
			}
		}
	}
	if rr := rule.Retry; rr != nil {
		p := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(ptr(rr.Attempts, 1)))}
		if a.RetryPolicy != nil {
			p.PerTryTimeout = a.RetryPolicy.PerTryTimeout
		}
		var on []string
		for _, c := range rr.Codes {
			if t.profile == Envoy {
				p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(c))
			}
			if g, ok := httpToGRPC[int(c)]; ok {
				on = append(on, g)
			} else if t.profile == GRPC {
				t.warn(e.origin.At(e.rulePath+".retry.codes"), "retry.codes", "HTTP %d has no gRPC status to retry on", c)
			}
		}
		if t.profile == Envoy && len(rr.Codes) > 0 {
			on = append(on, "retriable-status-codes")
		}
		slices.Sort(on)
		p.RetryOn = strings.Join(slices.Compact(on), ",")
		if rr.Backoff != nil {
			d, _ := config.ParseDuration(*rr.Backoff)
			p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(d)}
		}
		if p.RetryOn != "" {
			a.RetryPolicy = p
		}
	}
}

// streamTimeout bounds the whole stream: Envoy's route timeout, gRPC's
// max_stream_duration (grpc-go ignores RouteAction.timeout).
func (t *translation) streamTimeout(a *routev3.RouteAction, d time.Duration) {
	dur := durationpb.New(d)
	if t.profile == GRPC {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: dur}
		return
	}
	a.Timeout = dur
}

// routePolicies applies the TrafficPolicies targeting the entry's route
// (retry, timeout, fault, local rate limit) and the hash policy of
// ring-hash backends it sends to.
func (t *translation) routePolicies(e routeEntry, r *routev3.Route, a *routev3.RouteAction) {
	for _, p := range t.policiesFor(e.kind, e.ns, e.name) {
		sp := p.Obj.Spec
		if rt := sp.Retry; rt != nil {
			rp := &routev3.RetryPolicy{RetryOn: strings.Join(rt.On, ","), NumRetries: wrapperspb.UInt32(ptr(rt.Attempts, 1))}
			if rt.Backoff != nil {
				d, _ := config.ParseDuration(*rt.Backoff)
				rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(d)}
			}
			a.RetryPolicy = rp
		}
		if to := sp.Timeout; to != nil {
			d, _ := config.ParseDuration(to.Request)
			t.streamTimeout(a, d)
		}
		if f := sp.Fault; f != nil {
			t.perFilter(r, faultFilter, faultConfig(f))
		}
		if l := sp.LocalRateLimit; l != nil {
			if t.profile == GRPC {
				t.warn(p.At("spec.localRateLimit"), "localRateLimit", "grpc-go has no rate limiting: route %s is not limited", r.Name)
			} else {
				d, _ := config.ParseDuration(l.FillInterval)
				t.perFilter(r, rateLimitFilter, &ratelimitv3.LocalRateLimit{
					StatPrefix: statPrefix,
					TokenBucket: &typev3.TokenBucket{MaxTokens: l.MaxTokens, TokensPerFill: wrapperspb.UInt32(ptr(l.TokensPerFill, 1)),
						FillInterval: durationpb.New(d)},
					FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}},
					FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}},
				})
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range routeClusters(a) {
		b, ok := t.set.BackendByName(c)
		if !ok {
			continue
		}
		for _, p := range t.policiesFor(config.TargetBackend, b.Obj.Namespace, b.Obj.Name) {
			if lb := p.Obj.Spec.LoadBalancer; lb != nil && lb.HashHeader != "" && !seen[lb.HashHeader] {
				seen[lb.HashHeader] = true
				a.HashPolicy = append(a.HashPolicy, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
					Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(lb.HashHeader)}}})
			}
		}
	}
}

func routeClusters(a *routev3.RouteAction) []string {
	if c := a.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, c := range a.GetWeightedClusters().GetClusters() {
		out = append(out, c.GetName())
	}
	return out
}

func (t *translation) perFilter(r *routev3.Route, name string, cfg proto.Message) {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[name] = mustAny(cfg)
}

func faultConfig(f *config.Fault) *faultv3.HTTPFault {
	h := &faultv3.HTTPFault{}
	if a := f.Abort; a != nil {
		h.Abort = &faultv3.FaultAbort{Percentage: &typev3.FractionalPercent{Numerator: a.Percent, Denominator: typev3.FractionalPercent_HUNDRED}}
		if a.GRPCStatus != nil {
			h.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: *a.GRPCStatus}
		} else {
			h.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: *a.HTTPStatus}
		}
	}
	if d := f.Delay; d != nil {
		dur, _ := config.ParseDuration(d.FixedDelay)
		h.Delay = &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(dur)},
			Percentage: &typev3.FractionalPercent{Numerator: d.Percent, Denominator: typev3.FractionalPercent_HUNDRED}}
	}
	if f.MaxActiveFaults != nil {
		h.MaxActiveFaults = wrapperspb.UInt32(*f.MaxActiveFaults)
	}
	return h
}

// policiesFor are the TrafficPolicies targeting kind ns/name.
func (t *translation) policiesFor(kind, ns, name string) []config.Doc[*config.TrafficPolicy] {
	var out []config.Doc[*config.TrafficPolicy]
	for _, p := range t.set.TrafficPolicies {
		for _, ref := range p.Obj.Spec.TargetRefs {
			if config.TargetKind(ref) == kind && config.Name(p.Obj.Namespace, string(ref.Name)) == config.Name(ns, name) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// mustAny packs a generated message; marshalling one cannot fail.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("pack %T: %v", m, err))
	}
	return a
}
