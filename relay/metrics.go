package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	relaypb "github.com/cilium/cilium/api/v1/relay"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/exporters/otel"
	promexp "github.com/sextant/sextant/exporters/prometheus"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/stage"
)

// DefaultMetricsListen is where the relay serves Prometheus metrics (the
// agent's port + 1).
const DefaultMetricsListen = "127.0.0.1:9963"

// MetricsConfig configures the relay's /metrics. Like the agent's it is
// plain HTTP and carries counters only: no flow content.
type MetricsConfig struct {
	Listen string `yaml:"listen"`
}

// relayMetrics reports the relay's pipeline at scrape time, with the
// families and conventions of the agent's (docs/metrics.md), so that loss
// is never silent at the relay either.
type relayMetrics struct {
	r          *Relay
	export     *exportStage
	clickhouse atomic.Pointer[clickhouse.Exporter]
	otel       atomic.Pointer[otel.Exporter]
	reg        *prom.Registry
}

func desc(name, help string, labels ...string) *prom.Desc {
	return prom.NewDesc("sextant_"+name, help, labels, nil)
}

var (
	mergedDesc  = desc("relay_events_merged_total", "Events released into the merged stream.")
	lateDesc    = desc("relay_events_late_total", "Merged events released after a newer one (they arrived after the sort window).")
	resumedDesc = desc("relay_streams_resumed_total", "Agent streams that continued exactly where an earlier one stopped (its cursor): nothing delivered twice.")
	heldDesc    = desc("relay_events_held", "Events waiting in the sort window now.")
	nodesDesc   = desc("relay_nodes", "Agents by state.", "state")
	subDropDesc = desc("relay_subscription_dropped_events_total", "Merged events a subscriber did not read before the relay's ring overwrote them, lost for it.", "subscriber")

	chWrittenDesc  = desc("clickhouse_written_flows_total", "Flows written to the flow history.")
	chSpooledDesc  = desc("clickhouse_spooled_flows_total", "Flows that went through the disk spool while the store was away.")
	chReplayedDesc = desc("clickhouse_replayed_flows_total", "Spooled flows written after the store came back.")
	chSpoolBatches = desc("clickhouse_spool_batches", "Batches waiting in the disk spool now.")
	chSpoolBytes   = desc("clickhouse_spool_bytes", "Bytes of the disk spool now.")

	otlpSentDesc   = desc("otlp_spans_sent_total", "Spans the OTLP backend accepted.")
	otlpFailedDesc = desc("otlp_spans_failed_total", "Spans in OTLP export requests that failed.")
	otlpErrorsDesc = desc("otlp_export_errors_total", "OTLP export requests that failed (traces and metrics).")
)

func newMetrics(r *Relay, export *exportStage) *relayMetrics {
	m := &relayMetrics{r: r, export: export, reg: prom.NewRegistry()}
	labelled := prom.WrapRegistererWith(prom.Labels{"component": "relay"}, m.reg)
	labelled.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		promexp.RingCollector(r.ring.Stats),
		promexp.ExporterCollector(
			promexp.Queue{Exporter: "clickhouse", Stats: m.clickhouseQueue},
			promexp.Queue{Exporter: "otlp", Stats: m.otlpQueue},
		),
		promexp.ScrapeTime{
			Descs: []*prom.Desc{mergedDesc, lateDesc, resumedDesc, heldDesc, nodesDesc, subDropDesc,
				chWrittenDesc, chSpooledDesc, chReplayedDesc, chSpoolBatches, chSpoolBytes, otlpSentDesc, otlpFailedDesc, otlpErrorsDesc},
			Read: m.collect,
		},
	)
	return m
}

func (m *relayMetrics) clickhouseQueue() (promexp.QueueStats, bool) {
	e := m.clickhouse.Load()
	if e == nil {
		return promexp.QueueStats{}, false
	}
	s := e.Stats()
	return promexp.QueueStats{Received: s.Exported, Dropped: s.Dropped, Queued: s.QueueBatches, Capacity: e.QueueCapacity()}, true
}

func (m *relayMetrics) otlpQueue() (promexp.QueueStats, bool) {
	e := m.otel.Load()
	if e == nil {
		return promexp.QueueStats{}, false
	}
	s := e.Stats()
	return promexp.QueueStats{Received: s.Received, Dropped: s.Dropped, Queued: s.Queued, Capacity: s.QueueSize}, true
}

func (m *relayMetrics) collect(ch chan<- prom.Metric) {
	counter := func(d *prom.Desc, v uint64, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.CounterValue, float64(v), lvs...)
	}
	gauge := func(d *prom.Desc, v float64, lvs ...string) {
		ch <- prom.MustNewConstMetric(d, prom.GaugeValue, v, lvs...)
	}
	st := m.r.Stats()
	counter(mergedDesc, st.Merged)
	counter(lateDesc, st.Late)
	counter(resumedDesc, st.Resumed)
	gauge(heldDesc, float64(st.Held))
	var connected, unavailable float64
	for _, n := range m.r.Nodes() {
		if n.State == relaypb.NodeState_NODE_CONNECTED {
			connected++
		} else {
			unavailable++
		}
	}
	gauge(nodesDesc, connected, "connected")
	gauge(nodesDesc, unavailable, "unavailable")
	counter(subDropDesc, m.export.Dropped(), "exporters")
	if e := m.clickhouse.Load(); e != nil {
		s := e.Stats()
		counter(chWrittenDesc, s.Written)
		counter(chSpooledDesc, s.Spooled)
		counter(chReplayedDesc, s.Replayed)
		gauge(chSpoolBatches, float64(s.SpoolBatches))
		gauge(chSpoolBytes, float64(s.SpoolBytes))
	}
	if e := m.otel.Load(); e != nil {
		s := e.Stats()
		counter(otlpSentDesc, s.SpansSent)
		counter(otlpFailedDesc, s.SpansFailed)
		counter(otlpErrorsDesc, s.ExportErrors+s.MetricExportErrors)
	}
}

func (m *relayMetrics) stage(cfg MetricsConfig, log *slog.Logger) stage.Stage {
	var h serve.HTTP
	return stage.Stage{
		Name: "metrics",
		Start: func(context.Context) error {
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("metrics: listen on %s: %w", cfg.Listen, err)
			}
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", promexp.Handler(m.reg))
			h = serve.HTTP{Listener: serve.LimitConns(ln, 0), Handler: mux}
			log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
			return nil
		},
		Run:  func(ctx context.Context) error { return h.Run(ctx) },
		Stop: func(ctx context.Context) error { return h.Stop(ctx) },
	}
}
