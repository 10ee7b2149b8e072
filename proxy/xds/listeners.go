package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// frontListeners: gRPC gets one api_listener per front with its route
// configuration inline (go-control-plane's consistency check does not
// follow api_listener RDS names, and inline saves a round trip); Envoy
// gets RDS route configurations, a listener per redirected address
// (reached through the outbound listener's original destination) and
// one HTTP listener for hostname routes.
func (t *translation) frontListeners(fronts []*front) error {
	var hostVHosts []*routev3.VirtualHost
	for _, f := range fronts {
		var routes []*routev3.Route
		for _, e := range f.entries {
			if r, ok := t.route(e); ok {
				routes = append(routes, r)
			}
		}
		vh := &routev3.VirtualHost{Name: f.name, Domains: []string{"*"}, Routes: routes}
		at := "front " + f.name
		if len(f.entries) > 0 {
			at = f.entries[0].origin.String()
		}
		if t.profile == GRPC {
			rc := &routev3.RouteConfiguration{Name: f.name, VirtualHosts: []*routev3.VirtualHost{vh}}
			hcm := t.hcm(routes, false)
			hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
			l := &listenerv3.Listener{Name: f.name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)}}
			if err := t.add(resource.ListenerType, l, at); err != nil {
				return err
			}
			continue
		}
		if f.byHost {
			vh.Domains = []string{f.name, f.name + ":*"}
			hostVHosts = append(hostVHosts, vh)
			continue
		}
		rcName := "front/" + f.name
		if err := t.add(resource.RouteType, &routev3.RouteConfiguration{Name: rcName, VirtualHosts: []*routev3.VirtualHost{vh}}, at); err != nil {
			return err
		}
		for _, a := range f.addrs {
			hcm := t.hcm(routes, true)
			hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rcName, ConfigSource: ads()}}
			if err := t.add(resource.ListenerType, envoyListener("front:"+a.String(), a, false, hcm), at); err != nil {
				return err
			}
		}
	}
	if t.profile != Envoy {
		return nil
	}
	var allRoutes []*routev3.Route
	for _, vh := range hostVHosts {
		allRoutes = append(allRoutes, vh.Routes...)
	}
	if err := t.add(resource.RouteType, &routev3.RouteConfiguration{Name: HostsRouteConfig, VirtualHosts: hostVHosts}, "generated"); err != nil {
		return err
	}
	hcm := t.hcm(allRoutes, true)
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: HostsRouteConfig, ConfigSource: ads()}}
	if err := t.add(resource.ListenerType, envoyListener("sextant-http", t.opt.EnvoyHTTP, true, hcm), "generated"); err != nil {
		return err
	}
	// Every redirected connection lands here; the original destination
	// (restored by the redirect's SO_ORIGINAL_DST answer) picks the front
	// listener, and what no front claims passes through unchanged.
	outbound := &listenerv3.Listener{
		Name:           OutboundListener,
		Address:        socketAddress(t.opt.EnvoyOutbound.Addr().String(), uint32(t.opt.EnvoyOutbound.Port())),
		UseOriginalDst: wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&origdstv3.OriginalDst{})}}},
		DefaultFilterChain: &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{StatPrefix: statPrefix,
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: PassthroughCluster}})}}}},
	}
	return t.add(resource.ListenerType, outbound, "generated")
}

func envoyListener(name string, a netip.AddrPort, bind bool, hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:       name,
		Address:    socketAddress(a.Addr().String(), uint32(a.Port())),
		BindToPort: wrapperspb.Bool(bind),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}}}},
	}
}

