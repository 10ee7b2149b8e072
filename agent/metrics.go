package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/collector/http2"
	promexp "github.com/sextant/sextant/exporters/prometheus"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/probes"
)

// DefaultMetricsListen is where the agent serves Prometheus metrics.
const DefaultMetricsListen = "127.0.0.1:9962"

// MetricsConfig configures the agent's Prometheus endpoint.
type MetricsConfig struct {
	// Listen is the TCP address of /metrics ("" for none). Metrics carry
	// route templates, host names and workload names, never headers or
	// bodies; any address is accepted so that a Prometheus elsewhere can
	// scrape.
	Listen string
	// MaxSeries and QueueSize tune the exporter (see
	// exporters/prometheus.Config).
	MaxSeries int
	QueueSize int
	// Pprof also serves Go's profiles under /debug/pprof/ on the same
	// address: where the agent's CPU and memory go, on a live node.
	Pprof bool
}

// agentMetrics is the Prometheus exporter fed by the collector, the agent's
// self-metrics, and the HTTP server of /metrics. A nil *agentMetrics is
// "metrics off": every method does nothing.
type agentMetrics struct {
	cfg  MetricsConfig
	log  *slog.Logger
	reg  *prom.Registry
	exp  *promexp.Exporter
	ln   net.Listener
	srv  *http.Server
	stop sync.Once
	done chan struct{}
}

// listenMetrics binds the metrics address and builds the exporter; like
// the API listeners it runs before the probes load, so that a taken port
// or a bad route pattern fails at once.
func listenMetrics(cfg MetricsConfig, log *slog.Logger) (*agentMetrics, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	reg := prom.NewRegistry()
	exp, err := promexp.New(promexp.Config{
		MaxSeries: cfg.MaxSeries, QueueSize: cfg.QueueSize, Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = exp.Close(context.Background())
		return nil, fmt.Errorf("metrics: listen on %s: %w", cfg.Listen, err)
	}
	return &agentMetrics{cfg: cfg, log: log, reg: reg, exp: exp, ln: ln, done: make(chan struct{})}, nil
}

// fanOut returns the collector's output: out, then the exporter. Both only
// queue, so the collector's lock is held for two channel sends.
func (m *agentMetrics) fanOut(out func(*flow.Flow)) func(*flow.Flow) {
	if m == nil {
		return out
	}
	return func(f *flow.Flow) {
		out(f)
		m.exp.Export(f)
	}
}

// serve registers the self-metrics and serves /metrics until stop.
func (m *agentMetrics) serve(p *probes.Probes, api *observerAPI, pipe *pipeline) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&selfMetrics{probes: p, api: api, pipe: pipe})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promexp.Handler(m.reg))
	if m.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("serve metrics", "addr", m.ln.Addr().String(), "err", err)
		}
	}()
	m.log.Info("serving Prometheus metrics", "url", "http://"+m.ln.Addr().String()+"/metrics")
}

// close observes what the exporter has queued, then stops serving. Call it
// once the collector has flushed; safe to call more than once.
func (m *agentMetrics) close() {
	if m == nil {
		return
	}
	m.stop.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.exp.Close(ctx); err != nil {
			m.log.Warn("close Prometheus exporter", "err", err)
		}
		if m.srv == nil {
			m.ln.Close()
			return
		}
		if err := m.srv.Shutdown(ctx); err != nil {
			m.srv.Close()
		}
		<-m.done
	})
}

// selfMetrics reports the agent's own counters at scrape time, from the
// Stats snapshots the probes, the collector and the ring keep anyway:
// nothing is done per record or per flow for them.
type selfMetrics struct {
	probes *probes.Probes
	api    *observerAPI
	pipe   *pipeline
}

func desc(name, help string, labels ...string) *prom.Desc {
	return prom.NewDesc("sextant_"+name, help, labels, nil)
}

var (
	probeRecordsDesc = desc("probe_records_total", "Records read from the kernel ring buffer (rate() is the agent's events/s).")
	probeDropsDesc   = desc("probe_drops_total", "Records the kernel could not emit, by reason (ringbuf_full: the ring buffer was full).", "reason")
	probeInvalidDesc = desc("probe_invalid_records_total", "Records user space could not decode (a bug if ever non-zero).")
	probeRunDesc     = desc("probe_program_run_seconds_total", "CPU time spent in each eBPF program (only with BPF run-time statistics enabled).", "program")
	probeRunsDesc    = desc("probe_program_runs_total", "Runs of each eBPF program (only with BPF run-time statistics enabled).", "program")

	collRecordsDesc  = desc("collector_records_total", "Records the collector handled.")
	collFlowsDesc    = desc("collector_flows_total", "Flows (request/response exchanges) the collector emitted.")
	collConnsDesc    = desc("collector_connections", "Connections tracked now.")
	collStreamsDesc  = desc("collector_streams", "Exchanges in flight now: open HTTP/2 streams and HTTP/1 requests awaiting their response.")
	collEvictedDesc  = desc("collector_connections_evicted_total", "Connections closed to stay under the limit, or whose process was gone.")
	collOrphanDesc   = desc("collector_orphan_records_total", "Records of connections without state (first record lost, or out of scope).")
	collSeqGapsDesc  = desc("collector_sequence_gaps_total", "Record losses detected from sequence gaps.")
	decodeErrorsDesc = desc("decode_errors_total", "Decoding problems by protocol and kind.", "protocol", "kind")
	hpackUnknownDesc = desc("hpack_unknown_fields_total", "HTTP/2 header fields that referenced HPACK state the agent never saw.")
	h2StreamsDesc    = desc("http2_streams_incomplete_total", "HTTP/2 exchanges not seen whole, by reason.", "reason")
	h1EventsDesc     = desc("http1_events_total", "HTTP/1.x decoder events other than complete exchanges, by kind.", "kind")

	ringEventsDesc      = desc("ring_events", "Events held in the agent's ring now.")
	ringCapacityDesc    = desc("ring_capacity", "Capacity of the agent's ring, in events.")
	ringWrittenDesc     = desc("ring_written_total", "Events written to the ring.")
	ringOverwrittenDesc = desc("ring_overwritten_total", "Events pushed out of the ring by newer ones.")
	ringLostDesc        = desc("ring_follower_lost_total", "Events followers of the Observer API did not receive because they were slow.")
	ringFollowersDesc   = desc("ring_followers", "Followers of the Observer API now.")
	feedLostDesc        = desc("feed_lost_flows_total", "Flows lost before their conversion to Observer API events (conversion queue full).")
)

