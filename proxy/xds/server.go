package xds

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sextant/sextant/proxy/config"
)

// ProfileMetadataKey in a node's metadata forces its profile ("envoy" or
// "grpc"); without it a node whose user agent is "envoy" is Envoy and
// every other node (grpc-go "gRPC Go", grpc-js "gRPC Node Pure JS") gRPC.
const ProfileMetadataKey = "sextant.io/profile"

// ProfileOf classifies a node.
func ProfileOf(n *corev3.Node) Profile {
	if v := n.GetMetadata().GetFields()[ProfileMetadataKey].GetStringValue(); v != "" {
		if v == "envoy" {
			return Envoy
		}
		return GRPC
	}
	if n.GetUserAgentName() == "envoy" {
		return Envoy
	}
	return GRPC
}

// Server is the agent's xDS control plane. Apply and ApplyL7 install new
// inputs; every node gets an immutable snapshot of its profile's
// resources at the new version. A rejected input changes nothing.
type Server struct {
	opt Options
	log *slog.Logger

	// Envoy streams are ADS with ordered updates (ads=true: a response
	// waits until every named resource exists); gRPC clients ask for
	// resources by name and never for weight-0 clusters, which would
	// stall an ads=true cache: they get ads=false.
	caches map[Profile]cachev3.SnapshotCache
	mux    *cachev3.MuxCache
	xds    serverv3.Server

	nacks *prometheus.CounterVec
	acks  *prometheus.CounterVec

	mu        sync.Mutex
	set       *config.Set
	l7        []config.Doc[*config.L7Policy]
	version   uint64
	snapshots map[Profile]*cachev3.Snapshot
	warnings  []Warning
	nodes     map[string]*nodeState
	streams   map[int64]string // stream → node id
	rejected  []Rejection
	applied   time.Time
	// onApplied is told of every node snapshot set (tests, benchmarks).
	onApplied func(node string, version string)
}

type nodeState struct {
	profile Profile
	streams int
	acked   map[string]string // type URL → version the node ACKed
	nacks   uint64
	last    *NACK
	seen    time.Time
	// good is the snapshot the node last ACKed whole; a node that NACKs
	// a newer one is put back on it (go-control-plane would otherwise
	// answer every NACK with the rejected version again: a busy loop)
	// until the next Apply.
	good     *cachev3.Snapshot
	rejected string // the version the node is held back from
}

// NACK is a client's rejection of a resource version.
type NACK struct {
	Node    string    `json:"node"`
	TypeURL string    `json:"type_url"`
	Version string    `json:"version"` // the version rejected
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
}

// Rejection is an input the server refused to serve.
type Rejection struct {
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// NewServer starts with an empty configuration (version 0): clients get
// empty snapshots until the first Apply.
func NewServer(opt Options, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		opt: opt.withDefaults(), log: log,
		caches: map[Profile]cachev3.SnapshotCache{
			Envoy: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil),
			GRPC:  cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil),
		},
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sextant_proxy_xds_nacks_total",
			Help: "xDS responses a client rejected, by node and resource type."}, []string{"node", "type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sextant_proxy_xds_acks_total",
			Help: "xDS responses a client accepted, by node and resource type."}, []string{"node", "type"}),
		set:       &config.Set{},
		snapshots: map[Profile]*cachev3.Snapshot{},
		nodes:     map[string]*nodeState{},
		streams:   map[int64]string{},
	}
	s.mux = &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return ProfileOf(r.GetNode()).String() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return ProfileOf(r.GetNode()).String() },
		Caches:        map[string]cachev3.Cache{Envoy.String(): s.caches[Envoy], GRPC.String(): s.caches[GRPC]},
	}
	if _, err := s.install(&config.Set{}, nil); err != nil {
		panic(fmt.Sprintf("empty configuration does not translate: %v", err)) // cannot happen
	}
	s.xds = serverv3.NewServer(context.Background(), s.mux, s.callbacks())
	return s
}

// Collectors are the server's Prometheus metrics (NACKs, ACKs).
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{s.nacks, s.acks} }

// Register puts the ADS and per-type discovery services on g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
}

// Serve serves xDS on l until ctx ends (a TCP or unix listener).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	g := grpc.NewServer()
	s.Register(g)
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	err := g.Serve(l)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Result of an Apply.
type Result struct {
	Version  string
	Warnings []Warning
}

// Apply installs new file inputs (keeping the L7 policies).
func (s *Server) Apply(set *config.Set) (Result, error) {
	s.mu.Lock()
	l7 := s.l7
	s.mu.Unlock()
	return s.apply(set, l7)
}

// ApplyL7 installs the policy stage's L7 rules (keeping the file inputs).
func (s *Server) ApplyL7(l7 []config.Doc[*config.L7Policy]) (Result, error) {
	s.mu.Lock()
	set := s.set
	s.mu.Unlock()
	return s.apply(set, l7)
}

