package relay

import (
	"sync"
	"sync/atomic"

	observerpb "github.com/cilium/cilium/api/v1/observer"
)

// DefaultSubscriptionBuffer is the buffer of a subscription given none.
const DefaultSubscriptionBuffer = 4096

// Subscription delivers the merged stream to one consumer (an exporter).
// The merge never waits for it: when its buffer is full the newest event is
// dropped for this subscription alone and counted, so a slow exporter loses
// recent events but sees no gap it cannot measure.
type Subscription struct {
	r       *Relay
	ch      chan *observerpb.GetFlowsResponse
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe returns a subscription to every event merged from now on, with
// room for buffer events (DefaultSubscriptionBuffer when <= 0). Events are
// shared with the relay's ring and other subscribers: treat them as
// read-only.
func (r *Relay) Subscribe(buffer int) *Subscription {
	if buffer <= 0 {
		buffer = DefaultSubscriptionBuffer
	}
	s := &Subscription{r: r, ch: make(chan *observerpb.GetFlowsResponse, buffer)}
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	if r.stopped {
		close(s.ch)
		s.once.Do(func() {})
		return s
	}
	r.subs = append(r.subs, s)
	return s
}

// Events is the merged stream, in time order. It is closed by Close and
// when the relay stops.
func (s *Subscription) Events() <-chan *observerpb.GetFlowsResponse { return s.ch }

// Dropped is how many events this subscription lost because its buffer was
// full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel.
func (s *Subscription) Close() {
	s.once.Do(func() {
		r := s.r
		r.subsMu.Lock()
		defer r.subsMu.Unlock()
		for i, x := range r.subs {
			if x == s {
				r.subs = append(r.subs[:i], r.subs[i+1:]...)
				close(s.ch)
				return
			}
		}
		// Not listed: Run already closed it on the way out.
	})
}

// publish offers a batch of released events to every subscription.
func (r *Relay) publish(batch []*observerpb.GetFlowsResponse) {
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	for _, s := range r.subs {
		for _, e := range batch {
			select {
			case s.ch <- e:
			default:
				s.dropped.Add(1)
			}
		}
	}
}
