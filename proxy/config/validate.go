package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// validate checks what decoding cannot: references resolve, names are
// unique, durations and regular expressions parse, only supported
// features are used. Every error names the field's file:line.
func (s *Set) validate() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	seen := map[string]string{}
	unique := func(o Origin, kind, ns, name string) {
		key := kind + " " + Name(ns, name)
		if name == "" {
			add(o.Errorf("metadata.name", "required"))
			return
		}
		if prev, ok := seen[key]; ok {
			add(o.Errorf("metadata.name", "%s defined twice (first at %s)", key, prev))
			return
		}
		seen[key] = o.At("metadata.name")
	}
	for _, b := range s.Backends {
		unique(b.Origin, "Backend", b.Obj.Namespace, b.Obj.Name)
		add(validateBackend(b))
	}
	for _, r := range s.HTTPRoutes {
		unique(r.Origin, "HTTPRoute", r.Obj.Namespace, r.Obj.Name)
		for _, e := range s.validateHTTPRoute(r) {
			add(e)
		}
	}
	for _, r := range s.GRPCRoutes {
		unique(r.Origin, "GRPCRoute", r.Obj.Namespace, r.Obj.Name)
		for _, e := range s.validateGRPCRoute(r) {
			add(e)
		}
	}
	for _, p := range s.TrafficPolicies {
		unique(p.Origin, "TrafficPolicy", p.Obj.Namespace, p.Obj.Name)
		for _, e := range s.validateTrafficPolicy(p) {
			add(e)
		}
	}
	for _, p := range s.L7Policies {
		unique(p.Origin, "L7Policy", p.Obj.Namespace, p.Obj.Name)
		for _, e := range validateL7Policy(p) {
			add(e)
		}
	}
	return errs
}

func validateBackend(b Doc[*Backend]) error {
	sp := b.Obj.Spec
	if (len(sp.Endpoints) == 0) == (sp.DNS == nil) {
		return b.Errorf("spec", "exactly one of endpoints and dns is required")
	}
	for i, e := range sp.Endpoints {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		if _, err := netip.ParseAddr(e.Address); err != nil {
			return b.Errorf(p+".address", "not an IP address: %q", e.Address)
		}
		if e.Port < 1 || e.Port > 65535 {
			return b.Errorf(p+".port", "must be 1-65535, is %d", e.Port)
		}
		if e.Weight != nil && *e.Weight == 0 {
			return b.Errorf(p+".weight", "must be at least 1")
		}
	}
	if d := sp.DNS; d != nil {
		if d.Hostname == "" || strings.ContainsAny(d.Hostname, " /:") {
			return b.Errorf("spec.dns.hostname", "not a DNS name: %q", d.Hostname)
		}
		if d.Port < 1 || d.Port > 65535 {
			return b.Errorf("spec.dns.port", "must be 1-65535, is %d", d.Port)
		}
	}
	return nil
}

// ResolveBackend finds the Backend a backendRef or parentRef names:
// kind Backend (group proxy.sextant.io) or Service (core group, the
// same object until Kubernetes Services are read).
func (s *Set) ResolveBackend(group *gwv1.Group, kind *gwv1.Kind, ns *gwv1.Namespace, name gwv1.ObjectName, defaultNS string) (Doc[*Backend], error) {
	g, k := "", "Service"
	if group != nil {
		g = string(*group)
	}
	if kind != nil {
		k = string(*kind)
	}
	if !(g == "" && k == "Service" || g == Group && k == "Backend") {
		return Doc[*Backend]{}, fmt.Errorf("unsupported reference to %s %s (only Service or %s Backend)", g, k, Group)
	}
	namespace := defaultNS
	if ns != nil {
		namespace = string(*ns)
	}
	b, ok := s.BackendByName(Name(namespace, string(name)))
	if !ok {
		return b, fmt.Errorf("no Backend %s", Name(namespace, string(name)))
	}
	return b, nil
}

