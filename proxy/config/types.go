package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Group is the API group of sextant's own kinds: what Gateway API and
// CiliumNetworkPolicy do not say (backends, traffic policies, L7 rules).
const (
	Group      = "proxy.sextant.io"
	APIVersion = Group + "/v1alpha1"
)

// Backend is a set of endpoints routes send traffic to: static
// addresses or one DNS name (Kubernetes Services come later through the
// same name). A route's backendRef names a Backend (kind Backend, group
// proxy.sextant.io; kind Service is accepted as the same thing, so that
// routes written for a cluster work unchanged). A route whose parentRef
// names a Backend manages the traffic clients send to that backend's
// addresses (the GAMMA "route attached to a Service" model): that is
// the traffic the node redirects to its proxy.
type Backend struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              BackendSpec `json:"spec"`
}

type BackendSpec struct {
	// Endpoints are static addresses (IP and port). Exactly one of
	// Endpoints and DNS is set.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// DNS is a name resolved by the proxy (Envoy STRICT_DNS, gRPC
	// LOGICAL_DNS).
	DNS *DNSEndpoint `json:"dns,omitempty"`
}

type Endpoint struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
	// Weight is the endpoint's load-balancing weight (default 1).
	Weight *uint32 `json:"weight,omitempty"`
}

type DNSEndpoint struct {
	Hostname string `json:"hostname"`
	Port     int32  `json:"port"`
}

// TrafficPolicy holds what Gateway API has no standard field for. Each
// feature applies to a kind of target: outlierDetection, circuitBreaker
// and loadBalancer to Backends; localRateLimit, fault, retry and timeout
// to routes (HTTPRoute, GRPCRoute). A feature on the wrong kind of
// target is an error.
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              TrafficPolicySpec `json:"spec"`
}

type TrafficPolicySpec struct {
	TargetRefs       []gwv1.LocalPolicyTargetReference `json:"targetRefs"`
	LocalRateLimit   *LocalRateLimit                   `json:"localRateLimit,omitempty"`
	OutlierDetection *OutlierDetection                 `json:"outlierDetection,omitempty"`
	CircuitBreaker   *CircuitBreaker                   `json:"circuitBreaker,omitempty"`
	Fault            *Fault                            `json:"fault,omitempty"`
	LoadBalancer     *LoadBalancer                     `json:"loadBalancer,omitempty"`
	Retry            *Retry                            `json:"retry,omitempty"`
	Timeout          *Timeout                          `json:"timeout,omitempty"`
}

// LocalRateLimit is a token bucket per proxy: MaxTokens, refilled with
// TokensPerFill every FillInterval. Requests finding it empty get 429
// (gRPC: UNAVAILABLE).
type LocalRateLimit struct {
	MaxTokens     uint32        `json:"maxTokens"`
	TokensPerFill *uint32       `json:"tokensPerFill,omitempty"` // default 1
	FillInterval  gwv1.Duration `json:"fillInterval"`
}

// OutlierDetection ejects endpoints that fail. Consecutive5xx counts
// consecutive errors (gRPC: ignored by grpc-go, which implements only
// the two ratio algorithms below).
type OutlierDetection struct {
	Interval           *gwv1.Duration     `json:"interval,omitempty"`         // default 10s
	BaseEjectionTime   *gwv1.Duration     `json:"baseEjectionTime,omitempty"` // default 30s
	MaxEjectionPercent *uint32            `json:"maxEjectionPercent,omitempty"`
	Consecutive5xx     *uint32            `json:"consecutive5xx,omitempty"`
	FailurePercentage  *FailurePercentage `json:"failurePercentage,omitempty"`
	SuccessRate        *SuccessRate       `json:"successRate,omitempty"`
}

type FailurePercentage struct {
	Threshold     uint32  `json:"threshold"` // percent of failed requests that ejects
	MinimumHosts  *uint32 `json:"minimumHosts,omitempty"`
	RequestVolume *uint32 `json:"requestVolume,omitempty"`
}

