package prometheus

import (
	"net/netip"
	"strconv"

	"github.com/sextant/sextant/flow"
)

// overflow is the value of every label of the series that absorbs
// observations once a metric reached its series limit.
const overflow = "_overflow_"

// otherMethod stands for methods outside the known set (semconv
// http.request.method): a client can send any token as its method.
const otherMethod = "_OTHER"

// methods are the HTTP methods kept as they are (RFC 9110, RFC 5789 PATCH).
var methods = map[string]string{
	"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "DELETE": "DELETE",
	"CONNECT": "CONNECT", "OPTIONS": "OPTIONS", "TRACE": "TRACE", "PATCH": "PATCH",
}

func method(m string) string {
	if m == "" {
		return ""
	}
	if v, ok := methods[m]; ok {
		return v
	}
	return otherMethod
}

// codes holds the decimal strings of 0..999, so that status codes become
// label values without formatting.
var codes = func() [1000]string {
	var t [1000]string
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// code is the label value of an HTTP or gRPC status; "" when unknown.
func code(c uint32, known bool) string {
	if !known {
		return ""
	}
	if c < uint32(len(codes)) {
		return codes[c]
	}
	return strconv.FormatUint(uint64(c), 10)
}

// traceID returns the trace id of a W3C traceparent
// ("00-<32 hex>-<16 hex>-<2 hex>"), or "" when the value is not one.
func traceID(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return ""
	}
	if tp[:2] == "ff" || (tp[:2] == "00" && len(tp) != 55) {
		return ""
	}
	id := tp[3:35]
	zero := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
		if c != '0' {
			zero = false
		}
	}
	if zero {
		return ""
	}
	return id
}

// interner remembers the label strings of addresses and ports, so that
// formatting them happens once; bounded so that scans cannot grow it.
type interner struct {
	addrs map[netip.Addr]string
	ports map[uint16]string
	max   int
}

func newInterner(max int) *interner {
	return &interner{addrs: make(map[netip.Addr]string), ports: make(map[uint16]string), max: max}
}

func (in *interner) addr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	if s, ok := in.addrs[a]; ok {
		return s
	}
	s := a.Unmap().String()
	if len(in.addrs) < in.max {
		in.addrs[a] = s
	}
	return s
}

func (in *interner) port(p uint16) string {
	if p == 0 {
		return ""
	}
	if s, ok := in.ports[p]; ok {
		return s
	}
	s := strconv.Itoa(int(p))
	if len(in.ports) < in.max {
		in.ports[p] = s
	}
	return s
}

// peers learns which local workload is at the other end of a connection:
// the agent sees both ends of node-local traffic, as a client flow and a
// server flow. Only what was observed is named; the rest stays "".
type peers struct {
	servers map[netip.AddrPort]string // listening address → server workload
	clients map[netip.AddrPort]string // client socket address → client workload
	max     int
}

func newPeers(max int) *peers {
	return &peers{servers: make(map[netip.AddrPort]string), clients: make(map[netip.AddrPort]string), max: max}
}

// learn notes the workload behind one end of f and returns the workload
// of the other end when known.
func (p *peers) learn(f *flow.Flow, svc string) string {
	switch f.Observer {
	case flow.SideServer:
		remember(p.servers, f.Destination, svc, p.max)
		return p.clients[f.Source]
	case flow.SideClient:
		remember(p.clients, f.Source, svc, p.max)
		return p.servers[f.Destination]
	}
	return ""
}

func remember(m map[netip.AddrPort]string, k netip.AddrPort, v string, max int) {
	if !k.IsValid() || v == "" {
		return
	}
	if old, ok := m[k]; ok && old == v {
		return
	}
	if len(m) >= max {
		clear(m) // client ports are ephemeral: forget them all rather than track ages
	}
	m[k] = v
}
