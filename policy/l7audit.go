package policy

import (
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/endpoint"
	"github.com/sextant/sextant/policy/ipcache"
	"github.com/sextant/sextant/policy/l7"
	"github.com/sextant/sextant/policy/resolve"
)

// L7Audit evaluates the HTTP rules of the revision in force on an
// observed request (a flow of the collector). It returns an AUDIT
// verdict, with the policies whose HTTP rules the request fails in
// DeniedBy, when the node proxy would refuse the request; nil when the
// request is allowed, when no L7 rule covers it, when its connection is
// not allowed at L3/L4 in the first place, or when the flow lacks what a
// rule needs (unknown is not guessed).
//
// The endpoint is the observed process's (its cgroup) or, for a netns
// endpoint, the one holding the flow's local address; a server-side
// flow is checked against the endpoint's ingress rules, a client-side
// one against its egress rules.
func (e *Engine) L7Audit(f *flow.Flow) *Verdict {
	e.mu.RLock()
	rev := e.cur
	e.mu.RUnlock()
	if rev == nil || f == nil {
		return nil
	}
	var dir resolve.Direction
	var local, remote netip.AddrPort
	switch f.Observer {
	case flow.SideServer:
		dir, local, remote = resolve.Ingress, f.Destination, f.Source
	case flow.SideClient:
		dir, local, remote = resolve.Egress, f.Source, f.Destination
	default:
		return nil
	}
	epID, ep := rev.endpointOf(e.cgroupRoot, f.Process, local.Addr())
	if ep == nil {
		return nil
	}
	pol := rev.result.Endpoints[epID]
	t := pol.Tables[dir]
	// The peer's identity as the kernel decided it: a local client's
	// from its recorded flow, a local server's from its bound socket,
	// else the ipcache.
	remoteID, _ := rev.ipc.Lookup(remote.Addr())
	var learnt uint32
	if dir == resolve.Ingress {
		learnt = e.dp.ClientIdentity(remote, local.Port(), resolve.ProtoTCP)
	} else if ns, err := endpoint.NetnsCookie(); err == nil {
		learnt = e.dp.ServerIdentity(ns, remote.Addr(), remote.Port(), resolve.ProtoTCP)
	}
	if learnt != 0 {
		remoteID = ipcache.ID(learnt)
	}
	port := local.Port()
	if dir == resolve.Egress {
		port = remote.Port()
	}
	if d := t.Decide(remoteID, resolve.ProtoTCP, port); d.Verdict != resolve.Allowed {
		return nil
	}
	var rules []resolve.L7Rule
	for _, r := range t.L7 {
		if l7.Applies(r, uint32(remoteID), port) {
			rules = append(rules, r)
		}
	}
	res := l7.Evaluate(f, rules)
	if res.Outcome != l7.Denied {
		return nil
	}
	localPeer := Peer{Identity: uint32(pol.Endpoint.Identity.ID), EpID: epID, Endpoint: ep.Name, Namespace: ep.Namespace, Labels: ep.Labels.GetModel(), Addr: local}
	remotePeer := Peer{Identity: uint32(remoteID), Addr: remote}
	if id, ok := rev.ids[remoteID]; ok {
		remotePeer.Labels = id.Labels.GetModel()
	}
	v := &Verdict{
		Time: f.Time, Node: e.cfg.Node, Outcome: Audited, DropReason: PolicyDenied, MatchType: resolve.MatchL3L4,
		Direction: dir, Proto: resolve.ProtoTCP, Process: f.Process, Count: 1, Revision: rev.number, Hook: "l7",
		DeniedBy: refsOf(res.DeniedBy, rev.number), L7: f,
	}
	if dir == resolve.Egress {
		v.Source, v.Destination = localPeer, remotePeer
	} else {
		v.Source, v.Destination = remotePeer, localPeer
	}
	e.metrics.observe(v)
	return v
}

// endpointOf finds the endpoint of a process (by cgroup) or of an address
// (a netns endpoint's).
func (rev *revision) endpointOf(root string, p flow.Process, addr netip.Addr) (uint32, *endpoint.Endpoint) {
	for id, ep := range rev.endpoints {
		if ep.CgroupPath == "" {
			continue
		}
		if p.CgroupID != 0 && p.CgroupID == ep.CgroupID {
			return id, ep
		}
		if p.Cgroup != "" {
			abs := filepath.Join(root, p.Cgroup)
			if abs == ep.CgroupPath || strings.HasPrefix(abs, ep.CgroupPath+"/") {
				return id, ep
			}
		}
	}
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
