// Package relay gives one view over many agents: it follows every agent's
// flows (the link service, observer/link, next to the Observer API on the
// agent's sockets), merges their events in time order and serves the
// merged stream through the same Observer API (package observer), so that
// `sextant observe` and the stock hubble CLI read a whole cluster the way
// they read one node. The relay's ring holds the agents' flows, one entry
// per event, and Hubble events are built when a client reads them.
// Exporters read the merged flows with Subscribe; another relay can follow
// this one over the same link.
//
// Guarantees:
//   - An agent that goes away does not stop the relay: it is reported as
//     unavailable (GetNodes, ServerStatus), redialed with exponential
//     backoff, and resumed exactly after the last entry received from it
//     (a cursor into its ring), so without duplicates; what its ring
//     overwrote meanwhile arrives as a lost-event notice.
//   - Events leave in time order within the sort window (see merger): an
//     event that arrives after a newer one was already released is still
//     delivered, and counted as late.
//   - The merge never waits for a slow subscriber: what a subscriber does
//     not read in time is lost for it alone and counted.
package relay

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/link"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/serve"
)

// Defaults of Options.
const (
	DefaultSortWindow      = time.Second
	DefaultMaxHeld         = 8192
	DefaultResolveInterval = 30 * time.Second
	DefaultBackoffMin      = 100 * time.Millisecond
	DefaultBackoffMax      = 5 * time.Second
	DefaultDedupeHorizon   = 2 * time.Second
	// DefaultRingSize: the relay merges many agents, so it keeps more
	// history than one agent does.
	DefaultRingSize = 16384
)

// Resolver resolves the host names of agents (net.DefaultResolver
// satisfies it).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Options configures a Relay.
type Options struct {
	// Agents are the agents' Observer API addresses, "host:port". A host
	// name may resolve to several addresses: every address is one agent,
	// and the name is resolved again every ResolveInterval.
	Agents []string
	// AgentTLS secures the connections to agents (mTLS); nil means
	// plaintext, which is refused for non-loopback agents unless
	// AllowInsecure.
	AgentTLS      *tls.Config
	AllowInsecure bool

	// RingSize is how many merged events the relay keeps for clients.
	RingSize int
	// SortWindow bounds how long an event is held back waiting for older
	// events of other agents.
	SortWindow time.Duration
	// MaxHeld bounds how many events of one agent are held back at once;
	// beyond it the relay stops reading that agent until older events of
	// the others arrive or the window passes.
	MaxHeld int
	// Since is where the first stream of each agent starts (its ring
	// history from then on); the relay's start when zero.
	Since time.Time
	// DedupeHorizon is how far before the last event seen from an agent a
	// stream starts when it cannot resume at its cursor (the agent
	// restarted: a new ring, none of whose flows was delivered). It must
	// exceed how far an agent's own stream is out of time order.
	DedupeHorizon time.Duration

	ResolveInterval        time.Duration
	Resolver               Resolver
	BackoffMin, BackoffMax time.Duration

	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if o.RingSize <= 0 {
		o.RingSize = DefaultRingSize
	}
	if o.SortWindow <= 0 {
		o.SortWindow = DefaultSortWindow
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = DefaultMaxHeld
	}
	if o.DedupeHorizon <= 0 {
		o.DedupeHorizon = DefaultDedupeHorizon
	}
	if o.ResolveInterval <= 0 {
		o.ResolveInterval = DefaultResolveInterval
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Relay merges the event streams of many agents.
type Relay struct {
	opts    Options
	log     *slog.Logger
	started time.Time
	ring    *ring.Ring[observer.Entry]
	server  *observer.Server
	link    *link.Server

	in        chan arrival  // agents → merger
	stoppedCh chan struct{} // closed when Run returned: the merge released its last event

	mu         sync.Mutex
	peers      map[peerKey]*peer
	nodes      map[string]*node
	unresolved map[string]error // agent names that do not resolve (yet)

	merged  atomic.Uint64
	late    atomic.Uint64
	resumed atomic.Uint64
	held    atomic.Int64
}

// Stats are the relay's counters.
type Stats struct {
	Merged  uint64 // events released into the merged stream
	Late    uint64 // of those, released after a newer one (arrived after the sort window)
	Resumed uint64 // streams that continued exactly at the cursor of an earlier one
	Held    int64  // events waiting in the sort window now
}

// New returns a relay over opts.Agents; Run starts it.
func New(opts Options) (*Relay, error) {
	opts.setDefaults()
	if len(opts.Agents) == 0 {
		return nil, fmt.Errorf("no agent address given")
	}
	for _, a := range opts.Agents {
		if isSocket(a) {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("agent address %q: want host:port or unix:///path", a)
		}
		if err := serve.CheckDial(a, opts.AgentTLS != nil, opts.AllowInsecure); err != nil {
			return nil, fmt.Errorf("agent %w", err)
		}
	}
	r := &Relay{
		opts:       opts,
		log:        opts.Log,
		started:    time.Now(),
		ring:       ring.New[observer.Entry](opts.RingSize), // one entry per event: each weighs 1
		in:         make(chan arrival, 4096),
		stoppedCh:  make(chan struct{}),
		peers:      map[peerKey]*peer{},
		nodes:      map[string]*node{},
		unresolved: map[string]error{},
	}
	if r.opts.Since.IsZero() {
		r.opts.Since = r.started
	}
	r.server = observer.New(observer.Options{
		Ring:   r.ring,
		Status: r.Status,
		Nodes:  r.Nodes,
		Log:    opts.Log,
	})
	r.link = link.NewServer(r.ring, "")
	return r, nil
}

// Register serves the merged stream on g: the Observer service, the gRPC
// health service Hubble clients check, and the link (another relay can
// follow this one).
func (r *Relay) Register(g *grpc.Server) {
	r.server.Register(g)
	r.link.Register(g)
}

// Shutdown reports the Observer service as not serving and ends follow
// streams (graceful stop).
func (r *Relay) Shutdown() {
	r.server.Shutdown()
	r.link.Shutdown()
}

// Run connects to the agents and merges their streams until ctx is done.
// It closes every subscription when it returns.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// The merger outlives the peers: they report their last state change
	// on the way out.
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	merged := make(chan struct{})
	go func() {
		defer close(merged)
		newMerger(r).run(mctx)
	}()
	for _, target := range slices.Compact(slices.Sorted(slices.Values(r.opts.Agents))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.watch(ctx, target)
		}()
	}
	<-ctx.Done()
	wg.Wait()
	mcancel()
	<-merged
	close(r.stoppedCh)
	return nil
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{
		Merged:  r.merged.Load(),
		Late:    r.late.Load(),
		Resumed: r.resumed.Load(),
		Held:    r.held.Load(),
	}
}

