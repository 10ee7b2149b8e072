package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/probes"
)

// Status is the agent's view of itself, logged at debug level; the Observer
// API's ServerStatus carries its flow counters.
type Status struct {
	Node    string
	Started time.Time
	Uptime  string
	// FlowsSeen counts every flow event (request or response) written to
	// the ring since start.
	FlowsSeen uint64
	Ring      ring.Stats
	// ProbeEvents counts records read from the kernel; ProbeDrops counts
	// traffic the kernel could not deliver, by reason.
	ProbeEvents uint64
	ProbeDrops  map[string]uint64
	// ProbeInvalid counts records user space could not decode.
	ProbeInvalid uint64
	Collector    collector.Stats
}

func status(node string, started time.Time, p *probesStage, api *observerAPI, coll *collector.Collector) Status {
	ps := p.Stats()
	st := Status{
		Node:         node,
		Started:      started,
		Uptime:       time.Since(started).Round(time.Second).String(),
		ProbeEvents:  ps.Events,
		ProbeInvalid: ps.Invalid,
		ProbeDrops:   dropsByName(ps.Drops[:]),
		Collector:    coll.Stats(),
	}
	if api != nil {
		st.FlowsSeen = api.feed.Seen()
		st.Ring = api.ring.Stats()
	}
	return st
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
				"parse_stops", cur.Collector.ParseErrors,
				"conns", cur.Collector.Conns,
				"conns_evicted", cur.Collector.ConnsEvicted,
				"orphan_records", cur.Collector.OrphanRecords,
				"follower_lost", cur.Ring.Lost,
				"followers", cur.Ring.Subscribers,
			)
			prev, prevAt = cur, now
		}
	}
}

// dropsByName keys the kernel's drop counters by reason. Parse stops are
// left out: they are decode errors of bad input, not traffic lost (the
// collector counts them). Reasons the probes do not name are reported by
// number, and only when they counted something.
func dropsByName(drops []uint64) map[string]uint64 {
	out := make(map[string]uint64, len(drops))
	for i, n := range drops {
		r := probes.DropReason(i)
		if r == probes.DropParseStopped {
			continue
		}
		name := r.String()
		if n != 0 || !strings.HasPrefix(name, "drop_") {
			out[name] = n
		}
	}
	return out
}
