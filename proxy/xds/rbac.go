package xds

import (
	"net/netip"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sextant/sextant/proxy/access"
	"github.com/sextant/sextant/proxy/config"
)

// serverRule is the L7 rules of one policy on one server address.
type serverRule struct {
	policy config.Doc[*config.L7Policy]
	rules  []config.HTTPRule
}

func (t *translation) rulesByServer() map[netip.AddrPort][]serverRule {
	out := map[netip.AddrPort][]serverRule{}
	for _, p := range t.l7 {
		for _, s := range p.Obj.Spec.Servers {
			a, err := netip.ParseAddrPort(s)
			if err != nil {
				continue // validated
			}
			out[a] = append(out[a], serverRule{policy: p, rules: p.Obj.Spec.HTTP})
		}
	}
	return out
}

// PolicyName is how an L7 policy is named in RBAC (the policy key that
// audit events report as the matched rule) and in verdicts.
func PolicyName(p *config.L7Policy) string { return config.Name(p.Namespace, p.Name) }

// rbac: Cilium's L7 semantics — once rules select a server, a request
// passes only if one rule of one policy matches it (ALLOW policies, one
// per L7 policy, one permission per rule); any other is denied with
// PERMISSION_DENIED (gRPC) or 403 (Envoy). gRPC servers report every
// decision to sextant's audit logger.
func (t *translation) rbac(addr netip.AddrPort, rs []serverRule) (*rbacfilterv3.RBAC, error) {
	rb := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	var names []any
	for _, sr := range rs {
		name := PolicyName(sr.policy.Obj)
		names = append(names, name)
		pol := &rbacv3.Policy{Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}
		for _, r := range sr.rules {
			pol.Permissions = append(pol.Permissions, permission(r))
		}
		if len(pol.Permissions) == 0 {
			pol.Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
		}
		rb.Policies[name] = pol
	}
	if t.profile == GRPC && t.opt.AuditSink != "" {
		cfg, err := structpb.NewStruct(map[string]any{"sink": t.opt.AuditSink, "server": addr.String(), "policies": names})
		if err != nil {
			return nil, err
		}
		rb.AuditLoggingOptions = &rbacv3.RBAC_AuditLoggingOptions{
			AuditCondition: rbacv3.RBAC_AuditLoggingOptions_ON_DENY_AND_ALLOW,
			LoggerConfigs: []*rbacv3.RBAC_AuditLoggingOptions_AuditLoggerConfig{{
				AuditLogger: &corev3.TypedExtensionConfig{Name: access.AuditLoggerName, TypedConfig: mustAny(&xdstypev3.TypedStruct{
					TypeUrl: "type.googleapis.com/" + access.AuditLoggerName, Value: cfg})},
			}},
		}
	}
	return &rbacfilterv3.RBAC{Rules: rb}, nil
}

// permission is the AND of a rule's fields (an empty rule allows all).
func permission(r config.HTTPRule) *rbacv3.Permission {
	var and []*rbacv3.Permission
	header := func(h *routev3.HeaderMatcher) {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}})
	}
	if r.Method != "" {
		header(regexHeader(":method", r.Method))
	}
	if r.Path != "" {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r.Path}}}}}}})
	}
	if r.Host != "" {
		header(regexHeader(":authority", r.Host))
	}
	for _, h := range r.Headers {
		name, value, hasValue := strings.Cut(h, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if hasValue {
			header(exactHeader(name, strings.TrimSpace(value)))
		} else {
			header(&routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})
		}
	}
	for _, h := range r.HeaderMatches {
		if h.Value == "" {
			header(&routev3.HeaderMatcher{Name: strings.ToLower(h.Name), HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})
		} else {
			header(exactHeader(strings.ToLower(h.Name), h.Value))
		}
	}
	switch len(and) {
	case 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	case 1:
		return and[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
}
