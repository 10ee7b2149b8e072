package policy

import (
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/datapath"
	"github.com/sextant/sextant/policy/endpoint"
	"github.com/sextant/sextant/policy/ipcache"
	"github.com/sextant/sextant/policy/l7"
	"github.com/sextant/sextant/policy/resolve"
)

// Enrich is the policy stage's enricher of observed exchanges (the agent
// runs it after the route stage, on the collector's goroutine). A flow of
// a policy endpoint gets f.Policy:
//
//   - the policies that allowed its connection, per direction: from the
//     verdicts the kernel reported for that connection (the table below),
//     else from the revision in force (the same lookup the kernel makes,
//     with the peer identity the kernel learnt; PolicyRef.Revision says
//     which revision) for the observed endpoint's own direction and, when
//     the peer is a netns endpoint of this node, for the peer's. Verdicts
//     are read every 50 ms; an exchange of an enforced endpoint that ends
//     sooner after its connect has the ring drained first (awaitVerdict);
//   - the L7 audit: when the HTTP rules that cover the connection deny the
//     request, verdict AUDIT, drop reason POLICY_DENIED and the rules'
//     policies in denied_by, hook "l7", although no proxy is in the path.
//
// Nothing is set when the flow's endpoint is not enforced in that
// direction, or when the connection was not allowed (its verdict was
// lost and the revision in force denies it): unknown is not guessed.
func (e *Engine) Enrich(f *flow.Flow) {
	if f == nil || f.Kind != flow.KindExchange || f.Policy != nil {
		return
	}
	e.mu.RLock()
	rev := e.cur
	e.mu.RUnlock()
	if rev == nil || len(rev.endpoints) == 0 {
		return
	}
	client, server := unmapped(f.Source), unmapped(f.Destination)
	var dir resolve.Direction
	var local, remote netip.AddrPort
	switch f.Observer {
	case flow.SideServer:
		dir, local, remote = resolve.Ingress, server, client
	case flow.SideClient:
		dir, local, remote = resolve.Egress, client, server
	default:
		return
	}
	isClient := f.Observer == flow.SideClient
	inV, egV, inOK, egOK := e.conns.lookup(client, server, f.Process.PID, isClient)
	if !(inOK && dir == resolve.Ingress || egOK && dir == resolve.Egress) && e.awaitVerdict(rev, f, dir, local, client, server) {
		inV, egV, inOK, egOK = e.conns.lookup(client, server, f.Process.PID, isClient)
	}
	var in, eg *connSide
	var inS, egS connSide // on the stack: judge keeps no pointer to them
	if inOK {
		inS = e.side(inV)
		in = &inS
	}
	if egOK {
		egS = e.side(egV)
		eg = &egS
	}
	j := e.judge(rev, f, dir, local, remote, in, eg)
	if j == nil {
		return
	}
	f.Policy = j
}

// connSide is what a reported verdict says about one direction of a
// connection.
type connSide struct {
	local, remote Peer
	allowedBy     []PolicyRef
	deniedBy      []PolicyRef // audited connections
	outcome       Outcome
	matchType     resolve.MatchType
	revision      uint64
}

