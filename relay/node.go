package relay

import (
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"golang.org/x/sync/semaphore"

	"github.com/sextant/sextant/observer/ring"
)

// node is one agent as the relay knows it, by the node name it reports.
// Its resume state outlives connections and addresses: whichever peer
// streams the node next resumes where the last one stopped.
type node struct {
	name    string
	horizon int64 // Options.DedupeHorizon, ns
	// credit holds a unit per event of the node in the merger; its size
	// (Options.MaxHeld) is how far the node may run ahead.
	credit  *semaphore.Weighted
	maxHeld int

	// Guarded by Relay.mu.
	holder, lastPeer *peer // peer streaming the node now / last
	gone             bool  // its address vanished from DNS
	address          string
	tls              *observerpb.TLS
	state            relaypb.NodeState
	stateSince       time.Time
	status           *observerpb.ServerStatusResponse // last polled
	statusAt         time.Time

	// Used only by the holder's goroutine (claims hand it over under
	// Relay.mu, which orders the accesses).
	cursor ring.Cursor // after the last entry handed to the merger
	latest int64       // newest event time seen, unix ns
}

func newNode(name string, horizon time.Duration, maxHeld int) *node {
	return &node{name: name, horizon: int64(horizon), credit: semaphore.NewWeighted(int64(maxHeld)), maxHeld: maxHeld,
		state: relaypb.NodeState_NODE_UNAVAILABLE}
}

// resumeFrom is where the next stream of the node starts when its cursor
// does not apply (first contact, or an agent that restarted since: a new
// ring): first at since, later a horizon before the newest event seen, so
// that what a restarted agent wrote before the relay reconnected is not
// missed, and nothing older than what was delivered comes again.
func (n *node) resumeFrom(since time.Time) time.Time {
	if n.latest == 0 {
		return since
	}
	return time.Unix(0, n.latest-n.horizon)
}

// describe is the node's GetNodes entry (called with Relay.mu held).
func (n *node) describe() *observerpb.Node {
	out := &observerpb.Node{
		Name:    n.name,
		Address: n.address,
		State:   n.state,
		Tls:     n.tls,
	}
	if st := n.status; st != nil {
		out.Version = st.GetVersion()
		out.NumFlows = st.GetNumFlows()
		out.MaxFlows = st.GetMaxFlows()
		out.SeenFlows = st.GetSeenFlows()
		if n.state == relaypb.NodeState_NODE_CONNECTED {
			out.UptimeNs = st.GetUptimeNs() + uint64(time.Since(n.statusAt))
		}
	}
	return out
}
