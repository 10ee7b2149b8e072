package relay

import (
	"context"
	"time"

	relaypb "github.com/cilium/cilium/api/v1/relay"

	"github.com/sextant/sextant/observer"
)

// arrival is what peers send the merger: a batch of a node's events, a
// node's new state, or a peer's start and first outcome.
type arrival struct {
	node  *node
	items []item // nil for a state change
	state relaypb.NodeState

	peer    *peer // with pending: the peer started (true) or settled (false)
	pending bool
}

// item is one event to merge: one half of a flow (observer.RequestHalf or
// ResponseHalf), or a lost-event notice, with its time.
type item struct {
	entry observer.Entry
	time  int64 // event time, unix ns
}

// held is an event waiting in the sort window.
type held struct {
	node    *node
	item    item
	seq     uint64
	arrived time.Duration // since the relay started (monotonic)
}

// merger orders the events of all nodes by time. It holds every event in a
// min-heap and releases the oldest when
//   - every connected node has sent an event at least as new (nothing older
//     can come from a node whose stream is in time order), or
//   - it has waited SortWindow (a quiet or lagging node holds the others
//     back no longer than that).
//
// A node may have at most MaxHeld events waiting: then its peer stops
// reading until some are released, so a node far ahead of the others
// (a backlog after a reconnect, a bulk history) waits for them instead of
// pushing their events out of order.
//
// This is the bounded sort window of Cilium's Hubble relay
// (pkg/hubble/relay/queue, Apache-2.0), plus the per-node heads that let
// busy clusters release events without waiting for the whole window.
type merger struct {
	r     *Relay
	heap  []held
	seq   uint64
	heads map[*node]int64 // newest event time per node
	up    map[*node]bool  // connected nodes
	// pending peers have not connected or failed yet: at start the node
	// behind each may hold the oldest events, so the frontier
	// cannot be trusted until every peer settled.
	pending map[*peer]bool
	last    int64 // time of the newest released event
	batch   []observer.Entry
	credits map[*node]int64 // released per node in one round
}

func newMerger(r *Relay) *merger {
	return &merger{r: r, heads: map[*node]int64{}, up: map[*node]bool{}, pending: map[*peer]bool{}, credits: map[*node]int64{}}
}

// run merges until ctx is done, then releases everything still held.
func (m *merger) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			m.release(true)
			return
		case a := <-m.r.in:
			m.accept(a)
			// Take what is already queued before deciding: releasing
			// after every single event would defeat the sort.
		drain:
			for range cap(m.r.in) {
				select {
				case a := <-m.r.in:
					m.accept(a)
				default:
					break drain
				}
			}
		case <-timer.C:
		}
		m.release(false)
		if len(m.heap) > 0 {
			wait := m.heap[0].arrived + m.r.opts.SortWindow - time.Since(m.r.started)
			timer.Reset(max(wait, time.Millisecond))
		} else {
			timer.Stop()
		}
	}
}

func (m *merger) accept(a arrival) {
	if a.peer != nil {
		if a.pending {
			m.pending[a.peer] = true
		} else {
			delete(m.pending, a.peer)
		}
		return
	}
	if a.items == nil {
		if a.state == relaypb.NodeState_NODE_CONNECTED {
			m.up[a.node] = true
		} else {
			delete(m.up, a.node)
		}
		return
	}
	arrived := time.Since(m.r.started)
	head := m.heads[a.node]
	for _, it := range a.items {
		head = max(head, it.time)
		m.seq++
		m.push(held{node: a.node, item: it, seq: m.seq, arrived: arrived})
	}
	m.heads[a.node] = head
}

// release emits the events the rules above allow (all of them when flush).
func (m *merger) release(flush bool) {
	frontier := int64(-1 << 63)
	if len(m.up) > 0 && len(m.pending) == 0 {
		frontier = int64(1<<63 - 1)
		for n := range m.up {
			frontier = min(frontier, m.heads[n])
		}
	}
	cutoff := time.Since(m.r.started) - m.r.opts.SortWindow
	m.batch = m.batch[:0]
	late := uint64(0)
	for len(m.heap) > 0 {
		e := &m.heap[0]
		if !flush && e.item.time > frontier && e.arrived > cutoff {
			break
		}
		if e.item.time < m.last {
			late++
		} else {
			m.last = e.item.time
		}
		m.credits[e.node]++
		m.batch = append(m.batch, e.item.entry)
		m.pop()
	}
	m.r.held.Store(int64(len(m.heap)))
	if len(m.batch) == 0 {
		return
	}
	for n, c := range m.credits {
		n.credit.Release(c)
	}
	clear(m.credits)
	m.r.ring.WriteBatch(m.batch)
	m.r.merged.Add(uint64(len(m.batch)))
	m.r.late.Add(late)
	clear(m.batch)
}

// The heap: a binary min-heap by (time, arrival) written out for held
// values, because container/heap boxes every element in an interface.

func (m *merger) less(i, j int) bool {
	a, b := &m.heap[i], &m.heap[j]
	return a.item.time < b.item.time || a.item.time == b.item.time && a.seq < b.seq
}

func (m *merger) push(e held) {
	m.heap = append(m.heap, e)
	for i := len(m.heap) - 1; i > 0; {
		parent := (i - 1) / 2
		if !m.less(i, parent) {
			break
		}
		m.heap[i], m.heap[parent] = m.heap[parent], m.heap[i]
		i = parent
	}
}

func (m *merger) pop() {
	last := len(m.heap) - 1
	m.heap[0] = m.heap[last]
	m.heap[last] = held{}
	m.heap = m.heap[:last]
	for i := 0; ; {
		l, r, min := 2*i+1, 2*i+2, i
		if l < len(m.heap) && m.less(l, min) {
			min = l
		}
		if r < len(m.heap) && m.less(r, min) {
			min = r
		}
		if min == i {
			return
		}
		m.heap[i], m.heap[min] = m.heap[min], m.heap[i]
		i = min
	}
}
