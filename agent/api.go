package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/agent/statusapi"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/link"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/stage"
)

// DefaultSocket is where the agent serves the Observer API and where
// `sextant observe` connects by default.
const DefaultSocket = "/var/run/sextant/observer.sock"

// DefaultListen is the TCP address of the Observer API when mTLS
// certificates are at hand (Hubble's usual port).
const DefaultListen = "127.0.0.1:4244"

// DefaultRingSize is how many events the agent keeps: 8192 flows. The ring
// holds flows, not Hubble events (≈ 1 KiB each with their headers, where
// a pair of events took ≈ 7 KiB), so it keeps four times Hubble's default
// in half the memory: at 80k flows/s that is 100 ms a relay may fall
// behind (a GC pause, a busy core) before it loses anything.
const DefaultRingSize = 16384

// ObserverConfig configures the Observer API.
type ObserverConfig struct {
	// The socket (default DefaultSocket) and the TCP address with mTLS.
	serve.Config `yaml:",inline"`
	// RingSize is how many recent events (a flow is a request and a
	// response event) are kept (default DefaultRingSize): the ring holds
	// RingSize/2 flows.
	RingSize int `yaml:"ringSize"`
}

func (c *ObserverConfig) withDefaults() {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.RingSize <= 0 {
		c.RingSize = DefaultRingSize
	}
}

// observerAPI is the agent's Hubble Observer API: a ring of flows the feed
// fills, served over gRPC on the socket and, with mTLS, on TCP, as Hubble
// events built for each client when it reads them, and whole to relays
// over the link service on the same listeners.
type observerAPI struct {
	cfg    ObserverConfig
	node   string
	log    *slog.Logger
	ring   *ring.Ring[observer.Entry]
	feed   *observer.Feed
	server *observer.Server
	link   *link.Server
	grpc   *serve.GRPC
}

func newObserverAPI(cfg Config, started time.Time, status *statusapi.Server) *observerAPI {
	a := &observerAPI{
		cfg:  cfg.Observer,
		node: cfg.Node,
		log:  cfg.Logger,
		ring: observer.NewRing((cfg.Observer.RingSize + 1) / 2),
	}
	a.feed = observer.NewFeed(a.ring, cfg.Node)
	a.server = observer.New(observer.Options{
		Ring:     a.ring,
		Node:     cfg.Node,
		Log:      cfg.Logger,
		Starting: true,
		Status: func() *observerpb.ServerStatusResponse {
			rs := a.ring.Stats()
			return &observerpb.ServerStatusResponse{
				NumFlows:            uint64(rs.Len),
				MaxFlows:            uint64(rs.Capacity),
				SeenFlows:           a.feed.Seen(),
				UptimeNs:            uint64(time.Since(started)),
				NumConnectedNodes:   wrapperspb.UInt32(1),
				NumUnavailableNodes: wrapperspb.UInt32(0),
			}
		},
		Nodes: func() []*observerpb.Node {
			rs := a.ring.Stats()
			return []*observerpb.Node{{
				Name:      cfg.Node,
				Version:   observer.Version,
				Address:   a.cfg.Listen,
				State:     relaypb.NodeState_NODE_CONNECTED,
				UptimeNs:  uint64(time.Since(started)),
				NumFlows:  uint64(rs.Len),
				MaxFlows:  uint64(rs.Capacity),
				SeenFlows: a.feed.Seen(),
				Tls:       &observerpb.TLS{Enabled: !a.cfg.TLS.Empty()},
			}}
		},
	})
	a.link = link.NewServer(a.ring, cfg.Node)
	srv := serve.NewGRPC()
	a.server.Register(srv)
	a.link.Register(srv)
	status.Register(srv)
	a.grpc = &serve.GRPC{Server: srv, BeforeStop: func() {
		a.server.Shutdown()
		a.link.Shutdown()
	}}
	return a
}

// stage binds the listeners first of all, so that a second agent or a bad
// address fails in milliseconds, not after the programs were verified.
func (a *observerAPI) stage() stage.Stage {
	return stage.Stage{
		Name: "observer-api",
		Start: func(context.Context) error {
			lns, err := a.listen()
			if err != nil {
				return err
			}
			a.grpc.Listeners = lns
			for _, ln := range lns {
				a.log.Info("serving the Observer API", "addr", serve.URL(ln.Addr()))
			}
			return nil
		},
		Run:  a.grpc.Run,
		Stop: a.grpc.Stop,
	}
}

func (a *observerAPI) listen() ([]net.Listener, error) {
	lns, err := a.cfg.Config.Bind()
	if isPermission(err) {
		return nil, fmt.Errorf("%w: %v", ErrPermission, err)
	}
	return lns, err
}

// dropPollInterval is how often the kernel's loss counters become lost
// events.
const dropPollInterval = time.Second

// kernelLoss reports what the kernel could not deliver (records that found
// the ring buffer full, connections or streams that found their table
// full) as lost events of source PERF_EVENT_RING_BUFFER.
func (a *observerAPI) kernelLoss(p *probesStage) stage.Stage {
	return stage.Stage{Name: "kernel-loss", Run: func(ctx context.Context) error {
		t := time.NewTicker(dropPollInterval)
		defer t.Stop()
		prev := p.Stats().Lost()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if cur := p.Stats().Lost(); cur > prev {
				a.feed.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, cur-prev)
				prev = cur
			}
		}
	}}
}

// statusOnlyAPI serves the status service alone on the API's socket (and
// TCP with mTLS) when the agent keeps no flows (metrics only), so that
// `sextant policy list` and `sextant proxy status` reach it all the same.
func statusOnlyAPI(cfg Config, status *statusapi.Server) stage.Stage {
	srv := serve.NewGRPC()
	status.Register(srv)
	g := &serve.GRPC{Server: srv}
	a := &observerAPI{cfg: cfg.Observer, log: cfg.Logger}
	return stage.Stage{
		Name: "status-api",
		Start: func(context.Context) error {
			lns, err := a.listen()
			if err != nil {
				return err
			}
			g.Listeners = lns
			for _, ln := range lns {
				a.log.Info("serving the status service", "addr", serve.URL(ln.Addr()))
			}
			return nil
		},
		Run:  g.Run,
		Stop: g.Stop,
	}
}
