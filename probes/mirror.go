package probes

import (
	"sync/atomic"
	"time"
)

// Both ends of a loopback connection traced: the reader's ingress is not
// walked by the kernel once it claimed the writer's offer (bpf/mirror.h);
// its events are the writer's egress events, turned around here. The
// collector sees the same events either way: one per entry, numbered by
// the writer's sequence (so its losses show as the reader's gaps too),
// stamped with the writer's time (when the bytes reached the reader's
// socket).
//
// The reader's close: its record can be ahead of the writer's records of
// the last bytes it read (the writer's program runs after the copy, the
// reader may read and close meanwhile). It carries the position the
// reader had read up to, and waits here until the writer's records reach
// it, the writer closes, or closeWait passes (counted: Stats.MirrorLate).

const (
	// maxHeldWriters bounds the writers whose offered records are held: a
	// writer's offer closes at its 4th egress record or when it closes, so
	// only a lost close leaves some behind. A claim of a writer dropped
	// here starts the reader's events after a sequence gap: a loss, seen.
	maxHeldWriters = 16384
	// closeWait: how long a reader's close waits for its writer's
	// records. The writer's records lag by the time between the copy and
	// its program (microseconds, unless it is preempted right there);
	// chunks that ship no record (inside a DATA payload, PING) move the
	// writer's position without telling, so a reader that read those last
	// waits for the writer's close or this.
	closeWait = time.Second
)

// mirror turns writers' egress events into their readers' ingress events.
type mirror struct {
	held     map[uint64][]*Event // writer conn → its offered egress events, until claimed
	byWriter map[uint64]*peerLink
	byReader map[uint64]*peerLink
	late     atomic.Uint64 // reader closes handed out by closeWait
}

// peerLink: reader's ingress is writer's egress.
type peerLink struct {
	reader, writer uint64
	pid            uint32 // the reader's process
	end            uint32 // TCP sequence number the writer's records reached
	closing        *Event // the reader's close, waiting for the writer's records
	readTo         uint32 // the reader's last read position (closing != nil)
	closedAt       time.Time
}

func newMirror() *mirror {
	return &mirror{held: map[uint64][]*Event{}, byWriter: map[uint64]*peerLink{}, byReader: map[uint64]*peerLink{}}
}

// egressRecord is told, before its events, of an egress chunk record of
// conn, whether it was offered and the TCP positions of its bytes (first:
// where its first entry's begin, before start when that entry sums DATA
// of earlier chunks); it says what to do with its events: turn them
// around for a reader (l; only the first when firstOnly), hold copies, or
// nothing.
func (m *mirror) egressRecord(conn uint64, offered bool, start, end, first uint32) (l *peerLink, firstOnly, hold bool) {
	if l := m.byWriter[conn]; l != nil {
		l.end = end
		if l.closing != nil && int32(start-l.readTo) >= 0 {
			// Bytes the reader, closed, never read; but a summary of
			// DATA it did read (flushed by the writer's next entry, a
			// GOAWAY at shutdown) is the reader's: a walking reader
			// ships it at its close.
			if int32(first-l.readTo) < 0 {
				return l, true, false
			}
			return nil, false, false
		}
		return l, false, false
	}
	if offered {
		if _, ok := m.held[conn]; !ok && len(m.held) >= maxHeldWriters {
			for k := range m.held {
				m.drop(k)
				break
			}
		}
		return nil, false, true
	}
	// The offer closed unclaimed: nobody will ask for these.
	m.drop(conn)
	return nil, false, false
}

// egressDone: the events of writer's record went out; a reader's close
// that waited for them goes out now.
func (m *mirror) egressDone(writer uint64, sink func(*Event)) int {
	l := m.byWriter[writer]
	if l == nil || l.closing == nil || int32(l.end-l.readTo) < 0 {
		return 0
	}
	m.unlink(l)
	sink(l.closing)
	return 1
}

func (m *mirror) hold(ev *Event) {
	m.held[ev.ConnID] = append(m.held[ev.ConnID], copyEvent(ev))
}

// claim: reader conn (EV_PEER) is writer's ingress from its first byte.
// Hands the events held for it to sink; returns how many.
func (m *mirror) claim(conn uint64, pid uint32, writer uint64, sink func(*Event)) int {
	l := &peerLink{reader: conn, writer: writer, pid: pid}
	m.byWriter[writer] = l
	m.byReader[conn] = l
	held := m.held[writer]
	delete(m.held, writer)
	for _, ev := range held {
		sink(l.turn(ev))
	}
	return len(held)
}

// closed: conn closed (ev, its EV_CLOSE; readTo: where it had read up
// to). Returns whether ev was handed to sink (now, or later by
// egressDone, expire) rather than left to the caller, and how many events
// went to sink.
func (m *mirror) closed(ev *Event, readTo uint32, sink func(*Event)) (taken bool, n int) {
	m.drop(ev.ConnID)
	if l := m.byReader[ev.ConnID]; l != nil {
		if int32(l.end-readTo) >= 0 {
			m.unlink(l)
			return false, 0
		}
		l.closing, l.readTo, l.closedAt = ev, readTo, time.Now()
		return true, 0
	}
	if l := m.byWriter[ev.ConnID]; l != nil {
		// Every record of the writer is in: a reader waiting for them
		// closes first.
		m.unlink(l)
		if l.closing != nil {
			sink(l.closing)
			n++
		}
	}
	return false, n
}

// expire hands out readers' closes that waited closeWait.
func (m *mirror) expire(now time.Time, sink func(*Event)) (n int) {
	for _, l := range m.byReader {
		if l.closing != nil && now.Sub(l.closedAt) >= closeWait {
			m.unlink(l)
			m.late.Add(1)
			sink(l.closing)
			n++
		}
	}
	return n
}

func (m *mirror) unlink(l *peerLink) {
	delete(m.byWriter, l.writer)
	delete(m.byReader, l.reader)
}

func (m *mirror) drop(writer uint64) {
	for _, ev := range m.held[writer] {
		ev.Release()
	}
	delete(m.held, writer)
}

// copyEvent is a copy of ev for another sink; the byte slices are shared,
// read-only (capacity clipped, so that an append by either owner copies).
func copyEvent(ev *Event) *Event {
	cp := newEvent(ev)
	cp.Data = cp.Data[:len(cp.Data):len(cp.Data)]
	cp.FrameHeader = cp.FrameHeader[:len(cp.FrameHeader):len(cp.FrameHeader)]
	return cp
}

// turn makes ev, a copy of a writer's egress event, the reader's ingress
// event.
func (l *peerLink) turn(ev *Event) *Event {
	ev.ConnID = l.reader
	ev.Dir = Ingress
	ev.PID = l.pid
	ev.TID = 0 // the reading thread is not known
	ev.Mirrored = true
	return ev
}
