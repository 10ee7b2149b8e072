package relay

import (
	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/hubble"
)

// exportBatch is how many merged entries Export takes at once.
const exportBatch = 512

// Export feeds an exporter from the merged stream: the agents' whole flows,
// each once, when its last event (the response, or the request of a flow
// without one) is merged. It returns the number of flows exported when the
// subscription ends (relay stopped or sub closed).
func Export(sub *Subscription, exp exporters.Exporter) (exported uint64) {
	buf := make([]observer.Entry, exportBatch)
	for {
		n, ok := sub.Read(buf)
		for _, e := range buf[:n] {
			if lastHalf(e) {
				exp.Export(e.Flow)
				exported++
			}
		}
		clear(buf[:n])
		if !ok {
			return exported
		}
	}
}

// lastHalf reports whether e is the last event of its flow.
func lastHalf(e observer.Entry) bool {
	switch {
	case e.Flow == nil:
		return false
	case e.Half == observer.ResponseHalf:
		return true
	}
	return !hubble.ResponseSeen(e.Flow)
}
