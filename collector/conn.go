package collector

import (
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/probes"
)

// kindLost marks, in a direction's queue, the place where records were lost.
const kindLost probes.Kind = 0xff

// conn is one observed connection (one socket of one process).
type conn struct {
	id         uint64
	info       probes.ConnInfo
	pid        uint32
	process    flow.Process
	lastActive time.Time

	seq   [2]uint32 // next expected Seq per direction; the kernel starts both at 0
	queue [2]eventQueue

	dec Decoder
}

// checkSeq notes a gap in a direction's sequence: records the kernel could
// not ship. A marker goes into the queue so the decoder learns of the loss
// at the point it happened. Reports whether there was a gap.
func (cn *conn) checkSeq(ev *probes.Event) bool {
	d := ev.Dir & 1
	want := cn.seq[d]
	cn.seq[d] = ev.Seq + 1
	if ev.Seq == want {
		return false
	}
	cn.queue[d].push(&probes.Event{Kind: kindLost, Dir: d, Time: ev.Time, ConnID: ev.ConnID})
	return true
}

// eventQueue is a FIFO that reuses its backing array.
type eventQueue struct {
	evs  []*probes.Event
	head int
}

func (q *eventQueue) push(ev *probes.Event) { q.evs = append(q.evs, ev) }

func (q *eventQueue) peek() *probes.Event {
	if q.head == len(q.evs) {
		return nil
	}
	return q.evs[q.head]
}

func (q *eventQueue) pop() {
	q.evs[q.head] = nil
	q.head++
	if q.head == len(q.evs) {
		q.evs, q.head = q.evs[:0], 0
	}
}
