package prometheus

import (
	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/sextant/sextant/observer/ring"
)

// The agent and the relay report their pipelines with the same families,
// so that one dashboard row reads either (the component label, set on the
// registry, tells them apart).

// ScrapeTime is a prom.Collector made of descriptors and a function that
// reads their values at scrape time: nothing is done per flow for
// self-metrics.
type ScrapeTime struct {
	Descs []*prom.Desc
	Read  func(ch chan<- prom.Metric)
}

func (c ScrapeTime) Describe(ch chan<- *prom.Desc) {
	for _, d := range c.Descs {
		ch <- d
	}
}

func (c ScrapeTime) Collect(ch chan<- prom.Metric) { c.Read(ch) }

var (
	ringEventsDesc      = prom.NewDesc("sextant_ring_events", "Events held in the Observer API's ring now.", nil, nil)
	ringCapacityDesc    = prom.NewDesc("sextant_ring_capacity", "Capacity of the Observer API's ring, in events.", nil, nil)
	ringWrittenDesc     = prom.NewDesc("sextant_ring_written_total", "Events written to the ring.", nil, nil)
	ringOverwrittenDesc = prom.NewDesc("sextant_ring_overwritten_total", "Events pushed out of the ring by newer ones.", nil, nil)
	ringLostDesc        = prom.NewDesc("sextant_ring_follower_lost_total", "Events followers of the Observer API did not receive because they were slow.", nil, nil)
	ringFollowersDesc   = prom.NewDesc("sextant_ring_followers", "Followers of the Observer API now.", nil, nil)
)

// RingCollector reports an Observer API ring as sextant_ring_*.
func RingCollector(stats func() ring.Stats) prom.Collector {
	return ScrapeTime{
		Descs: []*prom.Desc{ringEventsDesc, ringCapacityDesc, ringWrittenDesc, ringOverwrittenDesc, ringLostDesc, ringFollowersDesc},
		Read: func(ch chan<- prom.Metric) {
			rs := stats()
			ch <- prom.MustNewConstMetric(ringEventsDesc, prom.GaugeValue, float64(rs.Len))
			ch <- prom.MustNewConstMetric(ringCapacityDesc, prom.GaugeValue, float64(rs.Capacity))
			ch <- prom.MustNewConstMetric(ringWrittenDesc, prom.CounterValue, float64(rs.Written))
			ch <- prom.MustNewConstMetric(ringOverwrittenDesc, prom.CounterValue, float64(rs.Overwritten))
			ch <- prom.MustNewConstMetric(ringLostDesc, prom.CounterValue, float64(rs.Lost))
			ch <- prom.MustNewConstMetric(ringFollowersDesc, prom.GaugeValue, float64(rs.Subscribers))
		},
	}
}

// QueueStats is what every exporter reports of its queue.
type QueueStats struct {
	Received uint64 // flows handed to Export
	Dropped  uint64 // flows it had to drop
	Queued   int    // flows (or batches) waiting now
	Capacity int    // of the queue, same unit
}

// Queue names an exporter and reads its queue (ok false while it is not
// running: nothing is reported for it then).
type Queue struct {
	Exporter string
	Stats    func() (s QueueStats, ok bool)
}

// ExporterCollector reports exporters' queues as sextant_exporter_* with
// exporter=<name>.
func ExporterCollector(queues ...Queue) prom.Collector {
	return ScrapeTime{
		Descs: []*prom.Desc{queueLengthDesc, queueCapacityDesc, droppedDesc, exportedDesc},
		Read: func(ch chan<- prom.Metric) {
			for _, q := range queues {
				s, ok := q.Stats()
				if !ok {
					continue
				}
				collectQueue(ch, q.Exporter, s)
			}
		},
	}
}

func collectQueue(ch chan<- prom.Metric, name string, s QueueStats) {
	ch <- prom.MustNewConstMetric(queueLengthDesc, prom.GaugeValue, float64(s.Queued), name)
	ch <- prom.MustNewConstMetric(queueCapacityDesc, prom.GaugeValue, float64(s.Capacity), name)
	ch <- prom.MustNewConstMetric(droppedDesc, prom.CounterValue, float64(s.Dropped), name)
	ch <- prom.MustNewConstMetric(exportedDesc, prom.CounterValue, float64(s.Received), name)
}
