package http1

import "github.com/sextant/sextant/flow"

// Flow is the exchange as a flow; the collector adds addresses, process
// and node.
func (ex *Exchange) Flow() *flow.Flow {
	f := &flow.Flow{
		Time:            ex.RequestStart,
		Protocol:        ex.Protocol,
		Method:          ex.Method,
		Scheme:          ex.Scheme,
		Authority:       ex.Host,
		Path:            ex.Path,
		Status:          ex.Status,
		RequestBytes:    ex.RequestBytes,
		ResponseBytes:   ex.ResponseBytes,
		RequestHeaders:  ex.RequestHeaders,
		ResponseHeaders: ex.ResponseHeaders,
		TraceParent:     ex.TraceParent,
		Outcome:         ex.Outcome,
		Unknown:         ex.Unknown,
		Observer:        flow.SideServer,
	}
	if ex.RequestDir == flow.Egress {
		f.Observer = flow.SideClient
	}
	if !ex.ResponseStart.IsZero() {
		f.TTFB = ex.ResponseStart.Sub(ex.RequestStart)
	}
	if !ex.ResponseEnd.IsZero() {
		f.Latency = ex.ResponseEnd.Sub(ex.RequestStart)
	}
	return f
}