// judge builds an exchange's Policy: the observed endpoint's direction
// from its reported verdict or the revision in force, the other
// direction from its reported verdict, then the L7 audit.
func (e *Engine) judge(rev *revision, f *flow.Flow, dir resolve.Direction, local, remote netip.AddrPort, in, eg *connSide) *flow.Policy {
	own, other := in, eg
	if dir == resolve.Egress {
		own, other = eg, in
	}
	epID, ep := rev.endpointOf(e.cgroupRoot, f.Process, local.Addr())
	if own == nil && ep != nil {
		own = e.replay(rev, epID, dir, local, remote, 0)
	}
	if own == nil && other == nil {
		return nil
	}
	// The peer's direction, when the peer is a netns endpoint of this
	// node and its verdict was not read yet: the same lookup, with this
	// endpoint's identity as the remote.
	if other == nil && own != nil {
		if peerID, peer := rev.endpointByAddr(remote.Addr()); peer != nil && peer.IsNetns() {
			other = e.replay(rev, peerID, dir^1, remote, local, ipcache.ID(own.local.Identity))
		}
	}
	p := &flow.Policy{Verdict: flow.VerdictForwarded, Proto: resolve.ProtoTCP, Direction: flowDirection(dir)}
	put := func(s *connSide, d resolve.Direction) {
		if s == nil {
			return
		}
		src, dst := s.local, s.remote
		if d == resolve.Ingress {
			src, dst = s.remote, s.local
			p.IngressAllowedBy, p.IngressDeniedBy = s.allowedBy, s.deniedBy
		} else {
			p.EgressAllowedBy, p.EgressDeniedBy = s.allowedBy, s.deniedBy
		}
		// The local endpoint's view of its own side wins over a peer's
		// view of it (a peer's labels are its identity's only).
		if p.Source.Identity == 0 || src.Endpoint != "" {
			p.Source = src.endpoint()
		}
		if p.Destination.Identity == 0 || dst.Endpoint != "" {
			p.Destination = dst.endpoint()
		}
	}
	put(other, dir^1)
	put(own, dir)
	if own != nil {
		p.MatchType, p.Revision = uint8(own.matchType), own.revision
		if own.outcome == Audited {
			p.Verdict = flow.VerdictAudit
		}
	}
	if own == nil || ep == nil {
		return p
	}
	// L7 audit: the HTTP rules of the observed endpoint's direction that
	// cover this peer and port.
	t := rev.result.Endpoints[epID].Tables[dir]
	if len(t.L7) == 0 {
		return p
	}
	port := local.Port()
	if dir == resolve.Egress {
		port = remote.Port()
	}
	var rules []resolve.L7Rule
	for _, r := range t.L7 {
		if l7.Applies(r, own.remote.Identity, port) {
			rules = append(rules, r)
		}
	}
	res := l7.Evaluate(f, rules)
	if res.Outcome != l7.Denied {
		return p
	}
	p.Verdict, p.DropReason, p.Hook, p.Count, p.Revision = flow.VerdictAudit, flow.PolicyDenied, flow.HookL7Audit, 1, rev.number
	denied := refsOf(res.DeniedBy, rev.number)
	if dir == resolve.Egress {
		p.EgressDeniedBy = denied
	} else {
		p.IngressDeniedBy = denied
	}
	return p
}

// awaitVerdict reads the verdicts the kernel has reported and not yet
// delivered (datapath.Reader.Drain) when the observed endpoint enforces
// dir: its connection's decision was then reported before the exchange
// began. It is needed, not an optimisation: the ingress program forgets
// a local client's identity once its decision is reported (see
// pkt_ingress), so replay could no longer learn it. One drain serves
// every exchange that began before it; a connection a drain found no
// verdict for (older than the agent, or its record lost) is not drained
// for again. true: a drain ran.
func (e *Engine) awaitVerdict(rev *revision, f *flow.Flow, dir resolve.Direction, local, client, server netip.AddrPort) bool {
	if e.reader == nil {
		return false
	}
	epID, ep := rev.endpointOf(e.cgroupRoot, f.Process, local.Addr())
	if ep == nil || !rev.result.Endpoints[epID].Tables[dir].Enforced {
		return false
	}
	k := connKey{keyOf(client), keyOf(server)}
	e.drainMu.Lock()
	defer e.drainMu.Unlock()
	if _, ok := e.drainedFor[k]; ok || e.lastDrain.After(f.Time) {
		return false
	}
	if len(e.drainedFor) >= maxConns {
		clear(e.drainedFor)
	}
	e.drainedFor[k] = struct{}{} // looked up again by the caller; if found, the entry is never read
	start := time.Now()
	if !e.reader.Drain(drainTimeout) {
		return false // a starved reader: this connection does not wait again
	}
	e.lastDrain = start
	return true
}