func (s *Set) validateParents(o Origin, ns string, parents []gwv1.ParentReference, hostnames []gwv1.Hostname) []error {
	var errs []error
	for i, p := range parents {
		if _, err := s.ResolveBackend(p.Group, p.Kind, p.Namespace, p.Name, ns); err != nil {
			errs = append(errs, o.Errorf(fmt.Sprintf("spec.parentRefs[%d]", i), "%v", err))
		}
		if p.SectionName != nil || p.Port != nil {
			errs = append(errs, o.Errorf(fmt.Sprintf("spec.parentRefs[%d]", i), "sectionName and port are not supported"))
		}
	}
	for i, h := range hostnames {
		if strings.HasPrefix(string(h), "*") {
			errs = append(errs, o.Errorf(fmt.Sprintf("spec.hostnames[%d]", i), "wildcard hostnames are not supported (a gRPC client dials one name)"))
		}
	}
	if len(parents) == 0 && len(hostnames) == 0 {
		errs = append(errs, o.Errorf("spec", "a route needs hostnames (the names clients dial) or parentRefs to Backends (the addresses clients dial)"))
	}
	return errs
}

func (s *Set) validateBackendRefs(o Origin, ns, path string, refs []gwv1.BackendRef, hasFilters []bool) []error {
	var errs []error
	for i, ref := range refs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if _, err := s.ResolveBackend(ref.Group, ref.Kind, ref.Namespace, ref.Name, ns); err != nil {
			errs = append(errs, o.Errorf(p, "%v", err))
		}
		if ref.Weight != nil && *ref.Weight < 0 {
			errs = append(errs, o.Errorf(p+".weight", "must not be negative"))
		}
		if hasFilters[i] {
			errs = append(errs, o.Errorf(p+".filters", "filters on a backendRef are not supported (use the rule's filters)"))
		}
	}
	return errs
}

// RuleBackendRefs are a rule's backendRefs (HTTPBackendRef or
// GRPCBackendRef) and whether each carries filters of its own.
func RuleBackendRefs[T gwv1.HTTPBackendRef | gwv1.GRPCBackendRef](bs []T) ([]gwv1.BackendRef, []bool) {
	refs := make([]gwv1.BackendRef, len(bs))
	filters := make([]bool, len(bs))
	for i, b := range bs {
		switch b := any(b).(type) {
		case gwv1.HTTPBackendRef:
			refs[i], filters[i] = b.BackendRef, len(b.Filters) > 0
		case gwv1.GRPCBackendRef:
			refs[i], filters[i] = b.BackendRef, len(b.Filters) > 0
		}
	}
	return refs, filters
}

func (s *Set) checkMirror(o Origin, ns, path string, m *gwv1.HTTPRequestMirrorFilter) error {
	if m == nil {
		return nil
	}
	if _, err := s.ResolveBackend(m.BackendRef.Group, m.BackendRef.Kind, m.BackendRef.Namespace, m.BackendRef.Name, ns); err != nil {
		return o.Errorf(path+".requestMirror.backendRef", "%v", err)
	}
	return nil
}

