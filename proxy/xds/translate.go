// Package xds turns the proxy's inputs (proxy/config) into xDS resources
// and serves them with go-control-plane: one translation with a profile
// per consumer (Envoy: every feature; gRPC: what grpc-go's xDS client and
// server honour), immutable versioned snapshots per node, NACKs logged
// and counted, a bad input rejected while the last good snapshot keeps
// being served.
package xds

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sextant/sextant/proxy/config"
)

// Profile is the kind of xDS consumer a translation is for.
type Profile uint8

const (
	// Envoy gets every feature.
	Envoy Profile = iota + 1
	// GRPC gets what grpc-go (and grpc-js) honour: api_listeners with
	// inline route configurations, server listeners for xDS servers.
	GRPC
)

func (p Profile) String() string {
	switch p {
	case Envoy:
		return "envoy"
	case GRPC:
		return "grpc"
	}
	return "unknown"
}

// Warning is a feature of an input that a profile cannot express: the
// translation leaves it out and says so, never silently.
type Warning struct {
	Profile Profile
	At      string // file:line of the field
	Feature string
	Msg     string
}

func (w Warning) String() string {
	return fmt.Sprintf("%s: %s profile: %s: %s", w.At, w.Profile, w.Feature, w.Msg)
}

// Options are the node facts the translation needs.
type Options struct {
	// EnvoyOutbound is where the redirect sends connections for Envoy
	// (default 127.0.0.1:15001).
	EnvoyOutbound netip.AddrPort
	// EnvoyHTTP is Envoy's listener for routes selected by hostname
	// (default 127.0.0.1:15080).
	EnvoyHTTP netip.AddrPort
	// Servers are xDS gRPC servers that need a server listener even when
	// no L7 policy selects them (the forwarder's downstream side).
	Servers []netip.AddrPort
	// UpstreamMark is the SO_MARK of Envoy's upstream connections, so
	// that the connect-time redirect lets them through (0: none).
	UpstreamMark uint32
	// AuditSink names the access.Sink that gRPC servers' RBAC audit
	// events go to ("" = no audit logging).
	AuditSink string
}

func (o Options) withDefaults() Options {
	if !o.EnvoyOutbound.IsValid() {
		o.EnvoyOutbound = netip.MustParseAddrPort("127.0.0.1:15001")
	}
	if !o.EnvoyHTTP.IsValid() {
		o.EnvoyHTTP = netip.MustParseAddrPort("127.0.0.1:15080")
	}
	return o
}

// Resources are one profile's xDS resources by type URL.
type Resources map[resource.Type][]types.Resource

// Names of well-known resources in the generated configuration.
const (
	// ALSCluster is the bootstrap's static cluster of the access log
	// service (proxy/envoy).
	ALSCluster = "sextant-als"
	// OutboundListener receives every redirected connection (Envoy).
	OutboundListener = "sextant-outbound"
	// PassthroughCluster forwards connections no front claims to their
	// original destination (Envoy).
	PassthroughCluster = "sextant-passthrough"
	// HostsRouteConfig holds the virtual hosts of hostname routes (Envoy).
	HostsRouteConfig = "sextant-hosts"
	statPrefix       = "sextant"
)

// ServerListenerName is the listener a grpc-go xDS server listening on
// addr asks for (its bootstrap's server_listener_resource_name_template).
func ServerListenerName(addr netip.AddrPort) string {
	return "grpc/server?xds.resource.listening_address=" + addr.String()
}

// ServerListenerTemplate is the template to put in gRPC bootstraps.
const ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// translation is one run of Translate.
type translation struct {
	set      *config.Set
	l7       []config.Doc[*config.L7Policy]
	profile  Profile
	opt      Options
	warnings []Warning
	out      Resources
	names    map[string]string // type/name → where defined, to reject clashes
}