type SuccessRate struct {
	StdevFactor   *uint32 `json:"stdevFactor,omitempty"` // in thousandths (1900 = 1.9)
	MinimumHosts  *uint32 `json:"minimumHosts,omitempty"`
	RequestVolume *uint32 `json:"requestVolume,omitempty"`
}

// CircuitBreaker bounds what the proxy keeps in flight to a backend.
type CircuitBreaker struct {
	MaxRequests        *uint32 `json:"maxRequests,omitempty"`
	MaxConnections     *uint32 `json:"maxConnections,omitempty"`
	MaxPendingRequests *uint32 `json:"maxPendingRequests,omitempty"`
	MaxRetries         *uint32 `json:"maxRetries,omitempty"`
}

// Fault injects errors and delays into a route's requests.
type Fault struct {
	Abort *FaultAbort `json:"abort,omitempty"`
	Delay *FaultDelay `json:"delay,omitempty"`
	// MaxActiveFaults bounds faults in effect at once.
	MaxActiveFaults *uint32 `json:"maxActiveFaults,omitempty"`
}

type FaultAbort struct {
	Percent    uint32  `json:"percent"`
	HTTPStatus *uint32 `json:"httpStatus,omitempty"`
	GRPCStatus *uint32 `json:"grpcStatus,omitempty"`
}

type FaultDelay struct {
	Percent    uint32        `json:"percent"`
	FixedDelay gwv1.Duration `json:"fixedDelay"`
}

// LoadBalancer picks the backend's load-balancing policy.
type LoadBalancer struct {
	// Policy: RoundRobin (default), LeastRequest, RingHash, Random.
	Policy string `json:"policy"`
	// HashHeader: RingHash hashes this request header (routes sending to
	// the backend get the hash policy).
	HashHeader      string  `json:"hashHeader,omitempty"`
	MinimumRingSize *uint64 `json:"minimumRingSize,omitempty"`
}

// Retry is GEP-1731 for GRPCRoute (which has no retry field) and an
// override for HTTPRoute: On lists gRPC status names (unavailable,
// cancelled, deadline-exceeded, internal, resource-exhausted) and,
// for Envoy, any of its retry_on conditions.
type Retry struct {
	On       []string       `json:"on"`
	Attempts *uint32        `json:"attempts,omitempty"` // retries after the first try
	Backoff  *gwv1.Duration `json:"backoff,omitempty"`
}

// Timeout bounds a whole stream (GRPCRoute has no timeouts field).
type Timeout struct {
	Request gwv1.Duration `json:"request"`
}

// L7Policy is the proxy's input from the policy stage: the HTTP rules of
// CiliumNetworkPolicy toPorts[].rules.http that select the servers
// listening on Servers. A request that matches no rule is denied (Cilium:
// once L7 rules select a port, only what they allow passes).
type L7Policy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              L7PolicySpec `json:"spec"`
}

type L7PolicySpec struct {
	// Servers are the listening addresses (IP:port) of the servers the
	// rules protect.
	Servers []string   `json:"servers"`
	HTTP    []HTTPRule `json:"http"`
}

// HTTPRule mirrors Cilium's api.PortRuleHTTP (same JSON names), so that
// the policy stage feeds its parsed rules unchanged. Method, Path and
// Host are extended regular expressions matched against the whole value
// (Cilium's semantics; RE2 syntax here). Headers are "Name" (present) or
// "Name: value" (exact). gRPC is written as method POST and path
// /pkg.Service/Method.
type HTTPRule struct {
	Method        string        `json:"method,omitempty"`
	Path          string        `json:"path,omitempty"`
	Host          string        `json:"host,omitempty"`
	Headers       []string      `json:"headers,omitempty"`
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
}

// HeaderMatch is Cilium's HeaderMatch without mismatch actions and
// secrets (rejected: the proxy cannot rewrite headers on a deny path).
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// CiliumEnvoyConfig is the part of cilium.io/v2 CiliumEnvoyConfig the
// proxy serves: raw Envoy resources, each with its "@type".
type CiliumEnvoyConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Resources []map[string]any `json:"resources"`
	} `json:"spec"`
}
