package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/ring"
)

// feedQueue is how many flows may wait for their conversion to Hubble
// events; beyond that flows are lost (and reported as lost events of
// source OBSERVER_EVENTS_QUEUE), never waited for.
const feedQueue = 4096

// dropPollInterval is how often kernel drop counters are turned into lost
// events.
const dropPollInterval = time.Second

// observerAPI serves the agent's flows as Cilium Hubble's Observer API. The
// collector hands flows to write, which only queues them: the conversion to
// Hubble events (two per exchange, written into the ring) runs on its own
// goroutine, off the collector's lock.
type observerAPI struct {
	node  string
	ring  *ring.Ring[*observerpb.GetFlowsResponse]
	queue chan *flow.Flow
	log   *slog.Logger

	// drops returns the kernel's total drop count (every reason).
	drops func() uint64

	queueLost atomic.Uint64 // flows lost because the queue was full
	seen      atomic.Uint64 // flow events written to the ring
	converted chan struct{} // closed when the converter returned

	server *observer.Server
	grpc   *grpc.Server
	closed sync.Once
}

func newObserverAPI(cfg Config, started time.Time, drops func() uint64) *observerAPI {
	a := &observerAPI{
		node:      cfg.Node,
		ring:      ring.New[*observerpb.GetFlowsResponse](cfg.RingSize),
		queue:     make(chan *flow.Flow, feedQueue),
		log:       cfg.Logger,
		drops:     drops,
		converted: make(chan struct{}),
	}
	a.server = observer.New(observer.Options{
		Ring: a.ring,
		Node: cfg.Node,
		Log:  cfg.Logger,
		Status: func() *observerpb.ServerStatusResponse {
			rs := a.ring.Stats()
			return &observerpb.ServerStatusResponse{
				NumFlows:            uint64(rs.Len),
				MaxFlows:            uint64(rs.Capacity),
				SeenFlows:           a.seen.Load(),
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
				Address:   cfg.ListenTCP,
				State:     relaypb.NodeState_NODE_CONNECTED,
				UptimeNs:  uint64(time.Since(started)),
				NumFlows:  uint64(rs.Len),
				MaxFlows:  uint64(rs.Capacity),
				SeenFlows: a.seen.Load(),
			}}
		},
	})
	a.grpc = grpc.NewServer()
	a.server.Register(a.grpc)
	go a.convert()
	return a
}

// write is the collector's output: it must stay cheap, since it runs under
// the collector's lock.
func (a *observerAPI) write(f *flow.Flow) {
	select {
	case a.queue <- f:
	default:
		a.queueLost.Add(1)
	}
}

// convert turns queued flows into events until the queue is closed.
func (a *observerAPI) convert() {
	defer close(a.converted)
	var reported uint64
	for f := range a.queue {
		if lost := a.queueLost.Load(); lost > reported {
			a.writeLost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost-reported)
			reported = lost
		}
		evs := hubble.Events(f)
		// The last event carries the whole flow for the relay's exporters.
		if len(evs) > 0 {
			if err := hubble.AttachFlow(evs[len(evs)-1], f); err != nil {
				a.log.Warn("attach flow", "err", err)
			}
		}
		for _, ev := range evs {
			a.ring.Write(&observerpb.GetFlowsResponse{
				Time:          ev.GetTime(),
				NodeName:      ev.GetNodeName(),
				ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: ev},
			})
			a.seen.Add(1)
		}
	}
	if lost := a.queueLost.Load(); lost > reported {
		a.writeLost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost-reported)
	}
}

func (a *observerAPI) writeLost(src flowpb.LostEventSource, n uint64) {
	a.ring.Write(&observerpb.GetFlowsResponse{
		Time:     timestamppb.Now(),
		NodeName: a.node,
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{
			LostEvents: &flowpb.LostEvent{Source: src, NumEventsLost: n},
		},
	})
}

// watchDrops reports what the kernel could not deliver (records that found
// the ring buffer full, connections or streams that found their table full)
// as lost events of source PERF_EVENT_RING_BUFFER.
func (a *observerAPI) watchDrops(ctx context.Context) {
	if a.drops == nil {
		return
	}
	t := time.NewTicker(dropPollInterval)
	defer t.Stop()
	prev := a.drops()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := a.drops(); cur > prev {
			a.writeLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, cur-prev)
			prev = cur
		}
	}
}

// closeFeed converts what is queued and stops the converter; the collector
// must not write any more.
func (a *observerAPI) closeFeed() {
	a.closed.Do(func() { close(a.queue) })
	<-a.converted
}

// Serve answers on every listener until ctx is done, then stops
// gracefully: followers receive what is queued for them, then their
// streams end.
func (a *observerAPI) Serve(ctx context.Context, listeners ...net.Listener) error {
	errs := make(chan error, len(listeners))
	var wg sync.WaitGroup
	for _, ln := range listeners {
		wg.Go(func() {
			if err := a.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		})
	}
	drops, stopDrops := context.WithCancel(ctx)
	defer stopDrops()
	go a.watchDrops(drops)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	a.server.Shutdown()
	stopped := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		a.log.Warn("Observer API: clients did not leave within 5s, closing their connections")
		a.grpc.Stop()
		<-stopped
	}
	wg.Wait()
	return err
}

// addrURL writes a listener's address the way --server takes it.
func addrURL(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix://" + a.String()
	}
	return a.String()
}