// Translate builds profile's resources from the inputs. Every resource is
// validated (typed configs inside Any too) before it is returned; an
// error means nothing of this input can be served.
func Translate(set *config.Set, l7 []config.Doc[*config.L7Policy], p Profile, opt Options) (Resources, []Warning, error) {
	t := &translation{set: set, l7: append(slices.Clone(set.L7Policies), l7...), profile: p, opt: opt.withDefaults(), out: Resources{}, names: map[string]string{}}
	if err := t.run(); err != nil {
		return nil, t.warnings, err
	}
	for typ, rs := range t.out {
		slices.SortFunc(rs, func(a, b types.Resource) int { return cmp.Compare(resourceName(a), resourceName(b)) })
		for _, r := range rs {
			if err := config.ValidateResource(r); err != nil {
				return nil, t.warnings, fmt.Errorf("%s %s: %w", typ, resourceName(r), err)
			}
		}
	}
	return t.out, t.warnings, nil
}

// warn records a feature left out, once (a route attached to several
// fronts is translated once per front).
func (t *translation) warn(at, feature, format string, args ...any) {
	w := Warning{Profile: t.profile, At: at, Feature: feature, Msg: fmt.Sprintf(format, args...)}
	if !slices.Contains(t.warnings, w) {
		t.warnings = append(t.warnings, w)
	}
}

func (t *translation) add(typ resource.Type, r types.Resource, at string) error {
	key := typ + "/" + resourceName(r)
	if prev, ok := t.names[key]; ok {
		return fmt.Errorf("%s: %s %q is also defined at %s", at, typ, resourceName(r), prev)
	}
	t.names[key] = at
	t.out[typ] = append(t.out[typ], r)
	return nil
}

func (t *translation) run() error {
	if err := t.clusters(); err != nil {
		return err
	}
	fronts := t.fronts()
	if err := t.frontListeners(fronts); err != nil {
		return err
	}
	if err := t.serverListeners(); err != nil {
		return err
	}
	if t.profile == Envoy && t.opt.UpstreamMark != 0 {
		for _, r := range t.out[resource.ClusterType] {
			markUpstream(r.(*clusterv3.Cluster), t.opt.UpstreamMark)
		}
	}
	for _, r := range t.set.EnvoyResources {
		typ := typeURLOf(r.Obj)
		if err := t.add(typ, proto.Clone(r.Obj), r.String()); err != nil {
			return err
		}
	}
	return nil
}

// markUpstream sets SO_MARK on a cluster's connections before they
// connect (the redirect skips marked sockets: no loop back to Envoy).
func markUpstream(c *clusterv3.Cluster, mark uint32) {
	c.UpstreamBindConfig = &corev3.BindConfig{SocketOptions: []*corev3.SocketOption{{
		Description: "sextant: not redirected",
		Level:       1,  // SOL_SOCKET
		Name:        36, // SO_MARK
		Value:       &corev3.SocketOption_IntValue{IntValue: int64(mark)},
		State:       corev3.SocketOption_STATE_PREBIND,
	}}}
}

func typeURLOf(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

func resourceName(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if c, ok := r.(interface{ GetClusterName() string }); ok {
		return c.GetClusterName()
	}
	return ""
}

// Front is a set of addresses clients dial whose traffic routes manage:
// the static endpoints of a Backend that routes are attached to
// (parentRefs). The node redirects connections to them to its proxy.
type Front struct {
	Name  string // the xDS listener (gRPC: dialled as xds:///Name)
	Addrs []netip.AddrPort
	// GRPCOnly: only GRPCRoutes are attached, so the gRPC forwarder can
	// carry the traffic; otherwise (HTTPRoutes) it needs Envoy.
	GRPCOnly bool
}

// Fronts lists the redirected fronts of the inputs.
func Fronts(set *config.Set) []Front {
	t := &translation{set: set}
	var out []Front
	for _, f := range t.fronts() {
		if len(f.addrs) == 0 {
			continue
		}
		grpcOnly := true
		for _, e := range f.entries {
			grpcOnly = grpcOnly && e.kind == config.TargetGRPCRoute
		}
		out = append(out, Front{Name: f.name, Addrs: slices.Clone(f.addrs), GRPCOnly: grpcOnly})
	}
	return out
}

// Redirects maps each front address to its front name.
func Redirects(set *config.Set) map[netip.AddrPort]string {
	out := map[netip.AddrPort]string{}
	for _, f := range Fronts(set) {
		for _, a := range f.Addrs {
			out[a] = f.Name
		}
	}
	return out
}
