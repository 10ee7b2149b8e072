package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/collector/flow"
	"github.com/sextant/sextant/collector/ring"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// agent starts a server of r on a fresh unix socket and returns a client of
// it. The server stops when the test ends.
func agent(t *testing.T, r *ring.Ring, configure func(*Server)) (*Client, string) {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "run", "agent.sock")
	ln, err := ListenUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(r, nil, quiet)
	if configure != nil {
		configure(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return NewClient(socket), socket
}

func grpcStatus(code uint32) *uint32 { return &code }

// full returns a flow with every field set, to prove the wire format
// round-trips.
func full(i int) *flow.Flow {
	return &flow.Flow{
		Time:      time.Date(2026, 11, 25, 19, 34, 1, 123456789, time.UTC).Add(time.Duration(i) * time.Second),
		Latency:   12300 * time.Microsecond,
		TTFB:      2 * time.Millisecond,
		Node:      "node-a",
		Observer:  flow.SideServer,
		Protocol:  "HTTP/2",
		Method:    "POST",
		Scheme:    "http",
		Authority: "127.0.0.1:50051",
		Path:      "/demo.Echo/Say",
		Status:    200,
		GRPC: &flow.GRPC{
			Service: "demo.Echo", Method: "Say", Status: grpcStatus(5), StatusSource: "trailers",
			Message: "not found", RequestMessages: 1, ResponseMessages: 0,
		},
		RequestBytes:    17,
		ResponseBytes:   0,
		RequestHeaders:  []flow.Header{{Name: "content-type", Value: "application/grpc"}},
		ResponseHeaders: []flow.Header{{Name: "grpc-status", Value: "5"}},
		TraceParent:     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Source:          netip.MustParseAddrPort("127.0.0.1:54321"),
		Destination:     netip.MustParseAddrPort("127.0.0.1:50051"),
		Process:         flow.Process{PID: 4242, Comm: "demo", Exe: "/usr/bin/demo", CgroupID: 7, Cgroup: "/system.slice/demo.service"},
		ConnID:          uint64(i),
		StreamID:        1,
		Outcome:         flow.OutcomeReset,
		ResetCode:       8,
		ResetBy:         flow.SideClient,
		Unknown:         []string{"path"},
	}
}

func collect(t *testing.T, c *Client, last int) []*flow.Flow {
	t.Helper()
	var got []*flow.Flow
	err := c.Flows(context.Background(), last, false, func(f *flow.Flow) error {
		got = append(got, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestListenUnixCreatesPrivateSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing", "dir")
	socket := filepath.Join(dir, "agent.sock")
	ln, err := ListenUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("created directory mode = %v, want 0700", di.Mode().Perm())
	}

	// A second agent on the same socket must be refused while the first lives.
	if _, err := ListenUnix(socket); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second ListenUnix: err = %v, want 'already listening'", err)
	}
	ln.Close()
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind after Close: %v", err)
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	// A socket file whose listener is gone, as a killed agent leaves it.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("stale socket not present: %v", err)
	}

	ln, err := ListenUnix(socket)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a socket" {
		t.Fatal("ListenUnix touched a file that is not a socket")
	}
}

func TestListenTCPLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if ln, err := ListenTCP(addr); err == nil {
			ln.Close()
			t.Errorf("ListenTCP(%q) succeeded, want refusal", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := ListenTCP(addr)
		if err != nil {
			t.Errorf("ListenTCP(%q): %v", addr, err)
			continue
		}
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			t.Errorf("ListenTCP(%q) bound %v", addr, ip)
		}
		ln.Close()
	}
}

func TestFlowsLastRoundTrips(t *testing.T) {
	r := ring.New(16)
	c, _ := agent(t, r, nil)
	for i := range 30 {
		r.Write(full(i))
	}

	got := collect(t, c, 5)
	if len(got) != 5 {
		t.Fatalf("got %d flows, want 5", len(got))
	}
	for i, f := range got {
		want := full(25 + i)
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("flow %d differs after the round trip:\n got %+v\nwant %+v", i, f, want)
		}
	}
	// More than the ring holds: everything it holds, oldest first.
	got = collect(t, c, 1000)
	if len(got) != 16 || got[0].ConnID != 14 || got[15].ConnID != 29 {
		t.Fatalf("last=1000 gave %d flows from %d, want 16 from 14", len(got), got[0].ConnID)
	}
}