// drainTimeout bounds the wait of an exchange for the verdict reader (it
// answers in microseconds unless the host is saturated).
const drainTimeout = 20 * time.Millisecond

// replay decides the connection of an exchange with the revision in
// force, as the kernel would: endpoint epID's table for dir, the peer's
// identity remoteID when known, else as the kernel learnt it (a local
// client's from the flow its first packet recorded, a local server's from
// its bound socket) or from the ipcache. Only an allowed connection is
// reported.
func (e *Engine) replay(rev *revision, epID uint32, dir resolve.Direction, local, remote netip.AddrPort, remoteID ipcache.ID) *connSide {
	t := rev.result.Endpoints[epID].Tables[dir]
	if remoteID == 0 {
		remoteID, _ = rev.ipc.Lookup(remote.Addr())
		var learnt uint32
		// The kernel learns identities of sockets on the host's addresses
		// only (cgroup endpoints share them); elsewhere the ipcache's is
		// the kernel's, and the map lookups (≈ 3 µs each) are skipped.
		switch {
		case remoteID != ipcache.Host:
		case dir == resolve.Ingress:
			learnt = e.dp.ClientIdentity(remote, local.Port(), resolve.ProtoTCP)
		case e.hostNetns != 0:
			learnt = e.dp.ServerIdentity(e.hostNetns, remote.Addr(), remote.Port(), resolve.ProtoTCP)
		}
		if learnt != 0 {
			remoteID = ipcache.ID(learnt)
		}
	}
	port := local.Port()
	if dir == resolve.Egress {
		port = remote.Port()
	}
	d := t.Decide(remoteID, resolve.ProtoTCP, port)
	if d.Verdict != resolve.Allowed {
		return nil
	}
	s := &connSide{local: rev.local[epID], matchType: d.MatchType, revision: rev.number, outcome: Forwarded}
	s.local.Addr = local
	s.remote = Peer{Identity: uint32(remoteID), Addr: remote}
	if p, ok := rev.peers[remoteID]; ok {
		s.remote = p
		s.remote.Identity, s.remote.Addr = uint32(remoteID), remote
	}
	if int(d.Cookie) < len(rev.refs) {
		s.allowedBy = rev.refs[d.Cookie]
	}
	return s
}

// endpointOf finds the endpoint of a process (by cgroup) or of an address
// (a netns endpoint's).
func (rev *revision) endpointOf(root string, p flow.Process, addr netip.Addr) (uint32, *endpoint.Endpoint) {
	if p.CgroupID != 0 {
		if id, ok := rev.byCgroup.Load(p.CgroupID); ok {
			if id := id.(uint32); id != 0 {
				return id, rev.endpoints[id]
			}
			return rev.endpointByAddr(addr)
		}
	}
	id := rev.endpointByCgroup(root, p)
	if p.CgroupID != 0 {
		rev.byCgroup.Store(p.CgroupID, id)
	}
	if id != 0 {
		return id, rev.endpoints[id]
	}
	return rev.endpointByAddr(addr)
}

func (rev *revision) endpointByCgroup(root string, p flow.Process) uint32 {
	for id, ep := range rev.endpoints {
		if ep.CgroupPath == "" {
			continue
		}
		if p.CgroupID != 0 && p.CgroupID == ep.CgroupID {
			return id
		}
		if p.Cgroup != "" {
			abs := filepath.Join(root, p.Cgroup)
			if abs == ep.CgroupPath || strings.HasPrefix(abs, ep.CgroupPath+"/") {
				return id
			}
		}
	}
	return 0
}

