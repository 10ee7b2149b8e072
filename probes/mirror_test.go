package probes

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sextant/sextant/testbed"
)

// The reader of a traced loopback connection does not walk its bytes
// (bpf/mirror.h): its ingress events are made from the writer's egress
// records. Side by side with an instance whose readers walk their bytes,
// on the same traffic (Go h2c with bodies of many DATA frames, grpc-go
// unary and streaming calls, h2load against nghttpd), every direction of
// every connection rebuilds to the same frames, header fields included.
func TestMirrorMatchesWalk(t *testing.T) {
	testbed.RequireRoot(t)
	if c, err := chooseCapture(CaptureAuto, false); err != nil || c != CaptureSocket {
		t.Skip("mirroring is a socket capture feature")
	}
	h2load, nghttpd := needTool(t, "h2load"), needTool(t, "nghttpd")
	sbs := startSideBySide(t)
	mirrored, walked := sbs.mirrored, sbs.walked

	var addrs []string
	addr := h2cServer(t)
	client := h2cClient()
	doRequests(t, client, addr, 25, "mirror")
	client.CloseIdleConnections()
	addrs = append(addrs, addr)
	addrs = append(addrs, grpcCalls(t))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "doc"), bytes.Repeat([]byte{'m'}, 20000), 0o644); err != nil {
		t.Fatal(err)
	}
	addr = startNghttpd(t, nghttpd, dir)
	if out, err := exec.Command(h2load, "-n", "200", "-c", "2", "-m", "8", "http://"+addr+"/doc").CombinedOutput(); err != nil ||
		!bytes.Contains(out, []byte("200 succeeded")) {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	addrs = append(addrs, addr)

	evs := sbs.stop(t)

	st := mirrored.Stats()
	if st.Mirrored == 0 {
		t.Fatalf("no chunk was mirrored (stats %+v)", st)
	}
	if walked.Stats().Mirrored != 0 {
		t.Errorf("noMirror instance mirrored %d chunks", walked.Stats().Mirrored)
	}
	t.Logf("mirrored instance: %d chunks walked, %d not walked", st.Chunks, st.Mirrored)
	gm, gw := group(evs[mirrored]), group(evs[walked])
	for _, addr := range addrs {
		ends := compareEnds(t, gm, gw, addr)
		if ends < 4 {
			t.Errorf("%s: %d connection ends compared, want at least one connection's two", addr, ends)
		}
	}
	mirroredEvents := 0
	for _, ev := range evs[mirrored] {
		if ev.Mirrored {
			mirroredEvents++
		}
	}
	for _, ev := range evs[walked] {
		if ev.Mirrored {
			t.Fatalf("walked instance handed out a mirrored event %+v", ev)
		}
	}
	if mirroredEvents == 0 {
		t.Errorf("no mirrored event")
	}
}

// Attached to a connection already open (its HPACK state and stream
// numbers established unseen): both instances join it midstream. Only
// connections seen from their first byte are offered (bpf/mirror.h: the
// offer is made where the walk is exact from byte 0), so here the
// mirrored instance's reader walks its bytes itself, and its events are
// the walked instance's.
func TestMirrorMatchesWalkMidstream(t *testing.T) {
	testbed.RequireRoot(t)
	if c, err := chooseCapture(CaptureAuto, false); err != nil || c != CaptureSocket {
		t.Skip("mirroring is a socket capture feature")
	}
	addr := h2cServer(t)
	client := h2cClient()
	defer client.CloseIdleConnections()
	doRequests(t, client, addr, 5, "before")

	sbs := startSideBySide(t)
	mirrored, walked := sbs.mirrored, sbs.walked
	doRequests(t, client, addr, 25, "after")
	evs := sbs.stop(t)
	gm, gw := group(evs[mirrored]), group(evs[walked])
	for id, c := range gm.conns {
		if (c.Local.String() == addr || c.Remote.String() == addr) && c.Proto != ProtoH2Midstream {
			t.Errorf("conn %d proto %s, want h2-midstream", id, c.Proto)
		}
	}
	if ends := compareEnds(t, gm, gw, addr); ends < 4 {
		t.Errorf("%d connection ends compared, want the connection's two", ends)
	}
	for _, ev := range evs[mirrored] {
		if ev.Mirrored && gm.conns[ev.ConnID] != nil && gm.conns[ev.ConnID].Proto == ProtoH2Midstream {
			t.Fatalf("a connection joined midstream was mirrored: %+v", ev)
		}
	}
}

// sideBySide: two instances on the same traffic, one mirroring, one whose
// readers walk their bytes themselves, each read into its own events.
// Both are scoped to a cgroup the test process joins (its children too):
// other tests' traffic on the host stays out of their events and counters.
type sideBySide struct {
	mirrored, walked *Probes
	mu               sync.Mutex
	evs              map[*Probes][]*Event
	cancel           context.CancelFunc
	wg               sync.WaitGroup
}

