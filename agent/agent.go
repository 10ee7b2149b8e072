// Package agent is the composition root of sextant on one node. Its stages,
// in the order data flows and in the order they start (they stop in
// reverse):
//
//	observer-api  Hubble Observer API, the link and the status service on the
//	              unix socket (and TCP with mTLS); status-api alone when metrics only
//	metrics       Prometheus /metrics
//	hubble-feed   sink: flows → Hubble events in the API's ring
//	prometheus    sink: flows → golden-signal metrics, policy verdict counts
//	policy        the policy engine (pinned enforcement, re-adopted; stays at stop)
//	verdicts      policy decisions → flows → every sink
//	proxy         the node proxy: xDS, gRPC forwarder, redirect, Envoy;
//	              its access records → flows → every sink
//	probes        the kernel programs (load, attach; detach at stop)
//	kernel-loss   traffic the kernel could not deliver → lost events
//	collector     records → flows → route → original-dst → policy (connection
//	              policies, L7 audit) → every sink
//
// The API answers Unavailable until every stage started, so an answer means
// the probes are attached. At shutdown the collector flushes first, the
// sinks drain, and followers of the API receive the last events before
// their streams end.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sextant/sextant/agent/statusapi"
	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/exporters"
	promexp "github.com/sextant/sextant/exporters/prometheus"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/route"
	"github.com/sextant/sextant/stage"
)

// Config configures an agent; it is also the `agent:` section of the
// configuration file (docs/configuration.md). Zero values take the
// defaults.
type Config struct {
	// Node names this host in every flow (default: the hostname).
	Node string `yaml:"node"`
	// MetricsOnly turns the flow side off: no ring, no Observer API, no
	// conversion to Hubble events. Every exchange is still decoded, but
	// only to feed /metrics, which is what most nodes need and costs a
	// fraction of keeping whole flows.
	MetricsOnly bool `yaml:"metricsOnly"`
	// Cgroup, when set, keeps only processes in this cgroup v2 subtree
	// (e.g. /sextant/node1): one agent per "node" of a shared host.
	Cgroup string `yaml:"cgroup"`
	// Routes are http.route templates (/api/users/{id}) tried before the
	// automatic collapsing of ids; the route stage names every flow's
	// route with them once, for every exporter here and on the relay.
	Routes   []string       `yaml:"routes"`
	Observer ObserverConfig `yaml:"observer"`
	Metrics  MetricsConfig  `yaml:"metrics"`
	// Capture says how the probes see socket traffic: "auto" (default:
	// the socket tracepoints where the kernel has them, ≥ 6.3), "socket"
	// or "syscall" (the raw syscall tracepoints, the fallback).
	Capture string `yaml:"capture"`
	// KernelRingBytes sizes the kernel→agent ring buffer (default
	// probes' 16 MiB). Records beyond it are dropped and counted.
	KernelRingBytes int `yaml:"kernelRingBytes"`
	// StatusInterval is how often a status line is logged at debug level
	// (default 10s).
	StatusInterval time.Duration `yaml:"statusInterval"`
	// Policy configures the policy stage (off while Policy.Dir is "").
	Policy PolicyConfig `yaml:"policy"`
	// Proxy configures the node proxy (off without Proxy.Config).
	Proxy ProxyConfig `yaml:"proxy"`

	// ExcludePIDs are never traced, in addition to the agent itself.
	ExcludePIDs []uint32 `yaml:"-"`
	// Collector tunes decoding; Node and Cgroup are taken from above.
	Collector collector.Config `yaml:"-"`
	Logger    *slog.Logger     `yaml:"-"`
}

// ErrPermission is wrapped by errors caused by missing privileges.
var ErrPermission = errors.New("permission denied: run as root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)")