// watch keeps one peer per address target resolves to.
func (r *Relay) watch(ctx context.Context, target string) {
	host, port, _ := net.SplitHostPort(target) // validated by New
	if _, err := netip.ParseAddr(host); err == nil || isSocket(target) {
		p := r.addPeer(ctx, peerKey{target, target}, host)
		<-ctx.Done()
		p.wait()
		return
	}
	current := map[peerKey]*peer{}
	resolve := func() {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err := r.opts.Resolver.LookupHost(lctx, host)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil || len(addrs) == 0 {
			if err == nil {
				err = fmt.Errorf("no address")
			}
			// Keep the agents found before: a resolver hiccup must not
			// tear down working streams.
			r.log.Warn("resolve agent", "agent", target, "err", err)
			if len(current) == 0 {
				r.mu.Lock()
				r.unresolved[target] = err
				r.mu.Unlock()
			}
			return
		}
		r.mu.Lock()
		delete(r.unresolved, target)
		r.mu.Unlock()
		want := map[peerKey]bool{}
		for _, a := range addrs {
			want[peerKey{target, net.JoinHostPort(a, port)}] = true
		}
		for k := range want {
			if current[k] == nil {
				r.log.Info("agent address found", "agent", target, "addr", k.addr)
				current[k] = r.addPeer(ctx, k, host)
			}
		}
		for k, p := range current {
			if !want[k] {
				r.log.Info("agent address gone", "agent", target, "addr", k.addr)
				r.removePeer(p)
				delete(current, k)
			}
		}
	}
	resolve()
	tick := time.NewTicker(r.opts.ResolveInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, p := range current {
				p.wait()
			}
			return
		case <-tick.C:
			resolve()
		}
	}
}

// Status is the relay's part of ServerStatus: node counts. The observer
// server adds the figures of the merged ring.
func (r *Relay) Status() *observerpb.ServerStatusResponse {
	var connected, unavailable uint32
	var names []string
	for _, n := range r.Nodes() {
		if n.State == relaypb.NodeState_NODE_CONNECTED {
			connected++
		} else {
			unavailable++
			names = append(names, n.Name)
		}
	}
	return &observerpb.ServerStatusResponse{
		NumConnectedNodes:   wrapperspb.UInt32(connected),
		NumUnavailableNodes: wrapperspb.UInt32(unavailable),
		UnavailableNodes:    names,
	}
}

// Nodes lists every agent with its availability, sorted by name: the
// nodes the relay has talked to, agents it never reached (named by their
// address) and agent names that do not resolve.
func (r *Relay) Nodes() []*observerpb.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*observerpb.Node
	for _, n := range r.nodes {
		if !n.gone {
			out = append(out, n.describe())
		}
	}
	for _, p := range r.peers {
		if !p.named {
			out = append(out, &observerpb.Node{
				Name:    p.key.addr,
				Address: p.key.addr,
				State:   relaypb.NodeState_NODE_UNAVAILABLE,
				Tls:     &observerpb.TLS{Enabled: r.opts.AgentTLS != nil, ServerName: p.serverName},
			})
		}
	}
	for target := range r.unresolved {
		out = append(out, &observerpb.Node{Name: target, Address: target, State: relaypb.NodeState_NODE_UNAVAILABLE})
	}
	slices.SortFunc(out, func(a, b *observerpb.Node) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		if a.Address < b.Address {
			return -1
		}
		return 1
	})
	return out
}

// isSocket reports whether an agent address is a unix socket (unix:///path).
func isSocket(addr string) bool { return strings.HasPrefix(addr, "unix://") }
