// Package ring keeps the most recent entries (flows, or the API events made
// of them) in a fixed-capacity buffer that any number of readers follow at
// their own position.
//
// The writer (the collector) must never wait for a reader: a reader that
// falls a whole ring behind loses entries, and every loss is counted, per
// reader and in total, so that "nothing was printed" can always be told
// apart from "something was dropped".
//
// A ring may weigh its entries (NewWeighted): an entry that stands for
// several API events (a flow is a request and a response event) counts as
// that many in every counter, so what readers are told they lost is in
// the unit they read.
//
// Entries are shared between the ring and every reader: once written, an
// entry must be treated as read-only.
package ring

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// DefaultCapacity is the number of entries kept when New is given no size:
// Hubble's own default (4095, rounded).
const DefaultCapacity = 4096

// Ring is a fixed-capacity ring of recent entries. It is safe for
// concurrent use by one or more writers and any number of readers.
type Ring[T any] struct {
	mu  sync.Mutex
	buf []T
	// before[i%len(buf)] is the weight written before entry i: what a
	// reader lapped at i lost is before[oldest] - its own weight.
	before  []uint64
	written uint64 // entries ever written; buf[written%len(buf)] is the next slot
	total   uint64 // weight ever written
	wake    chan struct{}
	readers int

	weight    func(T) uint64 // nil: every entry weighs 1
	maxWeight uint64
	instance  uint64

	lost atomic.Uint64 // weight lost by all readers, including departed ones
}

// Stats is a point-in-time view of the ring's counters, in weight units
// (entries for an unweighted ring).
type Stats struct {
	Capacity    int    `json:"capacity"`    // entries × the largest weight
	Len         int    `json:"len"`         // held now
	Written     uint64 `json:"written"`     // ever written
	Overwritten uint64 `json:"overwritten"` // pushed out by newer entries
	Lost        uint64 `json:"lost"`        // what readers did not receive because they were slow
	Subscribers int    `json:"subscribers"` // followers right now
}

// New returns an empty ring holding up to capacity entries
// (DefaultCapacity when capacity <= 0).
func New[T any](capacity int) *Ring[T] { return NewWeighted[T](capacity, nil, 1) }

// NewWeighted returns a ring whose entries weigh weight(v), at most
// maxWeight each (1 when weight is nil).
func NewWeighted[T any](capacity int, weight func(T) uint64, maxWeight uint64) *Ring[T] {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	if weight == nil || maxWeight == 0 {
		weight, maxWeight = nil, 1
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails on Linux (getrandom)
	return &Ring[T]{
		buf: make([]T, capacity), before: make([]uint64, capacity),
		weight: weight, maxWeight: maxWeight,
		instance: binary.LittleEndian.Uint64(id[:]) | 1, // never 0: 0 means "no ring" in cursors
	}
}

// Capacity returns the number of entries the ring holds at most.
func (r *Ring[T]) Capacity() int { return len(r.buf) }

// Instance names this ring among every ring ever made (random): a cursor
// of another instance, for example of an agent that restarted since, does
// not apply to it.
func (r *Ring[T]) Instance() uint64 { return r.instance }

func (r *Ring[T]) weigh(v T) uint64 {
	if r.weight == nil {
		return 1
	}
	return r.weight(v)
}

// Write stores v, overwriting the oldest entry when the ring is full, and
// wakes waiting readers; it never waits for them.
func (r *Ring[T]) Write(v T) {
	w := r.weigh(v)
	r.mu.Lock()
	r.putLocked(v, w)
	r.wakeLocked()
	r.mu.Unlock()
}

// WriteBatch stores vs in order under one lock.
func (r *Ring[T]) WriteBatch(vs []T) {
	if len(vs) == 0 {
		return
	}
	r.mu.Lock()
	for _, v := range vs {
		r.putLocked(v, r.weigh(v))
	}
	r.wakeLocked()
	r.mu.Unlock()
}

func (r *Ring[T]) putLocked(v T, w uint64) {
	i := r.written % uint64(len(r.buf))
	r.buf[i] = v
	r.before[i] = r.total
	r.written++
	r.total += w
}

func (r *Ring[T]) wakeLocked() {
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

// oldestLocked is the position of the oldest entry held.
func (r *Ring[T]) oldestLocked() uint64 {
	if size := uint64(len(r.buf)); r.written > size {
		return r.written - size
	}
	return 0
}

// beforeLocked is the weight written before position pos (held, or the
// next one to be written).
func (r *Ring[T]) beforeLocked(pos uint64) uint64 {
	if pos >= r.written {
		return r.total
	}
	return r.before[pos%uint64(len(r.buf))]
}

// Last returns up to n of the most recent entries, oldest first.
func (r *Ring[T]) Last(n int) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked(n)
}

func (r *Ring[T]) lastLocked(n int) []T {
	held := int(r.written - r.oldestLocked())
	if n > held {
		n = held
	}
	if n <= 0 {
		return nil
	}
	out := make([]T, n)
	r.copyLocked(out, r.written-uint64(n))
	return out
}

// copyLocked fills out with the entries from position from on (all held).
func (r *Ring[T]) copyLocked(out []T, from uint64) {
	size := uint64(len(r.buf))
	// At most two contiguous pieces: copy them instead of indexing one by one.
	first := copy(out, r.buf[from%size:])
	if first < len(out) {
		copy(out[first:], r.buf[:len(out)-first])
	}
}

// Stats returns the ring's counters.
func (r *Ring[T]) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.beforeLocked(r.oldestLocked())
	return Stats{
		Capacity:    len(r.buf) * int(r.maxWeight),
		Len:         int(r.total - oldest),
		Written:     r.total,
		Overwritten: oldest,
		Lost:        r.lost.Load(),
		Subscribers: r.readers,
	}
}

