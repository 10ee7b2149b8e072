package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

// agent is what an agent serves over the link: its ring, its feed, the
// link server on a real gRPC server (over an in-memory listener).
type agent struct {
	ring *ring.Ring[observer.Entry]
	feed *observer.Feed
	srv  *Server
	conn *grpc.ClientConn
	n    int
}

func startAgent(t *testing.T, capacity int, dialOpts ...grpc.DialOption) *agent {
	t.Helper()
	a := &agent{ring: observer.NewRing(capacity)}
	a.feed = observer.NewFeed(a.ring, "node-a")
	a.srv = NewServer(a.ring, "node-a")
	g := grpc.NewServer()
	a.srv.Register(g)
	ln := bufconn.Listen(1 << 20)
	go g.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	a.conn = conn
	t.Cleanup(func() {
		conn.Close()
		a.srv.Shutdown()
		g.Stop()
	})
	return a
}

// write exports n answered flows (two events each) at consecutive seconds.
func (a *agent) write(n int) {
	for range n {
		a.feed.Export(&flow.Flow{Time: t0.Add(time.Duration(a.n) * time.Second), Latency: time.Millisecond, Status: 200,
			Node: "node-a", Path: fmt.Sprintf("/item/%d", a.n)})
		a.n++
	}
}

// receive reads batches until want events (flows count their events, lost
// notices their count) arrived; it returns the paths of the flows, the
// lost events and the last cursor.
func receive(t *testing.T, s *Stream, want uint64) (paths []string, lost uint64, next ring.Cursor) {
	t.Helper()
	var got uint64
	for got < want {
		entries, c, err := s.Recv(nil)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", got, want, err)
		}
		next = c
		for _, e := range entries {
			if e.Flow == nil {
				if e.Lost.Source != flowpb.LostEventSource_HUBBLE_RING_BUFFER || e.Lost.Node != "node-a" {
					t.Fatalf("lost notice %+v, want HUBBLE_RING_BUFFER of node-a", e.Lost)
				}
				lost += e.Lost.Count
				got += e.Lost.Count
				continue
			}
			paths = append(paths, e.Flow.Path)
			got += e.Events()
		}
	}
	return paths, lost, next
}

func items(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("/item/%d", i))
	}
	return out
}

func follow(t *testing.T, ctx context.Context, a *agent, req FollowRequest) *Stream {
	t.Helper()
	s, err := Follow(ctx, a.conn, req)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A follower that comes back with its cursor gets exactly what it had not
// received: nothing twice, nothing skipped; what the ring overwrote while
// it was away is a lost notice counting the events.
func TestResumeAtCursor(t *testing.T) {
	a := startAgent(t, 64)
	a.write(40)
	ctx, cancel := context.WithCancel(context.Background())
	paths, lost, cursor := receive(t, follow(t, ctx, a, FollowRequest{}), 80)
	cancel()
	if fmt.Sprint(paths) != fmt.Sprint(items(0, 39)) || lost != 0 {
		t.Fatalf("first stream: %v, lost %d", paths, lost)
	}

	a.write(10)
	ctx, cancel = context.WithCancel(context.Background())
	paths, lost, cursor = receive(t, follow(t, ctx, a, FollowRequest{Cursor: cursor, Since: t0}), 20)
	cancel()
	if fmt.Sprint(paths) != fmt.Sprint(items(40, 49)) || lost != 0 {
		t.Fatalf("resumed stream: %v, lost %d; want flows 40..49 only", paths, lost)
	}

	// Away while 100 flows pass through a ring of 64: the 36 not held
	// (72 events) are reported lost, then the 64 held follow.
	a.write(100)
	ctx, cancel = context.WithCancel(context.Background())
	paths, lost, _ = receive(t, follow(t, ctx, a, FollowRequest{Cursor: cursor}), 200)
	cancel()
	if fmt.Sprint(paths) != fmt.Sprint(items(86, 149)) || lost != 72 {
		t.Fatalf("lapped cursor: %d flows from %v, lost %d; want 86..149 and 72 lost", len(paths), paths[:1], lost)
	}

	// A cursor of another ring (the agent restarted) does not apply: the
	// stream starts at Since.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	other := ring.Cursor{Instance: observer.NewRing(1).Instance(), Position: 3}
	paths, _, _ = receive(t, follow(t, ctx, a, FollowRequest{Cursor: other, Since: t0.Add(140 * time.Second)}), 20)
	if fmt.Sprint(paths) != fmt.Sprint(items(140, 149)) {
		t.Fatalf("foreign cursor with since: %v, want flows 140..149", paths)
	}
}

// A follower that does not read holds the server back (gRPC flow
// control); the server never holds the ring back: once lapped it skips
// what was overwritten and says so. Received plus reported lost is
// exactly what was written, and the agent counts the same loss.
func TestBackpressureCounted(t *testing.T) {
	// A fixed 64 KiB window: no growth by bandwidth estimation, so that
	// the transport's buffers stay small against what is written.
	a := startAgent(t, 1024, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := follow(t, ctx, a, FollowRequest{})
	waitFollowers(t, a.ring, 1)
	const flows = 200000
	a.write(flows)
	paths, lost, _ := receive(t, s, 2*flows)
	if lost == 0 || uint64(2*len(paths))+lost != 2*flows {
		t.Fatalf("received %d flows and %d lost events, want %d events with some lost", len(paths), lost, 2*flows)
	}
	if st := a.ring.Stats(); st.Lost != lost {
		t.Fatalf("the agent counted %d lost, the follower was told %d", st.Lost, lost)
	}
	if last := paths[len(paths)-1]; last != fmt.Sprintf("/item/%d", flows-1) {
		t.Fatalf("last flow %s, want the newest", last)
	}
}

func waitFollowers(t *testing.T, r *ring.Ring[observer.Entry], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Subscribers < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d followers, want %d", r.Stats().Subscribers, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Shutdown ends streams after what was written before them.
func TestShutdownDrains(t *testing.T) {
	a := startAgent(t, 64)
	s := follow(t, context.Background(), a, FollowRequest{})
	waitFollowers(t, a.ring, 1)
	a.write(3)
	a.srv.Shutdown()
	paths, _, _ := receive(t, s, 6)
	if fmt.Sprint(paths) != fmt.Sprint(items(0, 2)) {
		t.Fatalf("drained %v", paths)
	}
	if _, _, err := s.Recv(nil); !errors.Is(err, ErrEnded) {
		t.Fatalf("after the drain: %v, want ErrEnded", err)
	}
}

// A malformed request is refused with InvalidArgument.
func TestMalformedRequestRefused(t *testing.T) {
	a := startAgent(t, 8)
	cs, err := a.conn.NewStream(context.Background(), &serviceDesc.Streams[0], Method)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&wrapperspb.BytesValue{Value: []byte{0x09, 0x01}}); err != nil { // field 1 fixed64, truncated
		t.Fatal(err)
	}
	cs.CloseSend()
	var m wrapperspb.BytesValue
	if err := cs.RecvMsg(&m); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed request: %v, want InvalidArgument", err)
	}
}
