// Package observer serves Cilium Hubble's Observer gRPC API
// (github.com/cilium/cilium/api/v1/observer) from a ring of events, so that
// the stock hubble CLI, and anything else that speaks Hubble, reads sextant
// flows unchanged. The agent serves its own ring; the relay serves the ring
// its merged streams fill.
//
// The request semantics (number, first, follow, since, until, filters,
// lost events) follow Cilium's local observer
// (cilium/cilium pkg/hubble/observer/local_observer.go, Apache-2.0).
package observer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/observer/ring"
)

// HealthService is the service name `hubble status` checks.
const HealthService = "hubble.server.Observer"

// Version is reported in ServerStatus and GetNodes. Hubble clients print it;
// they do not interpret it.
var Version = "sextant"

// Options configures a Server.
type Options struct {
	// Ring holds what is served: flows (their events are built when a
	// client reads them) and lost-event notices, oldest first (NewRing).
	Ring *ring.Ring[Entry]
	// Status returns the caller's part of ServerStatus (for example node
	// counts); the server fills NumFlows, MaxFlows, SeenFlows, UptimeNs,
	// FlowsRate and Version from the ring where they are zero. May be nil.
	Status func() *observerpb.ServerStatusResponse
	// Nodes answers GetNodes. May be nil (no nodes).
	Nodes func() []*observerpb.Node
	// Node names the events this server creates itself (lost events of a
	// slow follower).
	Node string
	// Starting: the server answers Unavailable (and health NOT_SERVING)
	// until Ready is called, so that an answer means the daemon is
	// observing (the agent's probes are attached).
	Starting bool
	Log      *slog.Logger
}

// Server implements observerpb.ObserverServer over a ring.
type Server struct {
	observerpb.UnimplementedObserverServer
	opts    Options
	started time.Time
	health  *health.Server

	// done ends every follow stream (after it drained what it had
	// buffered), so that a graceful stop does not wait for followers.
	done     chan struct{}
	shutdown sync.Once
	ready    atomic.Bool
}

// New returns a server of opts.Ring.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Ring == nil {
		opts.Ring = NewRing(0)
	}
	s := &Server{opts: opts, started: time.Now(), health: health.NewServer(), done: make(chan struct{})}
	if opts.Starting {
		s.health.SetServingStatus(HealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	} else {
		s.Ready()
	}
	return s
}

// Ready starts answering (see Options.Starting).
func (s *Server) Ready() {
	s.ready.Store(true)
	s.health.SetServingStatus(HealthService, healthpb.HealthCheckResponse_SERVING)
}

var errStarting = status.Error(codes.Unavailable, "starting: not observing yet, try again in a moment")

func (s *Server) checkReady() error {
	if !s.ready.Load() {
		return errStarting
	}
	return nil
}

// Register adds the Observer service and the gRPC health service (with
// HealthService SERVING) to g.
func (s *Server) Register(g *grpc.Server) {
	observerpb.RegisterObserverServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
}

// Shutdown reports the service as NOT_SERVING and ends every follow stream
// once it has sent the events already queued for it, so that
// grpc.Server.GracefulStop returns. Call it after the last event was
// written to the ring.
func (s *Server) Shutdown() {
	s.shutdown.Do(func() {
		s.health.Shutdown()
		close(s.done)
	})
}

// ServerStatus reports the ring's fill level, the flows seen since start,
// uptime and the flow rate over the last minute, all in Hubble events.
func (s *Server) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	var st *observerpb.ServerStatusResponse
	if s.opts.Status != nil {
		st = s.opts.Status()
	}
	if st == nil {
		st = &observerpb.ServerStatusResponse{}
	}
	rs := s.opts.Ring.Stats()
	if st.NumFlows == 0 {
		st.NumFlows = uint64(rs.Len)
	}
	if st.MaxFlows == 0 {
		st.MaxFlows = uint64(rs.Capacity)
	}
	if st.SeenFlows == 0 {
		st.SeenFlows = rs.Written
	}
	if st.UptimeNs == 0 {
		st.UptimeNs = uint64(time.Since(s.started))
	}
	if st.FlowsRate == 0 {
		st.FlowsRate = flowRate(expand(s.opts.Ring.Last(s.opts.Ring.Capacity())), rs.Overwritten > 0, time.Now())
	}
	if st.Version == "" {
		st.Version = Version
	}
	return st, nil
}

// expand lists the events of entries, in order.
func expand(entries []Entry) []event {
	evs := make([]event, 0, 2*len(entries))
	for i := range entries {
		evs = entries[i].events(evs)
	}
	return evs
}

// flowRate is the number of flow events per second over the last minute,
// or over the time the ring covers when it wrapped within that minute (as
// Cilium computes it).
func flowRate(events []event, wrapped bool, now time.Time) float64 {
	since := now.Add(-time.Minute)
	count := 0
	var oldest time.Time
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i]
		if !e.isFlow() {
			continue
		}
		ts := e.time()
		if ts.Before(since) {
			wrapped = false // the ring covers the whole minute
			break
		}
		oldest = ts
		count++
	}
	if wrapped && !oldest.IsZero() {
		since = oldest
	}
	window := now.Sub(since).Seconds()
	if window <= 0 {
		return 0
	}
	return float64(count) / window
}

