package prometheus

import (
	prom "github.com/prometheus/client_golang/prometheus"
)

// selfCollector reports the exporter's own state at scrape time from its
// atomic counters: nothing is done per flow for these.
type selfCollector struct{ e *Exporter }

var (
	queueLengthDesc = prom.NewDesc("sextant_exporter_queue_length",
		"Flows waiting in an exporter's queue.", []string{"exporter"}, nil)
	queueCapacityDesc = prom.NewDesc("sextant_exporter_queue_capacity",
		"Capacity of an exporter's queue, in flows.", []string{"exporter"}, nil)
	droppedDesc = prom.NewDesc("sextant_exporter_dropped_flows_total",
		"Flows an exporter dropped because its queue was full.", []string{"exporter"}, nil)
	exportedDesc = prom.NewDesc("sextant_exporter_flows_total",
		"Flows an exporter processed.", []string{"exporter"}, nil)
	seriesDesc = prom.NewDesc("sextant_metric_series",
		"Series of a golden-signal metric (its overflow series not counted).", []string{"metric"}, nil)
	seriesLimitDesc = prom.NewDesc("sextant_metric_series_limit",
		"Series limit of each golden-signal metric; beyond it observations go to the _overflow_ series.", nil, nil)
	overflowDesc = prom.NewDesc("sextant_metric_overflow_observations_total",
		"Observations of a golden-signal metric that went to its _overflow_ series because the metric had reached its series limit.", []string{"metric"}, nil)
)

func (c *selfCollector) Describe(ch chan<- *prom.Desc) {
	for _, d := range []*prom.Desc{queueLengthDesc, queueCapacityDesc, droppedDesc, exportedDesc, seriesDesc, seriesLimitDesc, overflowDesc} {
		ch <- d
	}
}

func (c *selfCollector) Collect(ch chan<- prom.Metric) {
	e := c.e
	length, capacity, dropped := e.QueueStats()
	collectQueue(ch, "prometheus", QueueStats{Received: e.exported.Load(), Dropped: dropped, Queued: length, Capacity: capacity})
	ch <- prom.MustNewConstMetric(seriesLimitDesc, prom.GaugeValue, float64(e.httpFams[0].limit))
	report := func(names []string, series int64, overflowed uint64) {
		for _, n := range names {
			ch <- prom.MustNewConstMetric(seriesDesc, prom.GaugeValue, float64(series), n)
			ch <- prom.MustNewConstMetric(overflowDesc, prom.CounterValue, float64(overflowed), n)
		}
	}
	for i := range sides {
		h, r := e.httpFams[i], e.rpcFams[i]
		report(h.names, h.count.Load(), h.overflowed.Load())
		report(r.names, r.count.Load(), r.overflowed.Load())
	}
	report([]string{policyVerdictsName}, e.policy.count.Load(), e.policy.overflowed.Load())
}
