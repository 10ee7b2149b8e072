// Package agent runs sextant on one node: it attaches the probes, decodes
// their records into flows, keeps recent flows in a ring and serves them as
// Cilium Hubble's Observer API until its context is cancelled.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/route"
)

// Config configures an agent. Zero values take the defaults.
type Config struct {
	// Node names this host in every flow (default: the hostname).
	Node string
	// Socket is the unix socket of the Observer API (default DefaultSocket).
	Socket string
	// SocketGroup, when set, may also use the socket (mode 0660 instead
	// of 0600): a group name or gid.
	SocketGroup string
	// ListenTCP, when set, also serves the Observer API on this TCP
	// address (e.g. DefaultListen). Only loopback addresses are accepted
	// unless AllowInsecureTCP: the API is plaintext.
	ListenTCP        string
	AllowInsecureTCP bool
	// TLS, when its files are named, serves the TCP listener with mTLS:
	// clients (the relay, sextant observe, hubble) must present a
	// certificate signed by TLS.CA.
	TLS certs.Files
	// MetricsOnly turns the flow side off: no ring, no Observer API, no
	// conversion to Hubble events. Every exchange is still decoded, but
	// only to feed /metrics, which is what most nodes need and costs a
	// fraction of keeping whole flows. Needs Metrics.Listen.
	MetricsOnly bool
	// RingSize is how many recent events (a flow is a request and a
	// response event) are kept (default ring.DefaultCapacity).
	RingSize int
	// KernelRingBytes sizes the kernel→agent ring buffer (default
	// probes' 16 MiB). Records beyond it are dropped and counted.
	KernelRingBytes int
	// ExcludePIDs are never traced, in addition to the agent itself.
	ExcludePIDs []uint32
	// StatusInterval is how often a status line is logged at debug level
	// (default 10s).
	StatusInterval time.Duration
	// Collector tunes decoding; its Node is taken from Node.
	Collector collector.Config
	// Routes are http.route templates (/api/users/{id}) tried before the
	// automatic collapsing of ids; the route stage names every flow's
	// route with them once, for every exporter here and on the relay.
	Routes []string
	// Metrics configures Prometheus /metrics (off when Metrics.Listen is "").
	Metrics MetricsConfig
	Logger  *slog.Logger
}

// tickInterval is how often the collector releases records that waited out
// its reorder window ("every few tens of ms", collector.Tick).
const tickInterval = 25 * time.Millisecond

// ErrPermission is wrapped by errors caused by missing privileges.
var ErrPermission = errors.New("permission denied: run as root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)")

// Run runs the agent until ctx is cancelled, then detaches the probes,
// closes the API listeners and removes the socket. The API answers once the
// probes are attached, so a successful ServerStatus means tracing is on.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return err
	}
	log := cfg.Logger
	started := time.Now()

	// Listen before loading the probes: a second agent or a bad address
	// fails in milliseconds, not after the programs were verified.
	var listeners []net.Listener
	if !cfg.MetricsOnly {
		if listeners, err = listen(cfg); err != nil {
			return err
		}
	}
	metrics, err := listenMetrics(cfg.Metrics, log)
	if err != nil {
		for _, ln := range listeners {
			ln.Close()
		}
		return err
	}
	defer metrics.close()
	defer func() {
		for _, ln := range listeners {
			ln.Close() // already closed by Serve on the normal path
		}
	}()

	p, err := probes.Load(probes.Options{
		ExcludePIDs:     append([]uint32{uint32(os.Getpid())}, cfg.ExcludePIDs...),
		RingBufferBytes: cfg.KernelRingBytes,
	})
	if err != nil {
		if isPermission(err) {
			return fmt.Errorf("%w: load probes: %v", ErrPermission, err)
		}
		return fmt.Errorf("load probes: %w", err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			log.Warn("detach probes", "err", err)
		}
	}()
	log.Info("probes attached", "load_time", p.LoadTime().Round(time.Millisecond))

	var server *observerAPI // nil: metrics only
	out := func(*flow.Flow) {}
	if !cfg.MetricsOnly {
		server = newObserverAPI(cfg, started, func() uint64 { return p.Stats().Lost() })
		defer server.closeFeed()
		out = server.write
	}
	routes, err := route.New(cfg.Routes, 0)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	sink := metrics.fanOut(out)
	pipe := &pipeline{c: collector.New(cfg.Collector, func(f *flow.Flow) { routes.Enrich(f); sink(f) })}
	metrics.serve(p, server, pipe)

	status := func() Status {
		ps := p.Stats()
		st := Status{
			Node:         cfg.Node,
			Started:      started,
			Uptime:       time.Since(started).Round(time.Second).String(),
			ProbeEvents:  ps.Events,
			ProbeInvalid: ps.Invalid,
			ProbeDrops:   dropsByName(ps.Drops[:]),
			Collector:    pipe.stats(),
		}
		if server != nil {
			st.FlowsSeen = server.seen.Load()
			st.QueueLost = server.queueLost.Load()
			st.Ring = server.ring.Stats()
		}
		return st
	}
	// The API outlives the probes by a moment at shutdown, so that followers
	// receive the flows the collector flushes last.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	apiDone := make(chan error, 1)
	if server != nil {
		go func() { apiDone <- server.Serve(apiCtx, listeners...) }()
		for _, ln := range listeners {
			log.Info("serving the Observer API", "addr", addrURL(ln.Addr()))
		}
	} else {
		log.Info("metrics only: no flows are kept and the Observer API is off")
	}

	probesCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	var workers sync.WaitGroup
	probesDone := make(chan error, 1)
	workers.Go(func() { probesDone <- p.Run(probesCtx, pipe.handle) })
	workers.Go(func() { pipe.tickUntil(probesCtx) })
	workers.Go(func() { logStatus(probesCtx, log, cfg.StatusInterval, status) })

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-probesDone:
		if runErr != nil {
			runErr = fmt.Errorf("read probe events: %w", runErr)
		} else {
			runErr = errors.New("probe event reader stopped unexpectedly")
		}
		probesDone <- nil // for the wait below
	case runErr = <-apiDone:
		apiDone <- nil
	}
	log.Info("shutting down")
	stopProbes()
	workers.Wait()
	<-probesDone
	pipe.flush()
	if server == nil {
		metrics.close()
		log.Info("stopped", "flows", pipe.stats().Flows)
		return runErr
	}
	server.closeFeed()
	metrics.close()

	stopAPI()
	if err := <-apiDone; err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped", "flow_events", server.seen.Load())
	return runErr
}

