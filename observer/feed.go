package observer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/ring"
)

// Feed is the sink that fills an Observer API's ring with flows. It keeps
// the flow itself: the Hubble events a client reads are built in that
// client's goroutine when it reads them (Server), and the relay's link
// sends the flow whole (observer/link). With nobody reading, keeping a flow
// costs one ring slot and no conversion, so Export runs on the collector's
// goroutine: there is no queue to overflow.
type Feed struct {
	node string
	ring *ring.Ring[Entry]
	boot uint64
	seq  atomic.Uint64
	seen atomic.Uint64 // flow events written to the ring
}

// NewFeed returns a feed writing into r, naming node in the events it
// makes itself (lost events).
func NewFeed(r *ring.Ring[Entry], node string) *Feed {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux (getrandom)
	return &Feed{node: node, ring: r, boot: binary.LittleEndian.Uint64(b[:])}
}

// Export keeps fl in the ring; it never blocks on a reader. fl must not be
// changed afterwards.
func (f *Feed) Export(fl *flow.Flow) {
	if fl == nil {
		return
	}
	e := Entry{Flow: fl, ID: FlowID{Boot: f.boot, Seq: f.seq.Add(1)}}
	f.seen.Add(e.Events())
	f.ring.Write(e)
}

// Close has nothing to flush: every flow reached the ring in Export.
func (f *Feed) Close(context.Context) error { return nil }

// Seen is how many flow events (a request and, when seen, a response per
// flow) reached the ring.
func (f *Feed) Seen() uint64 { return f.seen.Load() }

// Lost writes a lost-event notice: n events of src never reached the ring.
func (f *Feed) Lost(src flowpb.LostEventSource, n uint64) {
	f.ring.Write(Entry{Lost: &Lost{Time: time.Now(), Node: f.node, Source: src, Count: n, CPU: -1}})
}