func TestFlowsDefaultsAndBadQueries(t *testing.T) {
	r := ring.New(100)
	_, socket := agent(t, r, nil)
	for i := range 50 {
		r.Write(full(i))
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	get := func(path string) (int, string) {
		resp, err := hc.Get("http://sextant" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := get("/v1/flows")
	if code != http.StatusOK || strings.Count(body, "\n") != DefaultLast {
		t.Fatalf("GET /v1/flows: %d with %d lines, want 200 with %d", code, strings.Count(body, "\n"), DefaultLast)
	}
	for _, q := range []string{"last=-1", "last=x", "follow=maybe"} {
		if code, body := get("/v1/flows?" + q); code != http.StatusBadRequest {
			t.Errorf("GET /v1/flows?%s: %d %q, want 400", q, code, body)
		}
	}
	if code, _ := get("/v1/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /v1/nothing: %d, want 404", code)
	}
	resp, err := hc.Post("http://sextant/v1/flows", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/flows: %d, want 405", resp.StatusCode)
	}
}

func TestFollowStreamsHistoryThenNewFlows(t *testing.T) {
	r := ring.New(64)
	c, _ := agent(t, r, nil)
	for i := range 10 {
		r.Write(full(i))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	received := make(chan *flow.Flow, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Flows(ctx, 3, true, func(f *flow.Flow) error {
			received <- f
			return nil
		})
	}()

	next := func() *flow.Flow {
		t.Helper()
		select {
		case f := <-received:
			return f
		case err := <-errc:
			t.Fatalf("stream ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no flow within 10s")
		}
		return nil
	}
	for want := uint64(7); want < 10; want++ {
		if f := next(); f.ConnID != want {
			t.Fatalf("history: ConnID %d, want %d", f.ConnID, want)
		}
	}
	// Flows written after the history arrive while following.
	waitFor(t, func() bool { return r.Stats().Subscribers == 1 })
	for i := 10; i < 15; i++ {
		r.Write(full(i))
	}
	for want := uint64(10); want < 15; want++ {
		if f := next(); f.ConnID != want {
			t.Fatalf("follow: ConnID %d, want %d", f.ConnID, want)
		}
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Flows after the client cancelled: %v, want nil", err)
	}
	waitFor(t, func() bool { return r.Stats().Subscribers == 0 })
}

// A follower that stops reading must not hold up the writer: its flows are
// lost and counted instead.
func TestStuckFollowerLosesFlowsWithoutBlockingWriter(t *testing.T) {
	r := ring.New(1024)
	c, _ := agent(t, r, func(s *Server) { s.FollowBuffer = 16 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck := make(chan struct{})
	first := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Flows(ctx, 0, true, func(*flow.Flow) error {
			select {
			case first <- struct{}{}:
			default:
			}
			<-stuck // never reads again until the test ends
			return nil
		})
	}()
	waitFor(t, func() bool { return r.Stats().Subscribers == 1 })

	const total = 100000 // ≈60 MB of NDJSON if delivered: far more than socket buffers hold
	wrote := make(chan struct{})
	go func() {
		for i := range total {
			r.Write(full(i))
		}
		close(wrote)
	}()
	select {
	case <-wrote:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer blocked on a follower that does not read")
	}
	<-first
	if st := r.Stats(); st.Lost == 0 || st.Written != total {
		t.Fatalf("Stats() = %+v, want Written %d and Lost > 0", st, total)
	}
	close(stuck)
	cancel()
	<-errc
}

func TestStatus(t *testing.T) {
	r := ring.New(8)
	started := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	c, _ := agent(t, r, func(s *Server) {
		s.status = func() Status {
			return Status{
				Node: "node-a", Started: started, Uptime: "1h0m0s",
				FlowsSeen: r.Stats().Written, Ring: r.Stats(),
				ProbeEvents: 99, ProbeDrops: map[string]uint64{"ringbuf_full": 3},
				Collector: map[string]any{"hpack_unknown": 2},
			}
		}
	})
	for i := range 10 {
		r.Write(full(i))
	}
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "node-a" || !st.Started.Equal(started) || st.FlowsSeen != 10 ||
		st.Ring.Capacity != 8 || st.Ring.Overwritten != 2 || st.ProbeEvents != 99 ||
		st.ProbeDrops["ringbuf_full"] != 3 {
		t.Fatalf("Status = %+v", st)
	}
	if m, ok := st.Collector.(map[string]any); !ok || m["hpack_unknown"] != float64(2) {
		t.Fatalf("Status.Collector = %#v", st.Collector)
	}
}

func TestNoAgent(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	err := NewClient(socket).Flows(context.Background(), 1, false, func(*flow.Flow) error { return nil })
	want := "no agent running at " + socket + " (start one with `sextant agent`)"
	var noAgent *NoAgentError
	if !errors.As(err, &noAgent) || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}

	// A stale socket file with no listener is "no agent" as well.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := NewClient(socket).Status(context.Background()); !errors.As(err, &noAgent) {
		t.Fatalf("stale socket: err = %v, want NoAgentError", err)
	}
}

// Shutting the server down ends follow streams, and the client says so.
func TestShutdownEndsFollowAndRemovesSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := ListenUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	r := ring.New(8)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- NewServer(r, nil, quiet).Serve(ctx, ln) }()

	errc := make(chan error, 1)
	go func() {
		errc <- NewClient(socket).Flows(context.Background(), 0, true, func(*flow.Flow) error { return nil })
	}()
	waitFor(t, func() bool { return r.Stats().Subscribers == 1 })
	stop()

	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "ended the stream") {
			t.Fatalf("follow after shutdown: err = %v, want 'ended the stream'", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow stream still open after shutdown")
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
