package observer

import (
	"encoding/binary"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/ring"
)

// Half says which Hubble events of its flow an entry stands for.
type Half uint8

const (
	// Whole: the REQUEST event and, when a response was seen, the
	// RESPONSE event (the agent's ring: one entry per flow, in the order
	// the collector emitted them).
	Whole Half = iota
	// RequestHalf, ResponseHalf: one event each (the relay's ring, where
	// events are merged in time order and a flow's two events lie apart).
	RequestHalf
	ResponseHalf
)

// FlowID names a flow for as long as it lives, on the agent that saw it
// and on every relay behind: Boot is random per agent start, Seq counts
// its flows. The Hubble events of a flow get UUIDs derived from it, so
// every client of every relay reads the same UUIDs for the same event.
type FlowID struct{ Boot, Seq uint64 }

// UUID of the event of the flow: request (response false) or response.
func (id FlowID) UUID(response bool) string {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[0:8], id.Boot)
	low := id.Seq << 1
	if response {
		low |= 1
	}
	binary.BigEndian.PutUint64(u[8:16], low)
	u[6] = u[6]&0x0f | 0x40 // version 4: random (the boot part is)
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

// Lost is a lost-event notice: Count events of Source never reached the
// ring (or a reader of it).
type Lost struct {
	Time   time.Time
	Node   string
	Source flowpb.LostEventSource
	Count  uint64
	CPU    int32 // < 0: unknown or does not apply
}

// Entry is what an Observer ring holds: a flow, whose Hubble events are
// built when a client reads them, or a lost-event notice. Entries are
// values (a ring slot holds one without allocating) and read-only once
// written.
type Entry struct {
	Flow *flow.Flow
	ID   FlowID
	Half Half
	Lost *Lost // set when Flow is nil
}

// NewRing returns an Observer ring of capacity entries; its counters are
// in Hubble events (Entry.Events).
func NewRing(capacity int) *ring.Ring[Entry] {
	return ring.NewWeighted[Entry](capacity, Entry.Events, 2)
}

// Events is how many Hubble events the entry stands for (a lost-event
// notice is one event of the stream, as in Hubble's ring).
func (e Entry) Events() uint64 {
	if e.Flow != nil && e.Half == Whole && hubble.ResponseSeen(e.Flow) {
		return 2
	}
	return 1
}

// IsFlow reports whether the entry is a flow (not a lost-event notice).
func (e Entry) IsFlow() bool { return e.Flow != nil }

// event is one Hubble event of an entry, before it is built.
type event struct {
	entry *Entry
	resp  bool // the RESPONSE event (else the REQUEST, or the notice)
}

// events appends the events e stands for.
func (e *Entry) events(out []event) []event {
	switch {
	case e.Flow == nil:
		return append(out, event{entry: e})
	case e.Half == RequestHalf:
		return append(out, event{entry: e})
	case e.Half == ResponseHalf:
		return append(out, event{entry: e, resp: true})
	}
	out = append(out, event{entry: e})
	if hubble.ResponseSeen(e.Flow) {
		out = append(out, event{entry: e, resp: true})
	}
	return out
}

// isFlow reports whether ev is a flow event (not a lost-event notice).
func (ev event) isFlow() bool { return ev.entry.Flow != nil }

// time is the event's time, known without building it.
func (ev event) time() time.Time {
	e := ev.entry
	if e.Flow == nil {
		return e.Lost.Time
	}
	if ev.resp {
		return hubble.ResponseTime(e.Flow)
	}
	return e.Flow.Time
}

// builder builds the events one reader sends. It keeps the last REQUEST
// event it built: the RESPONSE of the same flow is derived from it
// (shared endpoints and trace context) instead of building it again. It
// knows a flow by its pointer: entries are copied (reader buffers are
// reused), flows are not.
type builder struct {
	flow *flow.Flow
	req  *flowpb.Flow
}

// build makes the Hubble flow event (nil for a lost-event notice).
func (b *builder) build(ev event) *flowpb.Flow {
	e := ev.entry
	if e.Flow == nil {
		return nil
	}
	if b.flow != e.Flow {
		b.flow, b.req = e.Flow, hubble.Request(e.Flow, e.ID.UUID(false))
	}
	if ev.resp {
		return hubble.Response(e.Flow, b.req, e.ID.UUID(true))
	}
	return b.req
}

// response wraps a built flow event (or, for a notice, the lost event) as
// a GetFlows answer.
func (ev event) answer(f *flowpb.Flow) *observerpb.GetFlowsResponse {
	if f != nil {
		return &observerpb.GetFlowsResponse{Time: f.GetTime(), NodeName: f.GetNodeName(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}}
	}
	return lostResponse(ev.entry.Lost)
}

func lostResponse(l *Lost) *observerpb.GetFlowsResponse {
	le := &flowpb.LostEvent{Source: l.Source, NumEventsLost: l.Count}
	if l.CPU >= 0 {
		le.Cpu = wrapperspb.Int32(l.CPU)
	}
	return &observerpb.GetFlowsResponse{
		Time:          timestamppb.New(l.Time),
		NodeName:      l.Node,
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: le},
	}
}
