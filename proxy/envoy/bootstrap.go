// Package envoy runs the node Envoy on demand: a bootstrap that points
// it at the agent's xDS server and access log service over unix sockets
// (admin on a unix socket too: no port on the host), and a launcher that
// finds the binary (--envoy PATH or envoy on PATH), waits for readiness
// and restarts it with backoff. Without a binary there is a clear error
// and nothing is redirected to Envoy.
package envoy

import (
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sextant/sextant/proxy/config"
	"github.com/sextant/sextant/proxy/xds"
)

// BootstrapOptions name the node and the sockets.
type BootstrapOptions struct {
	NodeID      string // the xDS node id (default "sextant-envoy")
	Cluster     string // Envoy's service cluster (default "sextant")
	XDSSocket   string // the agent's xDS server
	ALSSocket   string // the agent's access log service
	AdminSocket string // Envoy's admin interface
}

const xdsCluster = "sextant-xds"

// Bootstrap builds and validates the bootstrap.
func Bootstrap(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" {
		o.NodeID = "sextant-envoy"
	}
	if o.Cluster == "" {
		o.Cluster = "sextant"
	}
	for name, p := range map[string]string{"xDS": o.XDSSocket, "ALS": o.ALSSocket, "admin": o.AdminSocket} {
		if p == "" {
			return nil, fmt.Errorf("envoy bootstrap: no %s socket", name)
		}
	}
	meta, err := structpb.NewStruct(map[string]any{xds.ProfileMetadataKey: "envoy"})
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Cluster, Metadata: meta},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices:        []*corev3.GrpcService{envoyGRPC(xdsCluster)},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{
			pipeCluster(xdsCluster, o.XDSSocket),
			pipeCluster(xds.ALSCluster, o.ALSSocket),
		}},
		Admin: &bootstrapv3.Admin{Address: pipe(o.AdminSocket)},
	}
	if err := config.ValidateResource(b); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

// BootstrapJSON is the bootstrap as Envoy reads it (-c file.json).
func BootstrapJSON(o BootstrapOptions) ([]byte, error) {
	b, err := Bootstrap(o)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{Multiline: true}.Marshal(b)
}

func envoyGRPC(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}

func pipe(path string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
}

// pipeCluster is an HTTP/2 cluster of one unix socket (gRPC needs h2).
func pipeCluster(name, path string) *clusterv3.Cluster {
	h2, _ := anypb.New(&upstreamhttpv3.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: pipe(path)}}}},
		}}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
	}
}
