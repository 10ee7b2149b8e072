package agent

import (
	"time"

	"github.com/sextant/sextant/observer/ring"
)

// Status is the agent's view of itself, logged at debug level; the Observer
// API's ServerStatus carries its flow counters.
type Status struct {
	Node    string
	Started time.Time
	Uptime  string
	// FlowsSeen counts every flow event (request or response) written to
	// the ring since start.
	FlowsSeen uint64
	Ring      ring.Stats
	// ProbeEvents counts records read from the kernel; ProbeDrops counts
	// records the kernel could not emit, by reason.
	ProbeEvents uint64
	ProbeDrops  map[string]uint64
	// ProbeInvalid counts records user space could not decode.
	ProbeInvalid uint64
	// QueueLost counts flows lost before their conversion to events.
	QueueLost uint64
	// Collector holds the collector's own statistics.
	Collector any
}