// Run runs the agent until ctx is cancelled or a stage fails.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
	capture, err := probes.ParseCapture(cfg.Capture)
	if err != nil {
		return err
	}
	scope, err := kernelScope(cfg.Cgroup)
	if err != nil {
		return err
	}
	routes, err := route.New(cfg.Routes, 0)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	started := time.Now()

	var (
		stages []stage.Stage
		sinks  exporters.Fanout
		api    *observerAPI
		pr     = &probesStage{opts: probes.Options{
			ExcludePIDs:     append([]uint32{uint32(os.Getpid())}, cfg.ExcludePIDs...),
			RingBufferBytes: cfg.KernelRingBytes,
			Capture:         capture,
			Cgroup:          scope,
		}, log: log}
	)
	pol, err := newPolicyStage(cfg, &sinks)
	if err != nil {
		return err
	}
	px, err := newProxyStage(cfg, pol, &sinks)
	if err != nil {
		return err
	}
	statusSrv := statusapi.NewServer(func() statusapi.Sources {
		return statusapi.Sources{Policy: pol.engine(), Proxy: px.proxy()}
	})
	if !cfg.MetricsOnly {
		api = newObserverAPI(cfg, started, statusSrv)
		stages = append(stages, api.stage())
	} else if pol != nil || px != nil {
		stages = append(stages, statusOnlyAPI(cfg, statusSrv))
	}
	metrics, err := newMetrics(cfg.Metrics, log)
	if err != nil {
		return err
	}
	coll := collector.New(cfg.Collector, func(f *flow.Flow) {
		routes.Enrich(f)
		if px != nil {
			px.originalDst(f)
		}
		if eng := pol.engine(); eng != nil {
			eng.Enrich(f) // connection policies, L7 audit
		}
		sinks.Export(f)
	})
	if metrics != nil {
		metrics.self = &selfMetrics{probes: pr, api: api, coll: coll}
		if api != nil {
			metrics.also = append(metrics.also, promexp.RingCollector(api.ring.Stats))
		}
		if pol != nil {
			metrics.also = append(metrics.also, pol.eng.Metrics())
		}
		if px != nil {
			metrics.also = append(metrics.also, px.p.XDS().Collectors()...)
		}
		stages = append(stages, metrics.stage())
	}
	if api != nil {
		sinks = append(sinks, api.feed)
		stages = append(stages, sinkStage("hubble-feed", api.feed))
	}
	if metrics != nil {
		sinks = append(sinks, metrics.exp)
		stages = append(stages, sinkStage("prometheus", metrics.exp))
	}
	if pol != nil {
		stages = append(stages, pol.stage())
	}
	if px != nil {
		stages = append(stages, px.stage())
	}
	stages = append(stages, pr.stage())
	if api != nil {
		stages = append(stages, api.kernelLoss(pr))
	}
	stages = append(stages,
		stage.Stage{Name: "collector", Run: func(ctx context.Context) error { return coll.Run(ctx, pr.p) }},
		stage.Stage{Name: "status", Run: func(ctx context.Context) error {
			logStatus(ctx, log, cfg.StatusInterval, func() Status { return status(cfg.Node, started, pr, api, coll) })
			<-ctx.Done()
			return nil
		}},
	)
	if api == nil {
		log.Info("metrics only: no flows are kept and the Observer API is off")
	}
	err = stage.Run(ctx, log, func() {
		if api != nil {
			api.server.Ready()
		}
		if metrics != nil {
			metrics.ready.Store(true)
		}
		log.Info("observing", "node", cfg.Node, "capture", pr.p.Capture(), "probes_load_time", pr.p.LoadTime().Round(time.Millisecond))
	}, stages...)
	log.Info("stopped", "flows", coll.Stats().Flows)
	return err
}

func (cfg Config) withDefaults() (Config, error) {
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
	if cfg.Capture == "" {
		cfg.Capture = probes.CaptureAuto.String()
	}
	cfg.Collector.CgroupScope = cfg.Cgroup
	if cfg.MetricsOnly && cfg.Metrics.Listen == "" {
		return cfg, errors.New("metrics only, but no metrics address: nothing would be observable (set --metrics-listen)")
	}
	if cfg.MetricsOnly && cfg.Policy.Dir == "" {
		// Metrics aggregate: no flow is kept, so none needs its headers
		// (the L7 audit evaluator does: header rules).
		cfg.Collector.HTTP2.NoHeaderLists = true
	}
	cfg.Observer.withDefaults()
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	return cfg, nil
}

// kernelScope is the cgroup directory the probes capture in: Config.Cgroup
// under the cgroup2 mount, so that the kernel programs skip every other
// process (their traffic is neither tracked nor counted in the drops);
// "" when unscoped.
func kernelScope(cgroup string) (string, error) {
	if cgroup == "" {
		return "", nil
	}
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	if root == "" {
		return "", fmt.Errorf("cgroup %s: no cgroup v2 hierarchy mounted", cgroup)
	}
	return filepath.Join(root, cgroup), nil
}

// sinkStage drains a sink when its turn to stop comes: after the collector
// flushed into it, before the API stops serving what it wrote.
func sinkStage(name string, s exporters.Exporter) stage.Stage {
	return stage.Stage{Name: name, Stop: s.Close}
}

// probesStage loads and attaches the kernel programs.
type probesStage struct {
	opts probes.Options
	log  *slog.Logger
	p    *probes.Probes
	// loaded is p for readers on other goroutines (scrapes, status).
	loaded atomic.Pointer[probes.Probes]
}

func (s *probesStage) stage() stage.Stage {
	return stage.Stage{
		Name: "probes",
		Start: func(context.Context) error {
			p, err := probes.Load(s.opts)
			if err != nil {
				if isPermission(err) {
					return fmt.Errorf("%w: load probes: %v", ErrPermission, err)
				}
				return fmt.Errorf("load probes: %w", err)
			}
			s.p = p
			s.loaded.Store(p)
			return nil
		},
		Stop: func(context.Context) error { return s.p.Close() },
	}
}

// Stats are the probes' counters; zero before they loaded.
func (s *probesStage) Stats() probes.Stats {
	p := s.loaded.Load()
	if p == nil {
		return probes.Stats{}
	}
	return p.Stats()
}

func isPermission(err error) bool {
	return errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
}