// GetNodes lists the nodes this server speaks for.
func (s *Server) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	var nodes []*observerpb.Node
	if s.opts.Nodes != nil {
		nodes = s.opts.Nodes()
	}
	return &observerpb.GetNodesResponse{Nodes: nodes}, nil
}

// GetFlows streams the events of the ring that req asks for: the last
// Number (or, with First, the oldest Number) matching flow events, all of
// them when Number is 0, within Since/Until; with Follow, then every new
// one. Lost events are never filtered and never counted against Number.
// Events are built here, in the client's goroutine, from the flows the
// ring holds.
func (s *Server) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	if err := s.checkReady(); err != nil {
		return err
	}
	q, err := newQuery(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()

	// Following from now needs no history.
	if req.GetFollow() && req.GetNumber() == 0 && req.GetSince() == nil {
		rd := s.opts.Ring.Follow()
		defer rd.Close()
		return s.follow(ctx, q, rd, stream.Send)
	}

	var (
		history []Entry
		rd      *ring.Reader[Entry]
	)
	capacity := s.opts.Ring.Capacity()
	if req.GetFollow() {
		history, rd = s.opts.Ring.LastAndFollow(capacity)
		defer rd.Close()
	} else {
		history = s.opts.Ring.Last(capacity)
	}
	if err := s.history(q, expand(history), req.GetFollow(), stream.Send); err != nil {
		return err
	}
	if rd == nil {
		return nil
	}
	return s.follow(ctx, q, rd, stream.Send)
}

// history sends the events of the ring q asks for: from the oldest for
// First, Since or Number 0; otherwise the last Number matching flow events
// (and the lost events among them), oldest first. Since takes precedence
// over Number, as in Cilium.
//
// Since is applied per event rather than by rewinding until an older one:
// the agent's ring is in emission order, and a request event carries the
// start time of its exchange, so timestamps are not monotonic.
func (s *Server) history(q *query, evs []event, follow bool, send func(*observerpb.GetFlowsResponse) error) error {
	if q.first || q.since != nil || q.limit == 0 {
		sent := uint64(0)
		for _, ev := range evs {
			if !follow && q.limit > 0 && sent >= q.limit && ev.isFlow() {
				break
			}
			resp, ok := q.accept(ev)
			if !ok {
				continue
			}
			if err := send(resp); err != nil {
				return err
			}
			if ev.isFlow() {
				sent++
			}
		}
		return nil
	}
	// The newest first, until Number flow events matched; each event is
	// built once.
	var picked []*observerpb.GetFlowsResponse
	n := uint64(0)
	for i := len(evs) - 1; i >= 0 && n < q.limit; i-- {
		resp, ok := q.accept(evs[i])
		if !ok {
			continue
		}
		picked = append(picked, resp)
		if evs[i].isFlow() {
			n++
		}
	}
	for i := len(picked) - 1; i >= 0; i-- {
		if err := send(picked[i]); err != nil {
			return err
		}
	}
	return nil
}

// followBatch is how many entries a follower takes from the ring at once.
const followBatch = 256

// follow sends every new matching event until the client leaves, the
// server stops, or an event passes Until. When the follower lagged and lost
// events, it says so with a LostEvent (source HUBBLE_RING_BUFFER) before
// the events that follow the gap.
func (s *Server) follow(ctx context.Context, q *query, rd *ring.Reader[Entry], send func(*observerpb.GetFlowsResponse) error) error {
	buf := make([]Entry, followBatch)
	var evs []event
	draining := false
	for {
		n, lost := rd.Read(buf)
		if lost > 0 {
			if err := send(s.lostEvent(flowpb.LostEventSource_HUBBLE_RING_BUFFER, lost)); err != nil {
				return err
			}
			s.opts.Log.Debug("follower lagged", "lost", lost)
		}
		evs = evs[:0]
		for i := range buf[:n] {
			evs = buf[i].events(evs)
		}
		for _, ev := range evs {
			if q.until != nil && ev.isFlow() && ev.time().After(*q.until) {
				return nil
			}
			resp, ok := q.accept(ev)
			if !ok {
				continue
			}
			if err := send(resp); err != nil {
				return err
			}
		}
		clear(buf[:n])
		if n > 0 {
			continue
		}
		// Caught up. At shutdown, what was written before is sent (above)
		// and the stream ends.
		if draining || !rd.Wait(ctx, s.done) {
			if ctx.Err() != nil || draining {
				return nil
			}
			draining = true
		}
	}
}

func (s *Server) lostEvent(src flowpb.LostEventSource, n uint64) *observerpb.GetFlowsResponse {
	return lostResponse(&Lost{Time: time.Now(), Node: s.opts.Node, Source: src, Count: n, CPU: -1})
}

// errInvalid marks an error in the request.
func errInvalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// asStatus returns err as a gRPC status error, InvalidArgument unless it
// already carries a code.
func asStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Err()
	}
	return errInvalid("%v", err)
}
