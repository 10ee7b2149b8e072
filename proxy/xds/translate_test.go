package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sextant/sextant/proxy/config"
)

// everything uses every input feature at once.
const everything = `apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: a}
spec:
  endpoints: [{address: 127.0.0.1, port: 8081}, {address: 127.0.0.1, port: 8082, weight: 3}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: b}
spec:
  dns: {hostname: b.example, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  hostnames: [web.test]
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: a}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      method: GET
      headers: [{name: x-canary, value: "yes"}]
      queryParams: [{name: debug, value: "1"}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: sextant}], remove: [x-internal]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-served-by, value: sextant}]}
    - type: URLRewrite
      urlRewrite: {hostname: internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: b}, percent: 10}
    backendRefs: [{name: a, weight: 90}, {name: b, weight: 10}]
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [503, 404], attempts: 3, backoff: 10ms}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  hostnames: [echo.test]
  rules:
  - matches: [{method: {service: echo.Echo, method: Ping}}]
    backendRefs: [{name: a}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}]
  localRateLimit: {maxTokens: 100, tokensPerFill: 10, fillInterval: 1s}
  fault: {abort: {percent: 1, httpStatus: 503}, delay: {percent: 5, fixedDelay: 100ms}}
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: a}
spec:
  targetRefs: [{group: proxy.sextant.io, kind: Backend, name: a}]
  outlierDetection: {consecutive5xx: 5, interval: 1s, failurePercentage: {threshold: 50}}
  circuitBreaker: {maxRequests: 100, maxConnections: 10, maxPendingRequests: 5, maxRetries: 3}
  loadBalancer: {policy: RingHash, hashHeader: x-user}
---
apiVersion: proxy.sextant.io/v1alpha1
kind: L7Policy
metadata: {name: echo-l7}
spec:
  servers: [127.0.0.1:9000]
  http: [{method: POST, path: /echo.Echo/.*, host: "echo.*", headers: ["x-team: blue", x-trace]}]
`

func parse(t *testing.T, doc string) *config.Set {
	t.Helper()
	s, err := config.Parse(map[string][]byte{"in.yaml": []byte(doc)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The Envoy profile expresses everything, and its snapshot is consistent
// (every RDS and EDS reference resolves) — the check Envoy itself would
// make is all that is left unproven here (no Envoy binary).
func TestEnvoyProfileExpressesEverything(t *testing.T) {
	res, warns, err := Translate(parse(t, everything), nil, Envoy, Options{UpstreamMark: 0x5e7a})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res[resource.ClusterType] {
		if o := r.(*clusterv3.Cluster).GetUpstreamBindConfig().GetSocketOptions(); len(o) != 1 || o[0].GetIntValue() != 0x5e7a {
			t.Errorf("cluster %s: upstream not marked", resourceName(r))
		}
	}
	for _, w := range warns {
		t.Errorf("Envoy profile warning: %s", w)
	}
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource(res))
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatal(err)
	}
	names := func(typ string) []string {
		var out []string
		for _, r := range res[typ] {
			out = append(out, resourceName(r))
		}
		return out
	}
	for typ, want := range map[string][]string{
		resource.ListenerType: {"front:127.0.0.1:8081", "front:127.0.0.1:8082", "inbound:127.0.0.1:9000", "sextant-http", OutboundListener},
		resource.RouteType:    {"front/default/a", HostsRouteConfig},
		resource.ClusterType:  {"default/a", "default/b", "inbound:127.0.0.1:9000", PassthroughCluster},
		resource.EndpointType: {"default/a"},
	} {
		if got := names(typ); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", typ, got, want)
		}
	}
	// The hostname route carries every feature.
	var hosts *routev3.RouteConfiguration
	for _, r := range res[resource.RouteType] {
		if rc := r.(*routev3.RouteConfiguration); rc.Name == HostsRouteConfig {
			hosts = rc
		}
	}
	vh := hosts.VirtualHosts[0]
	if len(vh.Routes) != 2 {
		t.Fatalf("routes %v", vh.Routes)
	}
	// Exact paths go before prefixes (Gateway API precedence).
	old, api := vh.Routes[0], vh.Routes[1]
	if old.GetRedirect().GetSchemeRedirect() != "https" || old.GetRedirect().GetResponseCode() != routev3.RedirectAction_MOVED_PERMANENTLY {
		t.Errorf("redirect route %v", old)
	}
	a := api.GetRoute()
	checks := map[string]bool{
		"path separated prefix": api.GetMatch().GetPathSeparatedPrefix() == "/api",
		"method header":         api.GetMatch().GetHeaders()[0].GetName() == ":method",
		"query":                 api.GetMatch().GetQueryParameters()[0].GetName() == "debug",
		"split":                 len(a.GetWeightedClusters().GetClusters()) == 2,
		"request header set":    api.GetRequestHeadersToAdd()[0].GetHeader().GetKey() == "x-via",
		"request header remove": slices.Equal(api.GetRequestHeadersToRemove(), []string{"x-internal"}),
		"response header add":   api.GetResponseHeadersToAdd()[0].GetHeader().GetKey() == "x-served-by",
		"host rewrite":          a.GetHostRewriteLiteral() == "internal",
		"prefix rewrite":        a.GetPrefixRewrite() == "/v2",
		"mirror":                a.GetRequestMirrorPolicies()[0].GetCluster() == "default/b",
		"timeout":               a.GetTimeout().AsDuration().Seconds() == 2,
		"per-try timeout":       a.GetRetryPolicy().GetPerTryTimeout().AsDuration().Milliseconds() == 500,
		"retry codes":           slices.Equal(a.GetRetryPolicy().GetRetriableStatusCodes(), []uint32{503, 404}),
		"retry on":              a.GetRetryPolicy().GetRetryOn() == "retriable-status-codes,unavailable",
		"retries":               a.GetRetryPolicy().GetNumRetries().GetValue() == 3,
		"hash policy":           a.GetHashPolicy()[0].GetHeader().GetHeaderName() == "x-user",
		"fault per route":       api.GetTypedPerFilterConfig()[faultFilter] != nil,
		"rate limit per route":  api.GetTypedPerFilterConfig()[rateLimitFilter] != nil,
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("Envoy route lacks %s: %v", what, api)
		}
	}
	for _, r := range res[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); l.Name == OutboundListener && !l.GetUseOriginalDst().GetValue() {
			t.Error("outbound listener does not hand connections to their original destination")
		}
	}
}