func (s *Set) validateHTTPRoute(r Doc[*gwv1.HTTPRoute]) []error {
	rt := r.Obj
	errs := s.validateParents(r.Origin, rt.Namespace, rt.Spec.ParentRefs, rt.Spec.Hostnames)
	for ri, rule := range rt.Spec.Rules {
		rp := fmt.Sprintf("spec.rules[%d]", ri)
		refs, filters := RuleBackendRefs(rule.BackendRefs)
		errs = append(errs, s.validateBackendRefs(r.Origin, rt.Namespace, rp+".backendRefs", refs, filters)...)
		redirect := false
		for fi, f := range rule.Filters {
			fp := fmt.Sprintf("%s.filters[%d]", rp, fi)
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier:
			case gwv1.HTTPRouteFilterRequestRedirect:
				redirect = true
			case gwv1.HTTPRouteFilterURLRewrite:
				if u := f.URLRewrite; u != nil && u.Path != nil && u.Path.Type == gwv1.PrefixMatchHTTPPathModifier {
					for _, m := range rule.Matches {
						if m.Path == nil || m.Path.Type == nil || *m.Path.Type != gwv1.PathMatchPathPrefix {
							errs = append(errs, r.Errorf(fp+".urlRewrite.path", "replacePrefixMatch needs every match of the rule to be a PathPrefix"))
							break
						}
					}
				}
			case gwv1.HTTPRouteFilterRequestMirror:
				errs = append(errs, s.checkMirror(r.Origin, rt.Namespace, fp, f.RequestMirror))
			default:
				errs = append(errs, r.Errorf(fp+".type", "filter %s is not supported", f.Type))
			}
		}
		if redirect && len(rule.BackendRefs) > 0 {
			errs = append(errs, r.Errorf(rp+".backendRefs", "a rule with a RequestRedirect filter has no backendRefs"))
		}
		if !redirect && len(rule.BackendRefs) == 0 {
			errs = append(errs, r.Errorf(rp, "a rule needs backendRefs (or a RequestRedirect filter)"))
		}
		for mi, m := range rule.Matches {
			mp := fmt.Sprintf("%s.matches[%d]", rp, mi)
			if m.Path != nil && m.Path.Type != nil && *m.Path.Type == gwv1.PathMatchRegularExpression && m.Path.Value != nil {
				errs = append(errs, checkRegexp(r.Origin, mp+".path.value", *m.Path.Value))
			}
			for hi, h := range m.Headers {
				if h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression {
					errs = append(errs, checkRegexp(r.Origin, fmt.Sprintf("%s.headers[%d].value", mp, hi), h.Value))
				}
			}
			for qi, q := range m.QueryParams {
				if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
					errs = append(errs, checkRegexp(r.Origin, fmt.Sprintf("%s.queryParams[%d].value", mp, qi), q.Value))
				}
			}
		}
		if t := rule.Timeouts; t != nil {
			if t.Request != nil {
				errs = append(errs, checkDuration(r.Origin, rp+".timeouts.request", *t.Request))
			}
			if t.BackendRequest != nil {
				errs = append(errs, checkDuration(r.Origin, rp+".timeouts.backendRequest", *t.BackendRequest))
			}
		}
		if rule.Retry != nil && rule.Retry.Backoff != nil {
			errs = append(errs, checkDuration(r.Origin, rp+".retry.backoff", *rule.Retry.Backoff))
		}
		if rule.SessionPersistence != nil {
			errs = append(errs, r.Errorf(rp+".sessionPersistence", "not supported (use a TrafficPolicy loadBalancer RingHash)"))
		}
	}
	return compact(errs)
}

func (s *Set) validateGRPCRoute(r Doc[*gwv1.GRPCRoute]) []error {
	rt := r.Obj
	errs := s.validateParents(r.Origin, rt.Namespace, rt.Spec.ParentRefs, rt.Spec.Hostnames)
	for ri, rule := range rt.Spec.Rules {
		rp := fmt.Sprintf("spec.rules[%d]", ri)
		refs, filters := RuleBackendRefs(rule.BackendRefs)
		if len(refs) == 0 {
			errs = append(errs, r.Errorf(rp, "a rule needs backendRefs"))
		}
		errs = append(errs, s.validateBackendRefs(r.Origin, rt.Namespace, rp+".backendRefs", refs, filters)...)
		for fi, f := range rule.Filters {
			fp := fmt.Sprintf("%s.filters[%d]", rp, fi)
			switch f.Type {
			case gwv1.GRPCRouteFilterRequestHeaderModifier, gwv1.GRPCRouteFilterResponseHeaderModifier:
			case gwv1.GRPCRouteFilterRequestMirror:
				errs = append(errs, s.checkMirror(r.Origin, rt.Namespace, fp, f.RequestMirror))
			default:
				errs = append(errs, r.Errorf(fp+".type", "filter %s is not supported", f.Type))
			}
		}
		for mi, m := range rule.Matches {
			mp := fmt.Sprintf("%s.matches[%d]", rp, mi)
			if mm := m.Method; mm != nil && mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression {
				if mm.Service != nil {
					errs = append(errs, checkRegexp(r.Origin, mp+".method.service", *mm.Service))
				}
				if mm.Method != nil {
					errs = append(errs, checkRegexp(r.Origin, mp+".method.method", *mm.Method))
				}
			}
			for hi, h := range m.Headers {
				if h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression {
					errs = append(errs, checkRegexp(r.Origin, fmt.Sprintf("%s.headers[%d].value", mp, hi), h.Value))
				}
			}
		}
		if rule.SessionPersistence != nil {
			errs = append(errs, r.Errorf(rp+".sessionPersistence", "not supported (use a TrafficPolicy loadBalancer RingHash)"))
		}
	}
	return compact(errs)
}

// Target kinds of a TrafficPolicy.
const (
	TargetBackend   = "Backend"
	TargetHTTPRoute = "HTTPRoute"
	TargetGRPCRoute = "GRPCRoute"
)

