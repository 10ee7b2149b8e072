package relay

import (
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/proto"
)

// node is one agent as the relay knows it, by the node name it reports.
// Its dedupe state outlives connections and addresses: whichever peer
// streams the node next resumes where the last one stopped.
type node struct {
	name    string
	horizon int64 // Options.DedupeHorizon, ns
	// credit holds a token per event of the node in the merger; its
	// capacity (Options.MaxHeld) is how far the node may run ahead.
	credit chan struct{}

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
	latest int64            // newest event time seen, unix ns
	seen   map[uint64]int64 // identity → event time, of events near latest
	order  []seenEvent      // seen, in arrival order, for eviction
	head   int              // order[:head] are evicted
}

type seenEvent struct {
	id   uint64
	time int64
}

func newNode(name string, horizon time.Duration, maxHeld int) *node {
	return &node{name: name, horizon: int64(horizon), credit: make(chan struct{}, maxHeld), seen: map[uint64]int64{}, state: relaypb.NodeState_NODE_UNAVAILABLE}
}

// resumeFrom is where the next stream of the node starts: first at since,
// later a horizon before the newest event seen, so that events the agent
// wrote slightly out of order around the break are not missed.
func (n *node) resumeFrom(since time.Time) time.Time {
	if n.latest == 0 {
		return since
	}
	return time.Unix(0, n.latest-n.horizon)
}

// duplicate reports whether the event was delivered before, and remembers
// it otherwise. Events older than the horizon before the newest one are
// not remembered: a resumed stream does not ask for them.
func (n *node) duplicate(resp *observerpb.GetFlowsResponse, t int64) bool {
	id := identity(resp)
	if _, ok := n.seen[id]; ok {
		return true
	}
	n.seen[id] = t
	n.order = append(n.order, seenEvent{id, t})
	if t > n.latest {
		n.latest = t
	}
	n.evict()
	return false
}

// evict forgets events that fell out of the horizon. It relies on the
// stream being nearly in time order: an entry is forgotten once it reaches
// the front of the arrival order and is old enough.
func (n *node) evict() {
	limit := n.latest - n.horizon
	for n.head < len(n.order) && n.order[n.head].time < limit {
		e := n.order[n.head]
		if n.seen[e.id] == e.time {
			delete(n.seen, e.id)
		}
		n.head++
	}
	// Compact once the evicted prefix dominates, so memory stays bounded.
	if n.head > 1024 && n.head*2 > len(n.order) {
		n.order = append(n.order[:0], n.order[n.head:]...)
		n.head = 0
	}
}

// identity tells events apart: flows by their UUID (unique per event),
// anything else (lost events, a flow without UUID) by its whole content.
func identity(resp *observerpb.GetFlowsResponse) uint64 {
	if id := resp.GetFlow().GetUuid(); id != "" {
		return fnv64a(fnvOffset, id)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		// Unmarshalable means it came off the wire broken; the time
		// alone is the best identity left.
		return uint64(eventTime(resp))
	}
	return fnv64a(fnvOffset, string(b))
}

// FNV-1a, inline: hash/fnv allocates per call, and this runs per event.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv64a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
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