func (s *Server) apply(set *config.Set, l7 []config.Doc[*config.L7Policy]) (Result, error) {
	res, err := s.install(set, l7)
	if err != nil {
		s.mu.Lock()
		s.rejected = append(s.rejected, Rejection{Error: err.Error(), Time: time.Now()})
		if len(s.rejected) > 16 {
			s.rejected = s.rejected[1:]
		}
		s.mu.Unlock()
		s.log.Warn("proxy configuration rejected, the last good one stays in force", "err", err)
		return res, err
	}
	for _, w := range res.Warnings {
		s.log.Warn("proxy configuration feature left out", "warning", w.String())
	}
	s.log.Info("proxy configuration applied", "version", res.Version, "warnings", len(res.Warnings))
	return res, nil
}

// install translates for both profiles, builds the snapshots and only
// then switches every node to them.
func (s *Server) install(set *config.Set, l7 []config.Doc[*config.L7Policy]) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	version := strconv.FormatUint(s.version+1, 10)
	snaps := map[Profile]*cachev3.Snapshot{}
	var warnings []Warning
	for _, p := range []Profile{Envoy, GRPC} {
		res, ws, err := Translate(set, l7, p, s.opt)
		if err != nil {
			return Result{}, fmt.Errorf("%s profile: %w", p, err)
		}
		warnings = append(warnings, ws...)
		snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource(res))
		if err != nil {
			return Result{}, fmt.Errorf("%s snapshot: %w", p, err)
		}
		// Envoy resolves RDS and EDS by name: a reference to nothing is a
		// stalled listener. (gRPC's api_listener routes are inline, which
		// Consistent does not follow: skipped there.)
		if p == Envoy {
			if err := snap.Consistent(); err != nil {
				return Result{}, fmt.Errorf("%s snapshot: %w", p, err)
			}
		}
		snaps[p] = snap
	}
	s.version++
	s.set, s.l7, s.snapshots, s.warnings, s.applied = set, l7, snaps, warnings, time.Now()
	for id, n := range s.nodes {
		n.rejected = ""
		s.setSnapshot(id, n.profile)
	}
	return Result{Version: version, Warnings: warnings}, nil
}

// setSnapshot gives node id its profile's current snapshot (mu held).
func (s *Server) setSnapshot(id string, p Profile) {
	snap := s.snapshots[p]
	if err := s.caches[p].SetSnapshot(context.Background(), id, snap); err != nil {
		s.log.Error("set xDS snapshot", "node", id, "err", err)
		return
	}
	if s.onApplied != nil {
		s.onApplied(id, snap.GetVersion(resource.ListenerType))
	}
}

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error { return nil },
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.mu.Lock()
			defer s.mu.Unlock()
			node := s.streams[id]
			delete(s.streams, id)
			n, ok := s.nodes[node]
			if !ok {
				return
			}
			// A node with no stream left is forgotten (its snapshot too):
			// clients that come and go with fresh ids must not pile up.
			if n.streams--; n.streams <= 0 {
				s.caches[n.profile].ClearSnapshot(node)
				delete(s.nodes, node)
			}
		},
		StreamRequestFunc: func(stream int64, req *discoverygrpc.DiscoveryRequest) error {
			s.request(stream, req)
			return nil
		},
	}
}

// request records the node of a stream (giving a new node its snapshot
// before the cache answers, so that no node waits for the next Apply),
// and ACKs and NACKs.
func (s *Server) request(stream int64, req *discoverygrpc.DiscoveryRequest) {
	id := req.GetNode().GetId()
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[id]
	if !ok {
		n = &nodeState{profile: ProfileOf(req.GetNode()), acked: map[string]string{}}
		s.nodes[id] = n
		s.setSnapshot(id, n.profile)
	}
	n.seen = time.Now()
	if _, ok := s.streams[stream]; !ok {
		s.streams[stream] = id
		n.streams++
	}
	if req.GetResponseNonce() == "" {
		return // a subscription, not an answer
	}
	typ := shortType(req.GetTypeUrl())
	current := s.snapshots[n.profile]
	if e := req.GetErrorDetail(); e != nil {
		if n.rejected == current.GetVersion(req.GetTypeUrl()) {
			return // the answer to a response sent before the node was held back
		}
		n.nacks++
		n.last = &NACK{Node: id, TypeURL: req.GetTypeUrl(), Version: current.GetVersion(req.GetTypeUrl()), Error: e.GetMessage(), Time: time.Now()}
		s.nacks.WithLabelValues(id, typ).Inc()
		s.log.Warn("xDS client rejected a response (NACK)", "node", id, "type", typ, "version", n.last.Version, "kept_version", req.GetVersionInfo(), "error", e.GetMessage())
		s.holdBack(id, n)
		return
	}
	n.acked[req.GetTypeUrl()] = req.GetVersionInfo()
	s.acks.WithLabelValues(id, typ).Inc()
	if n.rejected == "" && s.ackedAll(n, current) {
		n.good = current
	}
}