func (rev *revision) endpointByAddr(addr netip.Addr) (uint32, *endpoint.Endpoint) {
	addr = addr.Unmap()
	for id, ep := range rev.endpoints {
		for _, a := range ep.Addrs() {
			if a == addr {
				return id, ep
			}
		}
	}
	return 0, nil
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// conns remembers what the kernel reported about TCP connections, so
// that the exchanges observed on them carry the policies that allowed
// them. Keys: the 5-tuple where the hook knew it (ingress SYNs, packet
// hooks), and (client pid, server address) for connect(), where the
// client's port is not bound yet. Bounded: two generations of maxConns
// entries each; the older is dropped when the newer fills.
//
// Keys and values hold no pointers: recording allocates nothing and the
// tables cost the GC no scanning. An entry of pointers (peers, labels,
// policy references) made recording ≈ 40 % of the agent's cost per
// verdict (BenchmarkDeliver); they are rebuilt from the revision's tables
// when an exchange asks (connVerdict.side).
type conns struct {
	mu       sync.Mutex
	cur, old connMaps
}

// connVerdict is what a reported verdict says about one direction of a
// connection.
type connVerdict struct {
	revision  uint64
	epID      uint32
	localID   uint32
	remoteID  uint32
	cookie    uint32
	reason    DropReason
	outcome   Outcome
	matchType resolve.MatchType
}

// connMaps is one generation of the table. IPv4 connections, the common
// case, are keyed by two words (an end is address<<16 | port): the map
// hashes and compares such a key in two loads, where the 36-byte key of
// an IPv6 connection took a generic hash and memequal. With that key for
// every connection, the inserts were ≈ 0.6 µs of the engine's ≈ 1.4 µs per
// connection under BenchmarkConnect (perf per block).
type connMaps struct {
	v4 connTable[[2]uint64, [2]uint64] // (client end, server end); (pid, server end)
	v6 connTable[connKey, pidKey]
}

// connTable is one address family's tables: by connection for each
// direction, and by (client pid, server) for a connect() that did not
// know its port yet.
type connTable[C, P comparable] struct {
	ingress, egress map[C]connVerdict
	byPID           map[P]connVerdict
}

// newConnTable is sized like the table it follows: growing a map to 2^15
// entries was a quarter of the cost of recording (rehashes).
func newConnTable[C, P comparable](like connTable[C, P]) connTable[C, P] {
	return connTable[C, P]{
		ingress: make(map[C]connVerdict, len(like.ingress)),
		egress:  make(map[C]connVerdict, len(like.egress)),
		byPID:   make(map[P]connVerdict, len(like.byPID)),
	}
}

func (t *connTable[C, P]) len() int { return len(t.ingress) + len(t.egress) + len(t.byPID) }

// put records cv: under k in the direction's table (egress: when the
// client's port is known) and, for a client's pid (not 0), under pk.
func (t *connTable[C, P]) put(ingress bool, k C, clientPort uint16, pid uint32, pk P, cv connVerdict) {
	switch {
	case ingress:
		t.ingress[k] = cv
	case clientPort != 0:
		t.egress[k] = cv
	}
	if !ingress && pid != 0 {
		t.byPID[pk] = cv
	}
}

// get is put's lookup, for the directions not found yet.
func (t *connTable[C, P]) get(k C, pid uint32, pk P, isClient bool, in, eg *connVerdict, inOK, egOK *bool) {
	if !*inOK {
		*in, *inOK = t.ingress[k]
	}
	if !*egOK {
		*eg, *egOK = t.egress[k]
	}
	if !*egOK && isClient && pid != 0 {
		*eg, *egOK = t.byPID[pk]
	}
}

// addrKey is an address and port without netip's zone pointer.
type addrKey struct {
	addr [16]byte
	port uint16
}

func keyOf(ap netip.AddrPort) addrKey {
	return addrKey{addr: ap.Addr().As16(), port: ap.Port()}
}

// end4 is an IPv4 end as one word (ok false: not IPv4).
func end4(ap netip.AddrPort) (uint64, bool) {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(ap.Port()), true
}

type connKey struct{ client, server addrKey }

type pidKey struct {
	pid    uint32
	server addrKey
}

const maxConns = 1 << 15

// newConnMaps is sized like the generation it follows (nil: empty).
func newConnMaps(like *connMaps) connMaps {
	var m connMaps
	if like != nil {
		m = *like
	}
	return connMaps{v4: newConnTable(m.v4), v6: newConnTable(m.v6)}
}

func (m *connMaps) len() int { return m.v4.len() + m.v6.len() }

// put records cv for the connection client → server (see connTable.put).
func (m *connMaps) put(ingress bool, client, server netip.AddrPort, pid uint32, cv connVerdict) {
	c4, ok4 := end4(client)
	s4, ok := end4(server)
	if ok && ok4 {
		m.v4.put(ingress, [2]uint64{c4, s4}, client.Port(), pid, [2]uint64{uint64(pid), s4}, cv)
		return
	}
	k := connKey{keyOf(client), keyOf(server)}
	m.v6.put(ingress, k, client.Port(), pid, pidKey{pid, k.server}, cv)
}

// get is put's lookup.
func (m *connMaps) get(client, server netip.AddrPort, pid uint32, isClient bool, in, eg *connVerdict, inOK, egOK *bool) {
	c4, ok4 := end4(client)
	s4, ok := end4(server)
	if ok && ok4 {
		m.v4.get([2]uint64{c4, s4}, pid, [2]uint64{uint64(pid), s4}, isClient, in, eg, inOK, egOK)
		return
	}
	k := connKey{keyOf(client), keyOf(server)}
	m.v6.get(k, pid, pidKey{pid, k.server}, isClient, in, eg, inOK, egOK)
}

// record keeps the reported TCP verdicts of connections that went
// through (vs[i] is records[i]'s verdict).
func (c *conns) record(records []datapath.Record, vs []Verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur.v4.ingress == nil {
		c.cur, c.old = newConnMaps(nil), newConnMaps(nil)
	}
	for i := range records {
		r, v := &records[i], &vs[i]
		if r.Proto != resolve.ProtoTCP || v.Outcome == Dropped {
			continue
		}
		if c.cur.len() >= maxConns {
			c.old, c.cur = c.cur, newConnMaps(&c.cur)
		}
		cv := connVerdict{revision: r.Revision, epID: r.EpID, localID: r.Identity, remoteID: r.RemoteIdentity,
			cookie: r.Cookie, reason: v.DropReason, outcome: v.Outcome, matchType: resolve.MatchType(r.MatchType)}
		if r.Dir == uint8(resolve.Ingress) {
			c.cur.put(true, r.Remote, r.Local, 0, cv)
		} else {
			c.cur.put(false, r.Local, r.Remote, r.PID, cv)
		}
	}
}

// lookup returns the reported verdicts of a connection's two directions
// (ok false: none); pid is the observed process's, which is the client's
// when isClient.
func (c *conns) lookup(client, server netip.AddrPort, pid uint32, isClient bool) (in, eg connVerdict, inOK, egOK bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range [2]*connMaps{&c.cur, &c.old} {
		if m.v4.ingress != nil {
			m.get(client, server, pid, isClient, &in, &eg, &inOK, &egOK)
		}
	}
	return in, eg, inOK, egOK
}

// side is the verdict as judge reads it, with its revision's peers and
// policies (identities only when that revision is no longer kept).
func (e *Engine) side(v connVerdict) connSide {
	e.mu.RLock()
	rev := e.history[v.revision]
	e.mu.RUnlock()
	s := connSide{outcome: v.outcome, matchType: v.matchType, revision: v.revision}
	s.local, s.remote, s.allowedBy, s.deniedBy = rev.verdictPeers(v.epID, v.localID, v.remoteID, v.cookie, v.reason)
	return s
}
