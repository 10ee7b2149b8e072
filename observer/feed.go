package observer

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/ring"
)

// FeedQueue is how many flows may wait for their conversion to Hubble
// events; beyond that flows are lost (and reported as lost events of
// source OBSERVER_EVENTS_QUEUE), never waited for.
const FeedQueue = 4096

// Feed is the sink that fills an Observer API's ring: each flow becomes
// Hubble events (a request and a response), the last of which carries the
// whole flow for the relay's exporters. Export only queues; the conversion
// runs on the feed's own goroutine, off the collector's lock.
type Feed struct {
	node  string
	ring  *ring.Ring[*observerpb.GetFlowsResponse]
	queue chan *flow.Flow
	log   *slog.Logger

	queueLost atomic.Uint64 // flows lost because the queue was full
	seen      atomic.Uint64 // flow events written to the ring
	converted chan struct{} // closed when the converter returned
	closed    sync.Once
}

// NewFeed starts a feed writing into r, naming node in the events it
// makes itself (lost events).
func NewFeed(r *ring.Ring[*observerpb.GetFlowsResponse], node string, log *slog.Logger) *Feed {
	f := &Feed{node: node, ring: r, queue: make(chan *flow.Flow, FeedQueue), log: log, converted: make(chan struct{})}
	go f.convert()
	return f
}

// Export queues fl for conversion; it never blocks.
func (f *Feed) Export(fl *flow.Flow) {
	select {
	case f.queue <- fl:
	default:
		f.queueLost.Add(1)
	}
}

// Close converts what is queued, then stops; Export must not be called
// any more.
func (f *Feed) Close(ctx context.Context) error {
	f.closed.Do(func() { close(f.queue) })
	select {
	case <-f.converted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Seen is how many flow events reached the ring; QueueLost how many flows
// the full queue lost.
func (f *Feed) Seen() uint64      { return f.seen.Load() }
func (f *Feed) QueueLost() uint64 { return f.queueLost.Load() }

func (f *Feed) convert() {
	defer close(f.converted)
	var reported uint64
	for fl := range f.queue {
		if lost := f.queueLost.Load(); lost > reported {
			f.Lost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost-reported)
			reported = lost
		}
		evs := hubble.Events(fl)
		if len(evs) > 0 {
			if err := hubble.AttachFlow(evs[len(evs)-1], fl); err != nil {
				f.log.Warn("attach flow", "err", err)
			}
		}
		for _, ev := range evs {
			f.ring.Write(&observerpb.GetFlowsResponse{
				Time:          ev.GetTime(),
				NodeName:      ev.GetNodeName(),
				ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: ev},
			})
			f.seen.Add(1)
		}
	}
	if lost := f.queueLost.Load(); lost > reported {
		f.Lost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost-reported)
	}
}

// Lost writes a lost-event notice: n events of src never reached the ring.
func (f *Feed) Lost(src flowpb.LostEventSource, n uint64) {
	f.ring.Write(&observerpb.GetFlowsResponse{
		Time:     timestamppb.Now(),
		NodeName: f.node,
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{
			LostEvents: &flowpb.LostEvent{Source: src, NumEventsLost: n},
		},
	})
}