// ackedAll: the node ACKed every type of snap it uses.
func (s *Server) ackedAll(n *nodeState, snap *cachev3.Snapshot) bool {
	for typ, v := range n.acked {
		if v != snap.GetVersion(typ) {
			return false
		}
	}
	return true
}

// holdBack puts a node that rejected the current snapshot back on the
// last one it accepted (an empty one if it never accepted any): the
// client keeps what it has, the server stops re-sending what it refuses.
func (s *Server) holdBack(id string, n *nodeState) {
	current := s.snapshots[n.profile]
	n.rejected = current.GetVersion(resource.ListenerType)
	back := n.good
	if back == nil {
		back, _ = cachev3.NewSnapshot(n.rejected+"-rejected", nil)
	}
	if err := s.caches[n.profile].SetSnapshot(context.Background(), id, back); err != nil {
		s.log.Error("hold back xDS node", "node", id, "err", err)
	}
}

func shortType(url string) string {
	for _, t := range []struct{ url, name string }{{resource.ListenerType, "listener"}, {resource.RouteType, "route"}, {resource.ClusterType, "cluster"}, {resource.EndpointType, "endpoint"}} {
		if t.url == url {
			return t.name
		}
	}
	return url
}

// NodeStatus is one xDS client as the server knows it.
type NodeStatus struct {
	ID string `json:"id"`
	// Rejected is the version the node NACKed and is held back from (it
	// keeps Version, the last it accepted) until the next change.
	Rejected string            `json:"rejected_version,omitempty"`
	Profile  string            `json:"profile"`
	Streams  int               `json:"streams"` // open xDS streams (0: disconnected)
	Version  string            `json:"snapshot_version"`
	Acked    map[string]string `json:"acked"` // resource type → version the client accepted
	NACKs    uint64            `json:"nacks"`
	LastNACK *NACK             `json:"last_nack,omitempty"`
	LastSeen time.Time         `json:"last_seen"`
}

// Status is what `sextant proxy status` shows of the control plane.
type Status struct {
	Version  string       `json:"version"`
	Applied  time.Time    `json:"applied"`
	Inputs   string       `json:"inputs"`
	Warnings []string     `json:"warnings,omitempty"`
	Nodes    []NodeStatus `json:"nodes"`
	Rejected []Rejection  `json:"rejected,omitempty"`
}

func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Version: strconv.FormatUint(s.version, 10), Applied: s.applied, Inputs: s.set.Summary(), Rejected: slices.Clone(s.rejected)}
	for _, w := range s.warnings {
		st.Warnings = append(st.Warnings, w.String())
	}
	for id, n := range s.nodes {
		acked := map[string]string{}
		for t, v := range n.acked {
			acked[shortType(t)] = v
		}
		ns := NodeStatus{ID: id, Profile: n.profile.String(), Streams: n.streams, Acked: acked, NACKs: n.nacks, LastSeen: n.seen, Rejected: n.rejected}
		if snap, err := s.caches[n.profile].GetSnapshot(id); err == nil {
			ns.Version = snap.GetVersion(resource.ListenerType)
		}
		if n.last != nil {
			last := *n.last
			ns.LastNACK = &last
		}
		st.Nodes = append(st.Nodes, ns)
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return cmp.Compare(a.ID, b.ID) })
	return st
}

// Report is what `sextant proxy validate` prints.
type Report struct {
	Summary  string
	Warnings []Warning
	// Resources counts each profile's resources by type.
	Resources map[Profile]map[string]int
}

// Write prints the report as `sextant proxy validate` shows it.
func (r Report) Write(w io.Writer) {
	fmt.Fprintf(w, "valid: %s\n", r.Summary)
	for _, p := range []Profile{Envoy, GRPC} {
		c := r.Resources[p]
		fmt.Fprintf(w, "%s profile: %d listeners, %d routes, %d clusters, %d endpoints\n", p, c["listener"], c["route"], c["cluster"], c["endpoint"])
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
}

// Validate reads files as the server would and translates them for both
// profiles, without serving anything.
func Validate(opt Options, paths ...string) (Report, error) {
	set, err := config.Load(paths...)
	if err != nil {
		return Report{}, err
	}
	r := Report{Summary: set.Summary(), Resources: map[Profile]map[string]int{}}
	var errs []error
	for _, p := range []Profile{Envoy, GRPC} {
		res, ws, err := Translate(set, nil, p, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s profile: %w", p, err))
			continue
		}
		r.Warnings = append(r.Warnings, ws...)
		r.Resources[p] = map[string]int{}
		for typ, rs := range res {
			r.Resources[p][shortType(typ)] = len(rs)
		}
	}
	return r, errors.Join(errs...)
}

// GRPCBootstrap is a gRPC xDS bootstrap (grpc-go, grpc-js) for node
// against the server at serverURI (host:port, or unix:///path).
func GRPCBootstrap(serverURI, node string) []byte {
	b, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      serverURI,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		// grpc-js refuses a node without a locality.
		"node":                                   map[string]any{"id": node, "locality": map[string]any{}},
		"server_listener_resource_name_template": ServerListenerTemplate,
	})
	return b
}