// TargetKind normalises a policy target: Backend (or Service) and the
// two route kinds; "" when unsupported.
func TargetKind(ref gwv1.LocalPolicyTargetReference) string {
	switch {
	case ref.Group == Group && ref.Kind == "Backend", ref.Group == "" && ref.Kind == "Service":
		return TargetBackend
	case ref.Group == gwv1.GroupName && ref.Kind == "HTTPRoute":
		return TargetHTTPRoute
	case ref.Group == gwv1.GroupName && ref.Kind == "GRPCRoute":
		return TargetGRPCRoute
	}
	return ""
}

func (s *Set) validateTrafficPolicy(p Doc[*TrafficPolicy]) []error {
	sp := p.Obj.Spec
	var errs []error
	if len(sp.TargetRefs) == 0 {
		errs = append(errs, p.Errorf("spec.targetRefs", "at least one target is required"))
	}
	backendOnly := map[string]bool{"outlierDetection": sp.OutlierDetection != nil, "circuitBreaker": sp.CircuitBreaker != nil, "loadBalancer": sp.LoadBalancer != nil}
	routeOnly := map[string]bool{"localRateLimit": sp.LocalRateLimit != nil, "fault": sp.Fault != nil, "retry": sp.Retry != nil, "timeout": sp.Timeout != nil}
	for i, t := range sp.TargetRefs {
		tp := fmt.Sprintf("spec.targetRefs[%d]", i)
		kind := TargetKind(t)
		found := false
		switch kind {
		case TargetBackend:
			_, found = s.BackendByName(Name(p.Obj.Namespace, string(t.Name)))
		case TargetHTTPRoute:
			for _, r := range s.HTTPRoutes {
				found = found || Name(r.Obj.Namespace, r.Obj.Name) == Name(p.Obj.Namespace, string(t.Name))
			}
		case TargetGRPCRoute:
			for _, r := range s.GRPCRoutes {
				found = found || Name(r.Obj.Namespace, r.Obj.Name) == Name(p.Obj.Namespace, string(t.Name))
			}
		default:
			errs = append(errs, p.Errorf(tp, "unsupported target %s %s (Backend, Service, HTTPRoute, GRPCRoute)", t.Group, t.Kind))
			continue
		}
		if !found {
			errs = append(errs, p.Errorf(tp+".name", "no %s %s", kind, Name(p.Obj.Namespace, string(t.Name))))
		}
		wrong := routeOnly
		if kind != TargetBackend {
			wrong = backendOnly
		}
		for f, set := range wrong {
			if set {
				errs = append(errs, p.Errorf("spec."+f, "does not apply to a %s target (%s)", kind, tp))
			}
		}
	}
	if l := sp.LocalRateLimit; l != nil {
		errs = append(errs, checkDuration(p.Origin, "spec.localRateLimit.fillInterval", l.FillInterval))
		if l.MaxTokens == 0 {
			errs = append(errs, p.Errorf("spec.localRateLimit.maxTokens", "must be at least 1"))
		}
	}
	if o := sp.OutlierDetection; o != nil {
		for f, d := range map[string]*gwv1.Duration{"interval": o.Interval, "baseEjectionTime": o.BaseEjectionTime} {
			if d != nil {
				errs = append(errs, checkDuration(p.Origin, "spec.outlierDetection."+f, *d))
			}
		}
		if o.MaxEjectionPercent != nil && *o.MaxEjectionPercent > 100 {
			errs = append(errs, p.Errorf("spec.outlierDetection.maxEjectionPercent", "at most 100"))
		}
		if f := o.FailurePercentage; f != nil && f.Threshold > 100 {
			errs = append(errs, p.Errorf("spec.outlierDetection.failurePercentage.threshold", "at most 100"))
		}
	}
	if f := sp.Fault; f != nil {
		if a := f.Abort; a != nil {
			if a.Percent > 100 {
				errs = append(errs, p.Errorf("spec.fault.abort.percent", "at most 100"))
			}
			if (a.HTTPStatus == nil) == (a.GRPCStatus == nil) {
				errs = append(errs, p.Errorf("spec.fault.abort", "exactly one of httpStatus and grpcStatus"))
			}
			if a.GRPCStatus != nil && *a.GRPCStatus > 16 {
				errs = append(errs, p.Errorf("spec.fault.abort.grpcStatus", "not a gRPC status code: %d", *a.GRPCStatus))
			}
			if a.HTTPStatus != nil && (*a.HTTPStatus < 200 || *a.HTTPStatus > 599) {
				errs = append(errs, p.Errorf("spec.fault.abort.httpStatus", "must be 200-599"))
			}
		}
		if d := f.Delay; d != nil {
			errs = append(errs, checkDuration(p.Origin, "spec.fault.delay.fixedDelay", d.FixedDelay))
			if d.Percent > 100 {
				errs = append(errs, p.Errorf("spec.fault.delay.percent", "at most 100"))
			}
		}
		if f.Abort == nil && f.Delay == nil {
			errs = append(errs, p.Errorf("spec.fault", "abort or delay is required"))
		}
	}
	if lb := sp.LoadBalancer; lb != nil {
		switch lb.Policy {
		case "RoundRobin", "LeastRequest", "Random":
			if lb.HashHeader != "" {
				errs = append(errs, p.Errorf("spec.loadBalancer.hashHeader", "only with policy RingHash"))
			}
		case "RingHash":
			if lb.HashHeader == "" {
				errs = append(errs, p.Errorf("spec.loadBalancer.hashHeader", "RingHash needs the header to hash"))
			}
		default:
			errs = append(errs, p.Errorf("spec.loadBalancer.policy", "unknown policy %q (RoundRobin, LeastRequest, RingHash, Random)", lb.Policy))
		}
	}
	if r := sp.Retry; r != nil {
		if len(r.On) == 0 {
			errs = append(errs, p.Errorf("spec.retry.on", "at least one condition"))
		}
		if r.Backoff != nil {
			errs = append(errs, checkDuration(p.Origin, "spec.retry.backoff", *r.Backoff))
		}
	}
	if t := sp.Timeout; t != nil {
		errs = append(errs, checkDuration(p.Origin, "spec.timeout.request", t.Request))
	}
	return compact(errs)
}