func withDefaults(cfg Config) (Config, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Node == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("node name: %w (set one with --node)", err)
		}
		cfg.Node = host
	}
	cfg.Collector.Node = cfg.Node
	if cfg.MetricsOnly && cfg.Metrics.Listen == "" {
		return cfg, errors.New("metrics only, but no metrics address: nothing would be observable (set --metrics-listen)")
	}
	if cfg.MetricsOnly {
		// Metrics aggregate: no flow is kept, so none needs its headers.
		cfg.Collector.HTTP2.NoHeaderLists = true
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	return cfg, nil
}

func listen(cfg Config) ([]net.Listener, error) {
	ln, err := ListenUnix(cfg.Socket, cfg.SocketGroup)
	if err != nil {
		if isPermission(err) {
			return nil, fmt.Errorf("%w: %v", ErrPermission, err)
		}
		return nil, err
	}
	listeners := []net.Listener{ln}
	if cfg.ListenTCP != "" {
		tcp, err := listenTCP(cfg)
		if err != nil {
			ln.Close()
			return nil, err
		}
		listeners = append(listeners, tcp)
	}
	return listeners, nil
}

// listenTCP serves mTLS when certificates are configured; plaintext only
// on loopback unless explicitly allowed.
func listenTCP(cfg Config) (net.Listener, error) {
	if cfg.TLS.Empty() {
		if err := certs.CheckPlaintext(cfg.ListenTCP, cfg.AllowInsecureTCP); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.ListenTCP, err)
		}
	}
	ln, err := net.Listen("tcp", cfg.ListenTCP)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenTCP, err)
	}
	if cfg.TLS.Empty() {
		return ln, nil
	}
	tc, err := certs.ServerConfig(cfg.TLS)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("TLS for %s: %w", cfg.ListenTCP, err)
	}
	return tls.NewListener(ln, tc), nil
}

func isPermission(err error) bool {
	return errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
}

// pipeline serialises every use of the collector, which is not safe for
// concurrent use: records arrive on probes.Run's goroutine, ticks on a timer
// and stats requests on API handlers. A mutex rather than a channel to one
// select loop keeps the hot path (one call per kernel record) free of a
// goroutine hand-off.
type pipeline struct {
	mu sync.Mutex
	c  *collector.Collector
}

func (p *pipeline) handle(ev *probes.Event) {
	p.mu.Lock()
	p.c.Handle(ev)
	p.mu.Unlock()
}

func (p *pipeline) tickUntil(ctx context.Context) {
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			p.c.Tick(now)
			p.mu.Unlock()
		}
	}
}

func (p *pipeline) flush() {
	p.mu.Lock()
	p.c.Flush()
	p.mu.Unlock()
}

func (p *pipeline) stats() collector.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.Stats()
}

// logStatus logs one line per interval at debug level: rates since the last
// line and loss totals.
func logStatus(ctx context.Context, log *slog.Logger, every time.Duration, status func() Status) {
	if !log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev, prevAt := status(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := status()
			secs := now.Sub(prevAt).Seconds()
			var drops uint64
			for _, n := range cur.ProbeDrops {
				drops += n
			}
			log.Debug("status",
				"flows_per_s", fmt.Sprintf("%.1f", float64(cur.FlowsSeen-prev.FlowsSeen)/secs),
				"events_per_s", fmt.Sprintf("%.1f", float64(cur.ProbeEvents-prev.ProbeEvents)/secs),
				"flows", cur.FlowsSeen,
				"probe_drops", drops,
				"follower_lost", cur.Ring.Lost,
				"queue_lost", cur.QueueLost,
				"followers", cur.Ring.Subscribers,
			)
			prev, prevAt = cur, now
		}
	}
}

// dropsByName keys the kernel's drop counters by reason; reasons the probes
// do not name are reported by number, and only when they counted something.
func dropsByName(drops []uint64) map[string]uint64 {
	out := make(map[string]uint64, len(drops))
	for i, n := range drops {
		name := probes.DropReason(i).String()
		if n != 0 || !strings.HasPrefix(name, "drop_") {
			out[name] = n
		}
	}
	return out
}
