package observer

import (
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/cilium/cilium/pkg/hubble/parser/fieldmask"

	"github.com/sextant/sextant/observer/filters"
)

// query is a validated GetFlows request.
type query struct {
	match        filters.FilterFunc
	since, until *time.Time
	limit        uint64 // Number; 0 = no limit
	first        bool
	mask         fieldmask.FieldMask
	events       builder
}

func newQuery(req *observerpb.GetFlowsRequest) (*query, error) {
	if req.GetFirst() && req.GetFollow() {
		return nil, errInvalid("first cannot be specified with follow")
	}
	match, err := filters.Build(req.GetWhitelist(), req.GetBlacklist())
	if err != nil {
		return nil, asStatus(err)
	}
	q := &query{match: match, limit: req.GetNumber(), first: req.GetFirst()}
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, errInvalid("since: %v", err)
		}
		t := ts.AsTime()
		q.since = &t
	}
	if ts := req.GetUntil(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, errInvalid("until: %v", err)
		}
		t := ts.AsTime()
		q.until = &t
	}
	if fm := req.GetFieldMask(); len(fm.GetPaths()) > 0 {
		mask, err := fieldmask.New(fm)
		if err != nil {
			return nil, errInvalid("field_mask: %v", err)
		}
		q.mask = mask
	}
	return q, nil
}

// accept builds ev and reports whether it is to be sent: lost events
// always are (nobody asks for them by name, and hiding them would hide
// loss); flow events when they lie within since/until and pass the
// filters. The event is built only when its time is in range, and the
// field mask applied to it.
func (q *query) accept(ev event) (*observerpb.GetFlowsResponse, bool) {
	if !ev.isFlow() {
		return ev.answer(nil), true
	}
	if q.since != nil || q.until != nil {
		ts := ev.time()
		if q.since != nil && ts.Before(*q.since) {
			return nil, false
		}
		if q.until != nil && ts.After(*q.until) {
			return nil, false
		}
	}
	f := q.events.build(ev)
	if q.match != nil && !q.match(f) {
		return nil, false
	}
	if q.mask.Active() {
		masked := new(flowpb.Flow)
		q.mask.Copy(masked.ProtoReflect(), f.ProtoReflect())
		// The answer's time and node stay whatever the mask keeps.
		return &observerpb.GetFlowsResponse{Time: f.GetTime(), NodeName: f.GetNodeName(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: masked}}, true
	}
	return ev.answer(f), true
}
