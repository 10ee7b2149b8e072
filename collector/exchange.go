package collector

import (
	"github.com/sextant/sextant/collector/http1"
	"github.com/sextant/sextant/flow"
)

// exchangeFlow turns an HTTP/1 exchange into a flow (addresses, process and
// node are filled in by Collector.emit).
func exchangeFlow(ex *http1.Exchange) *flow.Flow {
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
	if ex.RequestDir == http1.Egress {
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
