// Package ring keeps the most recent entries (flows, or the API events made
// of them) in a fixed-capacity buffer and fans new entries out to followers.
//
// The writer (the collector) must never wait for a reader: a follower that
// falls a whole ring behind loses entries, and every loss is counted, per
// follower and in total, so that "nothing was printed" can always be told
// apart from "something was dropped".
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

// DefaultCapacity is the number of entries kept when New is given no size:
// Hubble's own default (4095, rounded). In the agent an event costs ~3.7
// KiB of live heap (a Hubble flow; the last of an exchange carries the
// whole flow too): 16384 events held ~60 MiB and gave nothing back in CPU,
// 4096 hold ~15 MiB.
const DefaultCapacity = 4096

// DefaultSubscriberBuffer is the channel size used when Subscribe is given
// no buffer size.
const DefaultSubscriberBuffer = 1024

// Ring is a fixed-capacity ring of recent entries. It is safe for
// concurrent use by one or more writers and any number of readers.
type Ring[T any] struct {
	mu      sync.Mutex
	buf     []T
	written uint64        // total entries ever written; buf[written%len(buf)] is the next slot
	wake    chan struct{} // closed by the next Write when a follower waits for it
	subs    int

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
	return &Ring[T]{buf: make([]T, capacity)}
}

// Capacity returns the number of entries the ring holds at most.
func (r *Ring[T]) Capacity() int { return len(r.buf) }

// Write stores v, overwriting the oldest entry when the ring is full, and
// wakes waiting followers; it never waits for them. A nil pointer (or nil
// interface, map, slice, channel) is ignored: readers never have to check
// for holes.
func (r *Ring[T]) Write(v T) {
	if isNil(v) {
		return
	}
	r.mu.Lock()
	r.buf[r.written%uint64(len(r.buf))] = v
	r.written++
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
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
		Subscribers: r.subs,
	}
	if r.written > uint64(len(r.buf)) {
		st.Overwritten = r.written - uint64(len(r.buf))
	}
	return st
}

// Subscription is one follower. It reads the ring from its own position,
// as Hubble's ring reader does, so a slow follower only loses entries when
// the writer laps it (more than the ring's capacity behind); a channel of
// buffer entries sits between that reader and the consumer.
type Subscription[T any] struct {
	ch       chan T
	lost     atomic.Uint64
	stop     chan struct{}
	stopOnce sync.Once
}

// Stop ends the subscription once it has delivered every entry written
// before the call: its channel is closed after them.
func (s *Subscription[T]) Stop() { s.stopOnce.Do(func() { close(s.stop) }) }

// Events returns the stream of new entries. It is closed when the context
// given to Subscribe is done.
func (s *Subscription[T]) Events() <-chan T { return s.ch }

// Lost returns how many entries this follower missed because the writer
// overwrote them before it read them.
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
	s := &Subscription[T]{ch: make(chan T, buffer), stop: make(chan struct{})}
	r.mu.Lock()
	last := r.lastLocked(n)
	next := r.written
	r.subs++
	r.mu.Unlock()
	go r.pump(ctx, s, next)
	return last, s
}

// pump copies entries from position next on into the subscription.
func (r *Ring[T]) pump(ctx context.Context, s *Subscription[T], next uint64) {
	defer func() {
		r.mu.Lock()
		r.subs--
		r.mu.Unlock()
		close(s.ch)
	}()
	for {
		v, lost, ok := r.read(ctx, s.stop, &next)
		switch {
		case !ok:
			return
		case lost > 0:
			s.lost.Add(lost)
			r.lost.Add(lost)
			continue
		}
		select {
		case s.ch <- v:
		case <-ctx.Done():
			return
		}
	}
}

// read returns the entry at *next and advances it, waiting for the writer
// when there is none yet (unless stop is closed). When the writer has
// overwritten *next, it moves *next to the oldest entry held and returns
// how many were skipped.
func (r *Ring[T]) read(ctx context.Context, stop <-chan struct{}, next *uint64) (v T, lost uint64, ok bool) {
	for {
		r.mu.Lock()
		size := uint64(len(r.buf))
		if r.written > size && *next < r.written-size {
			lost = r.written - size - *next
			*next = r.written - size
			r.mu.Unlock()
			return v, lost, true
		}
		if *next < r.written {
			v = r.buf[*next%size]
			*next++
			r.mu.Unlock()
			return v, 0, true
		}
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			return v, 0, false
		case <-ctx.Done():
			return v, 0, false
		}
	}
}