func (s *selfMetrics) Describe(ch chan<- *prom.Desc) {
	for _, d := range []*prom.Desc{
		probeRecordsDesc, probeDropsDesc, probeInvalidDesc, probeRunDesc, probeRunsDesc,
		collRecordsDesc, collFlowsDesc, collConnsDesc, collStreamsDesc, collEvictedDesc, collOrphanDesc, collSeqGapsDesc,
		decodeErrorsDesc, hpackUnknownDesc, h2StreamsDesc, h1EventsDesc,
		ringEventsDesc, ringCapacityDesc, ringWrittenDesc, ringOverwrittenDesc, ringLostDesc, ringFollowersDesc, feedLostDesc,
	} {
		ch <- d
	}
}

func (s *selfMetrics) Collect(ch chan<- prom.Metric) {
	counter := func(d *prom.Desc, v uint64, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.CounterValue, float64(v), lvs...)
	}
	gauge := func(d *prom.Desc, v int, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.GaugeValue, float64(v), lvs...)
	}

	ps := s.probes.Stats()
	counter(probeRecordsDesc, ps.Events)
	counter(probeInvalidDesc, ps.Invalid)
	for reason, n := range dropsByName(ps.Drops[:]) {
		counter(probeDropsDesc, n, reason)
	}
	for _, prog := range ps.Programs {
		if prog.RunCount == 0 {
			continue // statistics off, or never ran
		}
		ch <- prom.MustNewConstMetric(probeRunDesc, prom.CounterValue, float64(prog.RunTimeNs)/1e9, prog.Name)
		counter(probeRunsDesc, prog.RunCount, prog.Name)
	}

	cs := s.pipe.stats()
	collectorStats(cs, counter, gauge)

	if s.api == nil {
		return // metrics only: no ring, no feed
	}
	rs := s.api.ring.Stats()
	collectRing(rs, counter, gauge)
	counter(feedLostDesc, s.api.queueLost.Load())
}

func collectorStats(cs collector.Stats, counter func(*prom.Desc, uint64, ...string), gauge func(*prom.Desc, int, ...string)) {
	counter(collRecordsDesc, cs.Events)
	counter(collFlowsDesc, cs.Flows)
	gauge(collConnsDesc, cs.Conns)
	gauge(collStreamsDesc, cs.Streams)
	counter(collEvictedDesc, cs.ConnsEvicted)
	counter(collOrphanDesc, cs.OrphanRecords)
	counter(collSeqGapsDesc, cs.SeqGaps)

	for k := range http2.NumErrorKinds {
		counter(decodeErrorsDesc, cs.HTTP2.Errors[k], "http2", k.String())
	}
	counter(decodeErrorsDesc, cs.ParseErrors, "http2", "kernel_parse_stopped")
	counter(decodeErrorsDesc, cs.HTTP1.Malformed, "http1", "malformed")
	counter(hpackUnknownDesc, cs.HTTP2.UnknownFields)
	counter(h2StreamsDesc, cs.HTTP2.StreamsJoinedMidway, "joined_midway")
	counter(h2StreamsDesc, cs.HTTP2.StreamsLost, "lost")
	counter(h2StreamsDesc, cs.HTTP2.StreamsEvicted, "evicted")

	h1 := cs.HTTP1
	for _, e := range []struct {
		kind string
		n    uint64
	}{
		{"truncated_headers", h1.TruncatedHeaders}, {"lost", h1.Lost}, {"resync", h1.Resyncs},
		{"hidden", h1.Hidden}, {"orphan_response", h1.OrphanResponses}, {"evicted", h1.Evicted},
		{"upgrade", h1.Upgrades},
	} {
		counter(h1EventsDesc, e.n, e.kind)
	}
}

func collectRing(rs ring.Stats, counter func(*prom.Desc, uint64, ...string), gauge func(*prom.Desc, int, ...string)) {
	gauge(ringEventsDesc, rs.Len)
	gauge(ringCapacityDesc, rs.Capacity)
	counter(ringWrittenDesc, rs.Written)
	counter(ringOverwrittenDesc, rs.Overwritten)
	counter(ringLostDesc, rs.Lost)
	gauge(ringFollowersDesc, rs.Subscribers)
}