func validateL7Policy(p Doc[*L7Policy]) []error {
	var errs []error
	if len(p.Obj.Spec.Servers) == 0 {
		errs = append(errs, p.Errorf("spec.servers", "at least one server address"))
	}
	for i, a := range p.Obj.Spec.Servers {
		if _, err := netip.ParseAddrPort(a); err != nil {
			errs = append(errs, p.Errorf(fmt.Sprintf("spec.servers[%d]", i), "not an IP:port: %q", a))
		}
	}
	for i, r := range p.Obj.Spec.HTTP {
		rp := fmt.Sprintf("spec.http[%d]", i)
		for f, v := range map[string]string{"method": r.Method, "path": r.Path, "host": r.Host} {
			if v != "" {
				errs = append(errs, checkRegexp(p.Origin, rp+"."+f, v))
			}
		}
		for hi, h := range r.Headers {
			if name, _, _ := strings.Cut(h, ":"); strings.TrimSpace(name) == "" {
				errs = append(errs, p.Errorf(fmt.Sprintf("%s.headers[%d]", rp, hi), "empty header name"))
			}
		}
		for hi, h := range r.HeaderMatches {
			if h.Name == "" {
				errs = append(errs, p.Errorf(fmt.Sprintf("%s.headerMatches[%d].name", rp, hi), "required"))
			}
		}
	}
	return compact(errs)
}

func checkRegexp(o Origin, path, expr string) error {
	if _, err := regexp.Compile(expr); err != nil {
		return o.Errorf(path, "bad regular expression: %v", err)
	}
	return nil
}

func checkDuration(o Origin, path string, d gwv1.Duration) error {
	if _, err := ParseDuration(d); err != nil {
		return o.Errorf(path, "%v", err)
	}
	return nil
}

// ParseDuration reads a GEP-2257 duration ("1h", "1.5s" is not one:
// integers with units h, m, s, ms).
func ParseDuration(d gwv1.Duration) (time.Duration, error) {
	if !regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`).MatchString(string(d)) {
		return 0, fmt.Errorf("not a duration: %q (integers with h, m, s, ms, e.g. 1m30s, 500ms)", string(d))
	}
	return time.ParseDuration(string(d))
}

func compact(errs []error) []error {
	out := errs[:0]
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}
