// Package ring keeps the most recent entries (flows, or the API events made
// of them) in a fixed-capacity buffer and fans new entries out to followers.
//
// The writer (the collector) must never wait for a reader: a follower that
// does not keep up loses entries, and every loss is counted, per follower
// and in total, so that "nothing was printed" can always be told apart from
// "something was dropped".
//
// Entries are shared between the ring and every reader: once written, an
// entry must be treated as read-only.
package ring

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
)

// DefaultCapacity is the number of entries kept when New is given no size.
const DefaultCapacity = 65536

// DefaultSubscriberBuffer is the channel size used when Subscribe is given
// no buffer size.
const DefaultSubscriberBuffer = 1024

// Ring is a fixed-capacity ring of recent entries. It is safe for
// concurrent use by one or more writers and any number of readers.
type Ring[T any] struct {
	mu      sync.Mutex
	buf     []T
	written uint64 // total entries ever written; buf[written%len(buf)] is the next slot
	subs    map[*Subscription[T]]struct{}

	lost atomic.Uint64 // entries lost by all followers, including departed ones
}

// Stats is a point-in-time view of the ring's counters.
type Stats struct {
	Capacity    int    `json:"capacity"`
	Len         int    `json:"len"`         // entries currently held
	Written     uint64 `json:"written"`     // entries ever written
	Overwritten uint64 `json:"overwritten"` // entries pushed out by newer ones
	Lost        uint64 `json:"lost"`        // entries followers did not receive because they were slow
	Subscribers int    `json:"subscribers"` // followers right now
}

// New returns an empty ring holding up to capacity entries
// (DefaultCapacity when capacity <= 0).
func New[T any](capacity int) *Ring[T] {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Ring[T]{
		buf:  make([]T, capacity),
		subs: make(map[*Subscription[T]]struct{}),
	}
}

// Capacity returns the number of entries the ring holds at most.
func (r *Ring[T]) Capacity() int { return len(r.buf) }

// Write stores v, overwriting the oldest entry when the ring is full, and
// offers v to every follower without waiting: a follower whose buffer is
// full loses v. A nil pointer (or nil interface, map, slice, channel) is
// ignored: readers never have to check for holes.
func (r *Ring[T]) Write(v T) {
	if isNil(v) {
		return
	}
	r.mu.Lock()
	r.buf[r.written%uint64(len(r.buf))] = v
	r.written++
	for s := range r.subs {
		select {
		case s.ch <- v:
		default:
			s.lost.Add(1)
			r.lost.Add(1)
		}
	}
	r.mu.Unlock()
}

func isNil[T any](v T) bool {
	switch rv := reflect.ValueOf(any(v)); rv.Kind() {
	case reflect.Invalid:
		return true // a nil interface
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// Last returns up to n of the most recent entries, oldest first.
func (r *Ring[T]) Last(n int) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked(n)
}

func (r *Ring[T]) lastLocked(n int) []T {
	held := r.lenLocked()
	if n > held {
		n = held
	}
	if n <= 0 {
		return nil
	}
	out := make([]T, n)
	size := uint64(len(r.buf))
	start := r.written - uint64(n)
	// At most two contiguous pieces: copy them instead of indexing one by one.
	first := copy(out, r.buf[start%size:])
	if first < n {
		copy(out[first:], r.buf[:n-first])
	}
	return out
}

func (r *Ring[T]) lenLocked() int {
	if r.written < uint64(len(r.buf)) {
		return int(r.written)
	}
	return len(r.buf)
}

// Stats returns the ring's counters.
func (r *Ring[T]) Stats() Stats {
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

// Subscription is one follower: it receives every entry written after it
// was created, unless its buffer was full at the time of the write.
type Subscription[T any] struct {
	ch   chan T
	lost atomic.Uint64
}

// Events returns the stream of new entries. It is closed when the context
// given to Subscribe is done.
func (s *Subscription[T]) Events() <-chan T { return s.ch }

// Lost returns how many entries this follower missed because its buffer
// was full.
func (s *Subscription[T]) Lost() uint64 { return s.lost.Load() }

// Subscribe starts following the ring with a channel of buffer entries
// (DefaultSubscriberBuffer when buffer <= 0). The subscription ends, and
// its channel is closed, when ctx is done.
func (r *Ring[T]) Subscribe(ctx context.Context, buffer int) *Subscription[T] {
	_, s := r.LastAndSubscribe(ctx, 0, buffer)
	return s
}

// LastAndSubscribe returns up to n of the most recent entries and a
// subscription that starts exactly after the last of them, so that a reader
// asking for history and then following sees no entry twice and misses
// none in between (except those counted as lost).
func (r *Ring[T]) LastAndSubscribe(ctx context.Context, n, buffer int) ([]T, *Subscription[T]) {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	s := &Subscription[T]{ch: make(chan T, buffer)}

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
