package relay

import (
	"log/slog"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/observer/hubble"
)

// Export feeds exporters from the merged stream: the event that ends each
// exchange carries the agent's whole flow (hubble.AttachFlow), which is what
// exporters consume. It returns when the subscription ends (relay stopped
// or sub closed).
func Export(sub *Subscription, exp exporters.Exporter, log *slog.Logger) (exported, undecodable uint64) {
	for ev := range sub.Events() {
		fe := ev.GetFlow()
		if fe == nil {
			continue // lost-event notices carry no flow
		}
		f, err := hubble.FlowOf(fe)
		if err != nil {
			undecodable++
			log.Debug("flow extension", "node", ev.GetNodeName(), "err", err)
			continue
		}
		if f == nil {
			continue // the request half of an exchange
		}
		exp.Export(f)
		exported++
	}
	return exported, undecodable
}
