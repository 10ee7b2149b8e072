// Package ring keeps the most recent flows in a fixed-capacity buffer and
// fans new flows out to followers.
//
// The writer (the collector) must never wait for a reader: a follower that
// does not keep up loses flows, and every loss is counted, per follower and
// in total, so that "nothing was printed" can always be told apart from
// "something was dropped".
//
// Flows are shared by pointer between the ring and every reader: once
// written, a Flow must be treated as read-only.
package ring

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/sextant/sextant/collector/flow"
)

// DefaultCapacity is the number of flows kept when New is given no size.
const DefaultCapacity = 65536

// DefaultSubscriberBuffer is the channel size used when Subscribe is given
// no buffer size.
const DefaultSubscriberBuffer = 1024

// Ring is a fixed-capacity ring of recent flows. It is safe for concurrent
// use by one or more writers and any number of readers.
type Ring struct {
	mu      sync.Mutex
	buf     []*flow.Flow
	written uint64 // total flows ever written; buf[written%len(buf)] is the next slot
	subs    map[*Subscription]struct{}

	lost atomic.Uint64 // flows lost by all followers, including departed ones
}

// Stats is a point-in-time view of the ring's counters.
type Stats struct {
	Capacity    int    `json:"capacity"`
	Len         int    `json:"len"`         // flows currently held
	Written     uint64 `json:"written"`     // flows ever written
	Overwritten uint64 `json:"overwritten"` // flows pushed out by newer ones
	Lost        uint64 `json:"lost"`        // flows followers did not receive because they were slow
	Subscribers int    `json:"subscribers"` // followers right now
}

// New returns an empty ring holding up to capacity flows
// (DefaultCapacity when capacity <= 0).
func New(capacity int) *Ring {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Ring{
		buf:  make([]*flow.Flow, capacity),
		subs: make(map[*Subscription]struct{}),
	}
}

// Capacity returns the number of flows the ring holds at most.
func (r *Ring) Capacity() int { return len(r.buf) }

// Write stores f, overwriting the oldest flow when the ring is full, and
// offers f to every follower without waiting: a follower whose buffer is full
// loses f. A nil flow is ignored.
func (r *Ring) Write(f *flow.Flow) {
	if f == nil {
		return
	}
	r.mu.Lock()
	r.buf[r.written%uint64(len(r.buf))] = f
	r.written++
	for s := range r.subs {
		select {
		case s.ch <- f:
		default:
			s.lost.Add(1)
			r.lost.Add(1)
		}
	}
	r.mu.Unlock()
}

// Last returns up to n of the most recent flows, oldest first.
func (r *Ring) Last(n int) []*flow.Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked(n)
}

func (r *Ring) lastLocked(n int) []*flow.Flow {
	held := r.lenLocked()
	if n > held {
		n = held
	}
	if n <= 0 {
		return nil
	}
	out := make([]*flow.Flow, n)
	size := uint64(len(r.buf))
	start := r.written - uint64(n)
	for i := range out {
		out[i] = r.buf[(start+uint64(i))%size]
	}
	return out
}

func (r *Ring) lenLocked() int {
	if r.written < uint64(len(r.buf)) {
		return int(r.written)
	}
	return len(r.buf)
}

// Stats returns the ring's counters.
func (r *Ring) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{
		Capacity:    len(r.buf),
		Len:         r.lenLocked(),
		Written:     r.written,
		Lost:        r.lost.Load(),
		Subscribers: len(r.subs),
	}
	if r.written > uint64(len(r.buf)) {
		st.Overwritten = r.written - uint64(len(r.buf))
	}
	return st
}

// Subscription is one follower: it receives every flow written after it was
// created, unless its buffer was full at the time of the write.
type Subscription struct {
	ch   chan *flow.Flow
	lost atomic.Uint64
}

// Flows returns the stream of new flows. It is closed when the context given
// to Subscribe is done.
func (s *Subscription) Flows() <-chan *flow.Flow { return s.ch }

// Lost returns how many flows this follower missed because its buffer was full.
func (s *Subscription) Lost() uint64 { return s.lost.Load() }

// Subscribe starts following the ring with a channel of buffer flows
// (DefaultSubscriberBuffer when buffer <= 0). The subscription ends, and its
// channel is closed, when ctx is done.
func (r *Ring) Subscribe(ctx context.Context, buffer int) *Subscription {
	_, s := r.LastAndSubscribe(ctx, 0, buffer)
	return s
}

// LastAndSubscribe returns up to n of the most recent flows and a
// subscription that starts exactly after the last of them, so that a reader
// asking for history and then following sees no flow twice and misses none
// in between (except those counted as lost).
func (r *Ring) LastAndSubscribe(ctx context.Context, n, buffer int) ([]*flow.Flow, *Subscription) {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &Subscription{ch: make(chan *flow.Flow, buffer)}

	r.mu.Lock()
	last := r.lastLocked(n)
	r.subs[s] = struct{}{}
	r.mu.Unlock()

	// Unsubscribe under the lock so that Write never sends on a closed channel.
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		delete(r.subs, s)
		close(s.ch)
		r.mu.Unlock()
	})
	return last, s
}
