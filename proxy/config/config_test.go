package config

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const backends = `apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: echo-a}
spec:
  endpoints: [{address: 127.0.0.1, port: 50051}]
---
apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: echo-b}
spec:
  dns: {hostname: echo-b.local, port: 50052}
`

const goodRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  hostnames: [echo]
  rules:
  - matches:
    - method: {service: echo.Echo, method: Ping}
      headers: [{name: x-canary, value: "yes"}]
    backendRefs:
    - {name: echo-b, port: 50052}
  - backendRefs:
    - {name: echo-a, port: 50051, weight: 90}
    - {name: echo-b, port: 50052, weight: 10}
---
apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: echo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo}]
  retry: {on: [unavailable], attempts: 2, backoff: 10ms}
  fault: {abort: {percent: 10, grpcStatus: 14}}
`

func TestParseGood(t *testing.T) {
	s, err := Parse(map[string][]byte{"backends.yaml": []byte(backends), "routes.yaml": []byte(goodRoute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Summary(); got != "1 GRPCRoute, 2 Backend, 1 TrafficPolicy" {
		t.Errorf("summary %q", got)
	}
	if at := s.GRPCRoutes[0].At("spec.rules[1].backendRefs[1].weight"); at != "routes.yaml:14" {
		t.Errorf("line of weight: %s", at)
	}
}

// Every bad input is rejected with file:line and the field's path.
func TestParseBad(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown field", `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  hostnames: [echo]
  rules:
  - backendRefs: [{name: echo-a}]
    retries: 3
`, `bad.yaml:8: spec.rules[0].retries: unknown field`},
		{"wrong type", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  hostnames: [web]
  rules:
  - backendRefs: [{name: echo-a, weight: heavy}]
`, `bad.yaml:7: spec.rules[0].backendRefs[0].weight`},
		{"duplicate key", `apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: x}
spec:
  endpoints: [{address: 127.0.0.1, port: 1}]
  endpoints: [{address: 127.0.0.1, port: 2}]
`, `bad.yaml:6: spec.endpoints: duplicate field`},
		{"missing backend", `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  hostnames: [echo]
  rules:
  - backendRefs:
    - {name: echo-a}
    - {name: nowhere}
`, `bad.yaml:9: spec.rules[0].backendRefs[1]: no Backend default/nowhere`},
		{"bad duration", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  hostnames: [web]
  rules:
  - backendRefs: [{name: echo-a}]
    timeouts: {request: 1.5s}
`, `bad.yaml:8: spec.rules[0].timeouts.request: not a duration`},
		{"policy on wrong target", `apiVersion: proxy.sextant.io/v1alpha1
kind: TrafficPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: proxy.sextant.io, kind: Backend, name: echo-a}]
  fault: {delay: {percent: 5, fixedDelay: 1s}}
`, `bad.yaml:6: spec.fault: does not apply to a Backend target`},
		{"bad regexp", `apiVersion: proxy.sextant.io/v1alpha1
kind: L7Policy
metadata: {name: p}
spec:
  servers: [127.0.0.1:50051]
  http:
  - {method: POST, path: "/echo.Echo/(Ping"}
`, `bad.yaml:7: spec.http[0].path: bad regular expression`},
		{"unsupported L7 field", `apiVersion: proxy.sextant.io/v1alpha1
kind: L7Policy
metadata: {name: p}
spec:
  servers: [127.0.0.1:50051]
  http:
  - headerMatches: [{name: x, secret: {name: s}}]
`, `bad.yaml:7: spec.http[0].headerMatches[0].secret: unknown field`},
		{"unknown kind", `apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: x}
`, `bad.yaml:2: kind: unsupported kind`},
		{"yaml syntax", "apiVersion: [\n", `bad.yaml:1: yaml: line 1:`},
		{"envoy unknown field", `apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: c
    connectTimeout: 1s
    lbPolicyy: ROUND_ROBIN
`, `bad.yaml:9: spec.resources[0].lbPolicyy: unknown field (in envoy.config.cluster.v3.Cluster)`},
		{"envoy unknown field inside Any", `apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: l
    filterChains:
    - filters:
      - name: hcm
        typedConfig:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          statPrefixx: x
`, `bad.yaml:13: spec.resources[0].filterChains[0].filters[0].typedConfig.statPrefixx: unknown field`},
		{"envoy invalid typed config", `apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: l
    filterChains:
    - filters:
      - name: hcm
        typedConfig:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          rds: {routeConfigName: r}
`, `invalid HttpConnectionManager.StatPrefix`},
		{"envoy type not servable", `apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`, `bad.yaml:6: spec.resources[0].@type: envoy.extensions.filters.http.router.v3.Router cannot be served`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(map[string][]byte{"backends.yaml": []byte(backends), "bad.yaml": []byte(tc.file)})
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

func TestEnvoyResourcesDecoded(t *testing.T) {
	s, err := Parse(map[string][]byte{"raw.yaml": []byte(`apiVersion: cilium.io/v2
kind: CiliumEnvoyConfig
metadata: {name: raw}
spec:
  resources:
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: raw-cluster
    connect_timeout: 1s
    type: STATIC
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: raw-listener
    address: {socketAddress: {address: 127.0.0.1, portValue: 15009}}
    filterChains:
    - filters:
      - name: hcm
        typedConfig:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          statPrefix: raw
          rds: {routeConfigName: r, configSource: {ads: {}}}
`)})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := s.EnvoyResources[0].Obj.(*clusterv3.Cluster)
	if !ok || c.GetName() != "raw-cluster" || c.GetConnectTimeout().AsDuration().Seconds() != 1 {
		t.Errorf("cluster %v", s.EnvoyResources[0].Obj)
	}
	l := s.EnvoyResources[1].Obj.(*listenerv3.Listener)
	var hcm hcmv3.HttpConnectionManager
	if err := anypb.UnmarshalTo(l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &hcm, proto.UnmarshalOptions{}); err != nil || hcm.GetStatPrefix() != "raw" {
		t.Errorf("hcm %v %v", &hcm, err)
	}
}
