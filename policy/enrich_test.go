package policy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// An exchange seen at a netns server moments after its local client
// connected, before the 50 ms poll of the verdict ring: Enrich drains the
// ring for it. The kernel forgot the client's identity once the SYN's
// decision was reported, so the revision in force alone would judge the
// client as the host (not allowed in: no policy on the flow).
func TestEnrichDrainsFreshVerdicts(t *testing.T) {
	s := newBenchSetup(t, 0, "serve", false)
	server := netip.MustParseAddrPort(s.addr)
	for i := range 20 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		client := netip.MustParseAddrPort(c.LocalAddr().String())
		f := &flow.Flow{Time: time.Now(), Observer: flow.SideServer, Kind: flow.KindExchange, Protocol: "HTTP/1.1", Method: "GET", Path: "/",
			Source: client, Destination: server, Process: flow.Process{PID: uint32(s.server.cmd.Process.Pid)}}
		s.r.eng.Enrich(f)
		c.Close()
		p := f.Policy
		if p == nil {
			t.Fatalf("connection %d: no policy on the server's exchange", i)
		}
		if p.Verdict != flow.VerdictForwarded || p.Source.Name != "client" || !hasPolicy(p.IngressAllowedBy, "bench-server") {
			t.Fatalf("connection %d: policy %+v, want FORWARDED from client, allowed by bench-server", i, p)
		}
	}
}
