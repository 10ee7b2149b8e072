package collector

import (
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/probes"
)

// Records of the two directions reach user space out of order; the
// collector must hand them to the decoder in the order they happened.
func TestReorderAcrossDirections(t *testing.T) {
	var flows []*flow.Flow
	c := New(Config{Node: "n1"}, func(f *flow.Flow) { flows = append(flows, f) })
	t0 := time.Unix(1000, 0)
	local, remote := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:8080")
	c.Handle(&probes.Event{Kind: probes.KindConn, ConnID: 7, PID: 42, Time: t0, Dir: probes.Egress,
		Conn: &probes.ConnInfo{Local: local, Remote: remote, Comm: "curl", Proto: probes.ProtoH1}})
	req := []byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	resp := []byte("HTTP/1.1 204 No Content\r\n\r\n")
	h1 := func(seq uint32, d probes.Direction, at time.Duration, b []byte) *probes.Event {
		return &probes.Event{Kind: probes.KindH1Data, ConnID: 7, PID: 42, Seq: seq, Dir: d, Time: t0.Add(at), Data: b, Len: uint32(len(b))}
	}
	// The response read returned (t0+2ms) before the request write's record
	// (stamped when the write began, t0+1ms) reached the ring.
	c.Handle(h1(0, probes.Ingress, 2*time.Millisecond, resp))
	c.Handle(h1(0, probes.Egress, 1*time.Millisecond, req))
	c.Flush()
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1; stats %+v", len(flows), c.Stats())
	}
	f := flows[0]
	if f.Path != "/a" || f.Status != 204 || f.Observer != flow.SideClient || f.Source != local ||
		f.Destination != remote || f.Node != "n1" || f.Process.Comm != "curl" || f.Latency != time.Millisecond {
		t.Errorf("flow = %+v", f)
	}
}

// A sequence gap is a loss: the decoder must not pair across it.
func TestSeqGapIsLoss(t *testing.T) {
	var flows []*flow.Flow
	c := New(Config{}, func(f *flow.Flow) { flows = append(flows, f) })
	t0 := time.Unix(1000, 0)
	c.Handle(&probes.Event{Kind: probes.KindConn, ConnID: 1, Time: t0, Conn: &probes.ConnInfo{Proto: probes.ProtoH1}})
	ev := func(seq uint32, d probes.Direction, ms int, s string) *probes.Event {
		return &probes.Event{Kind: probes.KindH1Data, ConnID: 1, Seq: seq, Dir: d, Time: t0.Add(time.Duration(ms) * time.Millisecond), Data: []byte(s), Len: uint32(len(s))}
	}
	c.Handle(ev(0, probes.Egress, 1, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.Handle(ev(1, probes.Egress, 2, "GET /two HTTP/1.1\r\nHost: x\r\n\r\n"))
	// seq 0 of the ingress side (the response to /one) was lost.
	c.Handle(ev(1, probes.Ingress, 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	c.Flush()
	for _, f := range flows {
		if f.Path == "/one" && f.Status == 200 {
			t.Errorf("paired a response with a request across a loss: %+v", f)
		}
	}
	if c.Stats().SeqGaps != 1 {
		t.Errorf("SeqGaps = %d, want 1", c.Stats().SeqGaps)
	}
}

func TestInScope(t *testing.T) {
	for _, c := range []struct {
		path, scope string
		want        bool
	}{
		{"/a/b", "", true},
		{"/a/b", "/a", true},
		{"/a/b", "/a/", true},
		{"/a", "/a", true},
		{"/ab", "/a", false},
		{"", "/a", false},
	} {
		if got := inScope(c.path, c.scope); got != c.want {
			t.Errorf("inScope(%q, %q) = %v", c.path, c.scope, got)
		}
	}
}

// A process that exits ends all of its connections: exchanges still open
// are reported as closed, and other processes' connections stay.
func TestProcExitClosesItsConnections(t *testing.T) {
	var flows []*flow.Flow
	c := New(Config{}, func(f *flow.Flow) { flows = append(flows, f) })
	t0 := time.Unix(1000, 0)
	for id, pid := range map[uint64]uint32{1: 42, 2: 42, 3: 43} {
		c.Handle(&probes.Event{Kind: probes.KindConn, ConnID: id, PID: pid, Time: t0, Conn: &probes.ConnInfo{Proto: probes.ProtoH1}})
		req := []byte("GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
		c.Handle(&probes.Event{Kind: probes.KindH1Data, ConnID: id, PID: pid, Dir: probes.Egress, Time: t0.Add(time.Millisecond), Data: req, Len: uint32(len(req))})
	}
	c.Handle(&probes.Event{Kind: probes.KindProcExit, PID: 42, Time: t0.Add(time.Second)})
	if got := c.Stats().Conns; got != 1 {
		t.Fatalf("%d connections left after pid 42 exited, want 1 (pid 43's)", got)
	}
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want the 2 open exchanges of pid 42", len(flows))
	}
	for _, f := range flows {
		if f.Path != "/open" || f.Outcome != flow.OutcomeClosed {
			t.Errorf("flow %+v: want /open, outcome closed", f)
		}
	}
}

// A connection idle while its process is gone is closed, unless the
// kernel reports the connection's end itself (socket capture): the socket
// may live on in another process.
func TestSweepTrustsReportedEnds(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(gone.Process.Pid) // exited and reaped: no /proc entry
	var flows []*flow.Flow
	c := New(Config{}, func(f *flow.Flow) { flows = append(flows, f) })
	t0 := time.Now()
	for id, reported := range map[uint64]bool{1: false, 2: true} {
		c.Handle(&probes.Event{Kind: probes.KindConn, ConnID: id, PID: pid, Time: t0, Conn: &probes.ConnInfo{Proto: probes.ProtoH1, EndReported: reported}})
		req := []byte("GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
		c.Handle(&probes.Event{Kind: probes.KindH1Data, ConnID: id, PID: pid, Dir: probes.Egress, Time: t0, Data: req, Len: uint32(len(req))})
	}
	c.Tick(t0.Add(time.Second))
	if got := c.Stats().Conns; got != 2 {
		t.Fatalf("%d connections after 1 s idle, want both", got)
	}
	c.Tick(t0.Add(2 * sweepEvery))
	if got := c.Stats(); got.Conns != 1 || got.ConnsEvicted != 1 {
		t.Fatalf("after %v idle: %d connections, %d evicted; want 1 and 1", 2*sweepEvery, got.Conns, got.ConnsEvicted)
	}
	if len(flows) != 1 || flows[0].ConnID != 1 || flows[0].Outcome != flow.OutcomeClosed {
		t.Fatalf("flows %+v: want connection 1's open exchange, closed", flows)
	}
}