// The gRPC profile leaves out what grpc-go cannot honour, each with a
// warning at the field's file:line.
func TestGRPCProfileWarnsForWhatItCannotExpress(t *testing.T) {
	// Without the query match (which drops the whole route for gRPC), so
	// that the route's other features get their warnings too.
	doc := strings.Replace(everything, "      queryParams: [{name: debug, value: \"1\"}]\n", "", 1)
	res, warns, err := Translate(parse(t, doc), nil, GRPC, Options{AuditSink: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.At+" "+w.Feature)
	}
	lineOf := func(text string) string {
		for i, l := range strings.Split(doc, "\n") {
			if strings.Contains(l, text) {
				return fmt.Sprintf("in.yaml:%d", i+1)
			}
		}
		t.Fatalf("%q not in the input", text)
		return ""
	}
	want := []string{
		lineOf("backendRequest") + " backendRequest", lineOf("retry: {codes") + " retry.codes",
		lineOf("type: RequestRedirect") + " RequestRedirect", lineOf("type: RequestHeaderModifier") + " RequestHeaderModifier",
		lineOf("type: ResponseHeaderModifier") + " ResponseHeaderModifier", lineOf("type: URLRewrite") + " URLRewrite",
		lineOf("type: RequestMirror") + " RequestMirror", lineOf("localRateLimit") + " localRateLimit",
		lineOf("path: {type: PathPrefix") + " PathPrefix", lineOf("consecutive5xx") + " consecutive5xx",
		lineOf("circuitBreaker") + " maxConnections", lineOf("circuitBreaker") + " maxPendingRequests", lineOf("circuitBreaker") + " maxRetries",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("no warning %q; got %v", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d warnings, want %d (each once): %v", len(got), len(want), got)
	}
	// The query match alone: the route is left out, with a warning.
	_, warns, _ = Translate(parse(t, everything), nil, GRPC, Options{})
	if !slices.ContainsFunc(warns, func(w Warning) bool { return w.Feature == "queryParams" && strings.Contains(w.Msg, "left out") }) {
		t.Errorf("no queryParams warning: %v", warns)
	}
	for _, w := range warns {
		if w.Profile != GRPC || !strings.HasPrefix(w.At, "in.yaml:") {
			t.Errorf("warning %+v", w)
		}
	}
	// api_listeners per front with inline routes, a server listener
	// with RBAC for the L7 policy.
	var names []string
	for _, r := range res[resource.ListenerType] {
		names = append(names, resourceName(r))
	}
	if want := []string{"default/a", "echo.test", ServerListenerName(mustAddrPort("127.0.0.1:9000")), "web.test"}; !slices.Equal(names, want) {
		t.Errorf("gRPC listeners %v, want %v", names, want)
	}
}

func TestRedirectsNameFronts(t *testing.T) {
	r := Redirects(parse(t, everything))
	if len(r) != 2 || r[mustAddrPort("127.0.0.1:8081")] != "default/a" || r[mustAddrPort("127.0.0.1:8082")] != "default/a" {
		t.Errorf("redirects %v", r)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