// hcm is the connection manager for routes: the fault filter when a
// route injects faults, the rate limit filter (Envoy) when one limits,
// the router last; Envoy's sends access logs to sextant.
func (t *translation) hcm(routes []*routev3.Route, envoy bool) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{StatPrefix: statPrefix, CodecType: hcmv3.HttpConnectionManager_AUTO}
	uses := func(filter string) bool {
		return slices.ContainsFunc(routes, func(r *routev3.Route) bool { return r.TypedPerFilterConfig[filter] != nil })
	}
	if uses(faultFilter) {
		h.HttpFilters = append(h.HttpFilters, httpFilter(faultFilter, &faultv3.HTTPFault{}))
	}
	if envoy && uses(rateLimitFilter) {
		h.HttpFilters = append(h.HttpFilters, httpFilter(rateLimitFilter, &ratelimitv3.LocalRateLimit{StatPrefix: statPrefix}))
	}
	h.HttpFilters = append(h.HttpFilters, httpFilter(routerFilter, &routerv3.Router{}))
	if envoy {
		h.AccessLog = []*accesslogv3.AccessLog{accessLog()}
	}
	return h
}

func httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// accessLog sends every request's entry to sextant's ALS receiver (the
// bootstrap's static cluster ALSCluster).
func accessLog() *accesslogv3.AccessLog {
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.http_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{
		TypedConfig: mustAny(&grpcalsv3.HttpGrpcAccessLogConfig{CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName:             "sextant",
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService:         &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ALSCluster}}},
		}, AdditionalRequestHeadersToLog: []string{"content-type", "grpc-timeout"}, AdditionalResponseTrailersToLog: []string{"grpc-status", "grpc-message"}})}}
}

// serverListeners: a grpc-go xDS server asks for the listener of its
// address and serves only once it has one; its routes must be
// NonForwardingAction. L7 rules on the address become its RBAC filter.
// Envoy gets an inbound listener per L7-protected address.
func (t *translation) serverListeners() error {
	rules := t.rulesByServer()
	addrs := slices.Clone(t.opt.Servers)
	for a := range rules {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.AddrPort) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	for _, a := range addrs {
		rs := rules[a]
		if t.profile == Envoy {
			if len(rs) == 0 {
				continue
			}
			if err := t.envoyInbound(a, rs); err != nil {
				return err
			}
			continue
		}
		rc := &routev3.RouteConfiguration{Name: "server:" + a.String(), VirtualHosts: []*routev3.VirtualHost{{
			Name: "server", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			}}}}}
		h := &hcmv3.HttpConnectionManager{StatPrefix: statPrefix, RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}}
		if len(rs) > 0 {
			rb, err := t.rbac(a, rs)
			if err != nil {
				return err
			}
			h.HttpFilters = append(h.HttpFilters, httpFilter(rbacFilter, rb))
		}
		h.HttpFilters = append(h.HttpFilters, httpFilter(routerFilter, &routerv3.Router{}))
		l := &listenerv3.Listener{
			Name:    ServerListenerName(a),
			Address: socketAddress(a.Addr().String(), uint32(a.Port())),
			FilterChains: []*listenerv3.FilterChain{{Name: "server", Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}}}},
		}
		at := "server " + a.String()
		if len(rs) > 0 {
			at = rs[0].policy.String()
		}
		if err := t.add(resource.ListenerType, l, at); err != nil {
			return err
		}
	}
	return nil
}

// envoyInbound: connections to a protected server are redirected to
// Envoy, which applies the RBAC filter and forwards to the server.
func (t *translation) envoyInbound(a netip.AddrPort, rs []serverRule) error {
	name := "inbound:" + a.String()
	c := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(5 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(a.Addr().String(), uint32(a.Port()), 1)}}}}}
	if err := t.add(resource.ClusterType, c, rs[0].policy.String()); err != nil {
		return err
	}
	rb, err := t.rbac(a, rs)
	if err != nil {
		return err
	}
	h := &hcmv3.HttpConnectionManager{StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
			Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
			}}}}}},
		HttpFilters: []*hcmv3.HttpFilter{httpFilter(rbacFilter, rb), httpFilter(routerFilter, &routerv3.Router{})},
		AccessLog:   []*accesslogv3.AccessLog{accessLog()},
	}
	return t.add(resource.ListenerType, envoyListener(name, a, false, h), fmt.Sprint(rs[0].policy))
}