func startSideBySide(t *testing.T) *sideBySide {
	t.Helper()
	s := &sideBySide{evs: map[*Probes][]*Event{}}
	cg := testbed.NewCgroup(t, "mirror")
	cg.Join(t)
	var err error
	if s.mirrored, err = Load(Options{TraceSelf: true, Capture: CaptureSocket, Cgroup: cg.Dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.mirrored.Close() })
	if s.walked, err = Load(Options{TraceSelf: true, Capture: CaptureSocket, Cgroup: cg.Dir, noMirror: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.walked.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, p := range []*Probes{s.mirrored, s.walked} {
		s.wg.Go(func() {
			p.Run(ctx, func(ev *Event) { s.mu.Lock(); s.evs[p] = append(s.evs[p], ev); s.mu.Unlock() })
		})
	}
	t.Cleanup(func() { cancel(); s.wg.Wait() }) // before the Closes: a test that failed early
	return s
}

// stop reads until the records queued are in, stops both and checks that
// nothing was lost on either side (the walking reader too: a reset after
// grpc-go's last frames once looked like a FIN to it).
func (s *sideBySide) stop(t *testing.T) map[*Probes][]*Event {
	t.Helper()
	settle(func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.evs[s.mirrored]) + len(s.evs[s.walked]) })
	s.cancel()
	s.wg.Wait()
	for _, p := range []*Probes{s.mirrored, s.walked} {
		if ps := p.Stats(); ps.Lost() != 0 || ps.MirrorLate != 0 {
			t.Errorf("drops %v, mirror late %d", ps.Drops, ps.MirrorLate)
		}
	}
	return s.evs
}

// compareEnds checks every traced end of a connection to addr: the same
// frames in both groups, per direction. Returns how many directions it
// compared.
func compareEnds(t *testing.T, gm, gw *byConn, addr string) int {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	type end struct{ local, remote netip.AddrPort }
	ids := func(g *byConn) map[end]uint64 {
		out := map[end]uint64{}
		for id, c := range g.conns {
			if c.Local == ap || c.Remote == ap {
				out[end{c.Local, c.Remote}] = id
			}
		}
		return out
	}
	im, iw := ids(gm), ids(gw)
	if len(im) != len(iw) || len(im) == 0 {
		t.Fatalf("%s: %d connection ends mirrored, %d walked", addr, len(im), len(iw))
	}
	n := 0
	for e, m := range im {
		w, ok := iw[e]
		if !ok {
			t.Errorf("%s: end %v only in the mirrored instance", addr, e)
			continue
		}
		for _, dir := range []Direction{Egress, Ingress} {
			dm, dw := gm.dirs[connKey{m, dir}], gw.dirs[connKey{w, dir}]
			if dm == nil && dw == nil {
				continue // nothing in it (nghttpd greets a readiness probe)
			}
			if dm == nil || dw == nil {
				t.Errorf("%s %v %s: mirrored has it %v, walked %v", addr, e, dir, dm != nil, dw != nil)
				continue
			}
			for _, err := range dm.errs {
				t.Errorf("%s %v %s: mirrored: %s", addr, e, dir, err)
			}
			for _, err := range dw.errs {
				t.Errorf("%s %v %s: walked: %s", addr, e, dir, err)
			}
			if !reflect.DeepEqual(dm.frames, dw.frames) {
				t.Errorf("%s %v %s: %d frames mirrored, %d walked; first difference: %s", addr, e, dir,
					len(dm.frames), len(dw.frames), firstDiff(dm.frames, dw.frames))
				for i := max(0, len(dm.frames)-4); i < len(dm.frames); i++ {
					t.Logf("mirrored %d: %+v", i, dm.frames[i])
				}
				for i := max(0, len(dw.frames)-4); i < len(dw.frames); i++ {
					t.Logf("walked %d: %+v", i, dw.frames[i])
				}
			}
			n++
		}
	}
	return n
}

func firstDiff(a, b []frame) string {
	for i := range min(len(a), len(b)) {
		if !reflect.DeepEqual(a[i], b[i]) {
			return fmt.Sprintf("frame %d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return "one is a prefix of the other"
}

// grpcCalls runs unary and streaming calls of grpc-go's health service
// in-process; returns the server's address.
func grpcCalls(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	// The client closes first and the server reads to the end: bytes a
	// reader never read would be the writer's only (a limit of
	// mirroring, README).
	defer srv.GracefulStop()
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx := context.Background()
	for range 10 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
		hs.SetServingStatus("svc", st)
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	return ln.Addr().String()
}
