package xds

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/proxy/config"
)

// ads is the config source "this same ADS stream": grpc-go accepts ADS
// (or self) for EDS and RDS only.
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func (t *translation) clusters() error {
	for _, b := range t.set.Backends {
		name := clusterName(b)
		c := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(5 * time.Second)}
		if d := b.Obj.Spec.DNS; d != nil {
			typ := clusterv3.Cluster_STRICT_DNS
			if t.profile == GRPC {
				typ = clusterv3.Cluster_LOGICAL_DNS // grpc-go resolves LOGICAL_DNS only
			}
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
			c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LoadBalancingWeight: wrapperspb.UInt32(1), Locality: locality,
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(d.Hostname, uint32(d.Port), 1)},
			}}}
		} else {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
			c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name}
			cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
			// grpc-go ignores locality entries without a weight.
			// grpc-go rejects an EDS locality without an ID.
			loc := &endpointv3.LocalityLbEndpoints{LoadBalancingWeight: wrapperspb.UInt32(1), Locality: locality}
			for _, e := range b.Obj.Spec.Endpoints {
				loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(e.Address, uint32(e.Port), ptr(e.Weight, 1)))
			}
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
			if err := t.add(resource.EndpointType, cla, b.At("spec.endpoints")); err != nil {
				return err
			}
		}
		for _, p := range t.policiesFor(config.TargetBackend, b.Obj.Namespace, b.Obj.Name) {
			t.backendPolicy(c, p)
		}
		if err := t.add(resource.ClusterType, c, b.String()); err != nil {
			return err
		}
	}
	if t.profile == Envoy {
		passthrough := &clusterv3.Cluster{Name: PassthroughCluster, ConnectTimeout: durationpb.New(5 * time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED}
		if err := t.add(resource.ClusterType, passthrough, "generated"); err != nil {
			return err
		}
	}
	return nil
}

// locality is the one locality of every backend (the node's).
var locality = &corev3.Locality{Region: "sextant", Zone: "node"}

func lbEndpoint(addr string, port, weight uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(addr, port)}},
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
}

func socketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func (t *translation) backendPolicy(c *clusterv3.Cluster, p config.Doc[*config.TrafficPolicy]) {
	sp := p.Obj.Spec
	if o := sp.OutlierDetection; o != nil {
		od := &clusterv3.OutlierDetection{
			// Envoy and grpc-go enable success-rate and consecutive-5xx
			// ejection by default (enforcing = 100): only what the policy
			// asks for is enforced.
			EnforcingSuccessRate:               wrapperspb.UInt32(0),
			EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
			EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
		}
		if o.Interval != nil {
			d, _ := config.ParseDuration(*o.Interval)
			od.Interval = durationpb.New(d)
		}
		if o.BaseEjectionTime != nil {
			d, _ := config.ParseDuration(*o.BaseEjectionTime)
			od.BaseEjectionTime = durationpb.New(d)
		}
		if o.MaxEjectionPercent != nil {
			od.MaxEjectionPercent = wrapperspb.UInt32(*o.MaxEjectionPercent)
		}
		if o.Consecutive5xx != nil {
			if t.profile == GRPC {
				t.warn(p.At("spec.outlierDetection.consecutive5xx"), "consecutive5xx", "grpc-go implements success-rate and failure-percentage ejection only")
			} else {
				od.Consecutive_5Xx = wrapperspb.UInt32(*o.Consecutive5xx)
				od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
			}
		}
		if f := o.FailurePercentage; f != nil {
			od.FailurePercentageThreshold = wrapperspb.UInt32(f.Threshold)
			od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			if f.MinimumHosts != nil {
				od.FailurePercentageMinimumHosts = wrapperspb.UInt32(*f.MinimumHosts)
			}
			if f.RequestVolume != nil {
				od.FailurePercentageRequestVolume = wrapperspb.UInt32(*f.RequestVolume)
			}
		}
		if s := o.SuccessRate; s != nil {
			od.EnforcingSuccessRate = wrapperspb.UInt32(100)
			if s.StdevFactor != nil {
				od.SuccessRateStdevFactor = wrapperspb.UInt32(*s.StdevFactor)
			}
			if s.MinimumHosts != nil {
				od.SuccessRateMinimumHosts = wrapperspb.UInt32(*s.MinimumHosts)
			}
			if s.RequestVolume != nil {
				od.SuccessRateRequestVolume = wrapperspb.UInt32(*s.RequestVolume)
			}
		}
		c.OutlierDetection = od
	}
	if cb := sp.CircuitBreaker; cb != nil {
		th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
		if cb.MaxRequests != nil {
			th.MaxRequests = wrapperspb.UInt32(*cb.MaxRequests)
		}
		others := map[string]*uint32{"maxConnections": cb.MaxConnections, "maxPendingRequests": cb.MaxPendingRequests, "maxRetries": cb.MaxRetries}
		for f, v := range others {
			if v == nil {
				continue
			}
			if t.profile == GRPC {
				t.warn(p.At("spec.circuitBreaker."+f), f, "grpc-go honours maxRequests only")
				continue
			}
			switch f {
			case "maxConnections":
				th.MaxConnections = wrapperspb.UInt32(*v)
			case "maxPendingRequests":
				th.MaxPendingRequests = wrapperspb.UInt32(*v)
			case "maxRetries":
				th.MaxRetries = wrapperspb.UInt32(*v)
			}
		}
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if lb := sp.LoadBalancer; lb != nil {
		switch lb.Policy {
		case "RingHash":
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			if lb.MinimumRingSize != nil {
				c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(*lb.MinimumRingSize)}}
			}
		case "LeastRequest":
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		case "Random":
			if t.profile == GRPC {
				t.warn(p.At("spec.loadBalancer.policy"), "Random", "grpc-go has no random load balancing: round robin")
			} else {
				c.LbPolicy = clusterv3.Cluster_RANDOM
			}
		}
	}
}