// Cursor is a position in one ring: Position entries and Weight weight
// were written before it. A reader resumes exactly at a cursor it was
// given, as long as the ring is the same instance and still holds it.
type Cursor struct {
	Instance, Position, Weight uint64
}

// Reader follows the ring from its own position, as Hubble's ring reader
// does: it only loses entries when the writer laps it (more than the
// ring's capacity behind). One goroutine uses a reader at a time.
type Reader[T any] struct {
	r      *Ring[T]
	next   uint64 // position of the next entry to read
	weight uint64 // weight written before next
	lost   atomic.Uint64
	closed bool
}

// Follow returns a reader that starts with the next entry written.
func (r *Ring[T]) Follow() *Reader[T] {
	_, rd := r.LastAndFollow(0)
	return rd
}

// LastAndFollow returns up to n of the most recent entries and a reader
// that starts exactly after the last of them, so that a reader asking for
// history and then following sees no entry twice and misses none in
// between (except those counted as lost).
func (r *Ring[T]) LastAndFollow(n int) ([]T, *Reader[T]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readers++
	return r.lastLocked(n), &Reader[T]{r: r, next: r.written, weight: r.total}
}

// FollowFrom returns a reader that starts at c when c is a cursor of this
// ring (entries overwritten since are counted as lost at the first Read),
// else at the oldest entry held, and whether c applied.
func (r *Ring[T]) FollowFrom(c Cursor) (*Reader[T], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readers++
	if c.Instance == r.instance && c.Position <= r.written {
		return &Reader[T]{r: r, next: c.Position, weight: c.Weight}, true
	}
	oldest := r.oldestLocked()
	return &Reader[T]{r: r, next: oldest, weight: r.beforeLocked(oldest)}, false
}

// Cursor is where the reader is: the next entry it reads.
func (rd *Reader[T]) Cursor() Cursor {
	return Cursor{Instance: rd.r.instance, Position: rd.next, Weight: rd.weight}
}

// Lost returns the weight this reader missed because the writer
// overwrote it before it read it.
func (rd *Reader[T]) Lost() uint64 { return rd.lost.Load() }

// Read copies the entries from the reader's position on into buf, as many
// as are written and fit, without waiting. When the writer overwrote the
// reader's position, the reader moves to the oldest entry held and lost is
// the weight it skipped.
func (rd *Reader[T]) Read(buf []T) (n int, lost uint64) {
	r := rd.r
	r.mu.Lock()
	if oldest := r.oldestLocked(); rd.next < oldest {
		w := r.beforeLocked(oldest)
		if w > rd.weight {
			lost = w - rd.weight
		}
		rd.next, rd.weight = oldest, w
	}
	n = int(min(uint64(len(buf)), r.written-rd.next))
	if n > 0 {
		r.copyLocked(buf[:n], rd.next)
		rd.next += uint64(n)
		rd.weight = r.beforeLocked(rd.next)
	}
	r.mu.Unlock()
	if lost > 0 {
		rd.lost.Add(lost)
		r.lost.Add(lost)
	}
	return n, lost
}

// Wait blocks until an entry at or after the reader's position is written
// and reports true, or returns false when ctx is done or stop is closed.
func (rd *Reader[T]) Wait(ctx context.Context, stop <-chan struct{}) bool {
	r := rd.r
	for {
		r.mu.Lock()
		if rd.next < r.written {
			r.mu.Unlock()
			return true
		}
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Pending reports whether entries written before the call remain unread.
func (rd *Reader[T]) Pending() bool {
	r := rd.r
	r.mu.Lock()
	defer r.mu.Unlock()
	return rd.next < r.written
}

// Close ends the reader (it no longer counts as a follower).
func (rd *Reader[T]) Close() {
	if rd.closed {
		return
	}
	rd.closed = true
	rd.r.mu.Lock()
	rd.r.readers--
	rd.r.mu.Unlock()
}
