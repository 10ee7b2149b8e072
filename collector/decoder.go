package collector

import (
	"time"

	"github.com/sextant/sextant/collector/http1"
	"github.com/sextant/sextant/collector/http2"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/probes"
)

// Decoder is what every protocol decoder is to the collector: it takes one
// connection's records in order (both directions, as the reorder window
// released them) and emits a *flow.Flow per exchange. Adding a protocol is
// one Decoder and one case in Collector.open.
type Decoder interface {
	// Feed decodes one record.
	Feed(ev *probes.Event)
	// Lost says records of direction d were lost at this point: what is
	// open there cannot complete exactly.
	Lost(d flow.Direction)
	// Close ends the connection at t: open exchanges are emitted as closed.
	Close(t time.Time)
	// Open is the number of exchanges in flight.
	Open() int
}

// h2Decoder feeds HTTP/2 frame records to collector/http2.
type h2Decoder struct{ *http2.Conn }

func (d h2Decoder) Feed(ev *probes.Event) {
	if ev.Kind != probes.KindH2Frame {
		return
	}
	d.Handle(&http2.Record{
		Dir: flow.Direction(ev.Dir), Time: ev.Time, Type: ev.FrameType, Flags: ev.Flags,
		StreamID: ev.StreamID, Len: ev.FrameLen, Offset: ev.Offset, GRPCMessages: ev.GRPCMessages,
		Value: ev.Value, Value2: ev.Value2, Data: ev.Data,
	})
}

func (d h2Decoder) Open() int { return d.OpenStreams() }

// h1Decoder feeds the heads and tails of HTTP/1 reads and writes to
// collector/http1.
type h1Decoder struct{ *http1.Conn }

func (d h1Decoder) Feed(ev *probes.Event) {
	if ev.Kind != probes.KindH1Data {
		return
	}
	d.Conn.Feed(flow.Direction(ev.Dir), ev.Time, ev.Data, ev.Len, ev.Tail)
}

func (d h1Decoder) Open() int { return d.Pending() }
