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

// inRange reports whether e is to be sent: lost events always are (nobody
// asks for them by name, and hiding them would hide loss); flows when they
// lie within since/until and pass the filters.
func (q *query) inRange(e *observerpb.GetFlowsResponse) bool {
	f := e.GetFlow()
	if f == nil {
		return true
	}
	if q.since != nil || q.until != nil {
		ts := e.GetTime().AsTime()
		if q.since != nil && ts.Before(*q.since) {
			return false
		}
		if q.until != nil && ts.After(*q.until) {
			return false
		}
	}
	return q.match == nil || q.match(f)
}

// start returns the index in history from which to send: the oldest event
// for First, Since or Number 0; otherwise the position of the Number-th
// newest matching flow, so that the last Number flows are sent oldest
// first. Since takes precedence over Number, as in Cilium.
//
// Since is applied by inRange rather than by rewinding until an older
// event: the ring is in emission order, and a request event carries the
// start time of its exchange, so timestamps are not monotonic.
func (q *query) start(history []*observerpb.GetFlowsResponse) int {
	if q.first || q.since != nil || q.limit == 0 {
		return 0
	}
	var n uint64
	for i := len(history) - 1; i >= 0; i-- {
		if e := history[i]; isFlow(e) && q.inRange(e) {
			n++
			if n == q.limit {
				return i
			}
		}
	}
	return 0
}

// project applies the field mask to a flow event.
func (q *query) project(e *observerpb.GetFlowsResponse) *observerpb.GetFlowsResponse {
	f := e.GetFlow()
	if f == nil || !q.mask.Active() {
		return e
	}
	masked := new(flowpb.Flow)
	q.mask.Copy(masked.ProtoReflect(), f.ProtoReflect())
	return &observerpb.GetFlowsResponse{
		Time:          e.GetTime(),
		NodeName:      e.GetNodeName(),
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: masked},
	}
}
