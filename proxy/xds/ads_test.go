package xds_test

import (
	"context"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

// An ADS stream as Envoy opens it (user agent "envoy", wildcard CDS and
// LDS, ACKs): the node gets the Envoy profile from the ordered ADS
// cache, and its ACKs show in the status. What Envoy then does with the
// resources needs Envoy (docs/proxy.md).
func TestEnvoyNodeGetsEnvoyProfileOverADS(t *testing.T) {
	cp := xdstest.StartControlPlane(t, pxds.Options{})
	a := xdstest.StartBackend(t, "ads-a", nil)
	cp.Apply(t, backendDoc(a)+`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: ads-a}]
  rules:
  - backendRefs: [{name: ads-a}]
`)
	cc, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", UserAgentName: "envoy"}
	fetch := func(typ string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
		resp, err := ads.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var clusters []string
	for _, r := range fetch(resource.ClusterType).GetResources() {
		var c clusterv3.Cluster
		if err := r.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, c.GetName())
	}
	var listeners []string
	for _, r := range fetch(resource.ListenerType).GetResources() {
		var l listenerv3.Listener
		if err := r.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l.GetName())
	}
	slices.Sort(clusters)
	slices.Sort(listeners)
	if want := []string{"default/ads-a", pxds.PassthroughCluster}; !slices.Equal(clusters, want) {
		t.Errorf("clusters %v, want %v", clusters, want)
	}
	if want := []string{"front:" + a.Addr.String(), "sextant-http", pxds.OutboundListener}; !slices.Equal(listeners, want) {
		t.Errorf("listeners %v, want %v", listeners, want)
	}
	known := func(want func(pxds.NodeStatus) bool) bool {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, n := range cp.Status().Nodes {
				if want(n) {
					return true
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !known(func(n pxds.NodeStatus) bool {
		return n.ID == "envoy-1" && n.Profile == "envoy" && n.Acked["listener"] == n.Version && n.Acked["cluster"] == n.Version && n.Streams == 1
	}) {
		t.Errorf("status does not show the Envoy node's ACKs: %+v", cp.Status().Nodes)
	}
	// Gone with its stream.
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for len(cp.Status().Nodes) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nodes := cp.Status().Nodes; len(nodes) > 0 {
		t.Errorf("nodes after the stream closed: %+v", nodes)
	}
}
