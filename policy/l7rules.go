package policy

import (
	"net/netip"
	"reflect"
	"slices"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/sextant/sextant/policy/endpoint"
	"github.com/sextant/sextant/policy/resolve"
)

// L7Rules is one policy's HTTP rules protecting its endpoints' servers:
// what the node proxy enforces (the agent feeds them to proxy.SetL7).
type L7Rules struct {
	Policy PolicyRef
	// Servers are the listening addresses the rules protect: the
	// endpoint's addresses (a cgroup endpoint's are the host's and
	// loopback) with each port of the rules.
	Servers []netip.AddrPort
	HTTP    []api.PortRuleHTTP
}

// maxL7Ports bounds the ports of one rule's range that become servers.
const maxL7Ports = 64

// L7Rules lists the ingress HTTP rules of the revision in force, by
// policy (the rules and servers of every endpoint a policy selects). A rule's peer restriction (fromEndpoints) is not part of
// it: the proxy does not know the client's identity, so it applies the
// rules to every client of the server (the L7 audit evaluator, which does
// know it, keeps the restriction).
func (e *Engine) L7Rules() []L7Rules {
	e.mu.RLock()
	rev := e.cur
	e.mu.RUnlock()
	if rev == nil {
		return nil
	}
	ids := make([]uint32, 0, len(rev.endpoints))
	for id := range rev.endpoints {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var hostAddrs []netip.Addr
	var out []L7Rules
	byPolicy := map[string]int{}
	for _, id := range ids {
		ep := rev.endpoints[id]
		addrs := ep.Addrs()
		if !ep.IsNetns() {
			if hostAddrs == nil {
				hostAddrs, _ = endpoint.HostAddrs()
				hostAddrs = append(hostAddrs, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"))
			}
			addrs = hostAddrs
		}
		for _, r := range rev.result.Endpoints[id].Tables[resolve.Ingress].L7 {
			if r.HTTP == nil || r.Proto == resolve.ProtoUDP || r.Lo == 0 {
				continue
			}
			ref := refsOf([]resolve.Ref{r.Ref}, rev.number)[0]
			i, ok := byPolicy[ref.String()]
			if !ok {
				i = len(out)
				byPolicy[ref.String()] = i
				out = append(out, L7Rules{Policy: ref})
			}
			l := &out[i]
			for _, h := range r.HTTP {
				if !slices.ContainsFunc(l.HTTP, func(o api.PortRuleHTTP) bool { return reflect.DeepEqual(o, h) }) {
					l.HTTP = append(l.HTTP, h)
				}
			}
			for port := r.Lo; port <= r.Hi && port-r.Lo < maxL7Ports; port++ {
				for _, a := range addrs {
					if s := netip.AddrPortFrom(a, port); !slices.Contains(l.Servers, s) {
						l.Servers = append(l.Servers, s)
					}
				}
				if port == 0xffff {
					break
				}
			}
		}
	}
	return out
}

// Revisions receives a value after each revision applied (at most one
// waits): the agent refreshes what depends on the policy (the proxy's L7
// rules).
func (e *Engine) Revisions() <-chan struct{} { return e.revisions }
