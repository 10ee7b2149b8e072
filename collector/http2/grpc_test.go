package http2

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/flow"
)

// grpcPair serves the gRPC interop TestService and returns a client whose
// connection is tapped.
func grpcPair(t *testing.T) (testgrpc.TestServiceClient, *tap) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	go srv.Serve(ln)
	tp := &tap{server: ln.Addr().String()}
	cc, err := grpc.NewClient(tp.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			tp.Conn = c
			return tp, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return testgrpc.NewTestServiceClient(cc), tp
}

func TestGRPC(t *testing.T) {
	client, tp := grpcPair(t)
	ctx := t.Context()
	for range 3 {
		if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 10}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing: ü"}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("want NotFound, got %v", err)
	}
	ss, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 2}, {Size: 3}, {Size: 4}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ss.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		bidi.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 8}}})
		if _, err := bidi.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	bidi.CloseSend()
	if _, err := bidi.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	slow, err := client.StreamingOutputCall(dctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1, IntervalUs: 300_000}},
	})
	if err == nil {
		_, err = slow.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	time.Sleep(50 * time.Millisecond) // let the RST_STREAM reach the wire

	flows, st := decodeAll(tp.records(), false)
	type g struct {
		method   string
		status   uint32
		source   string
		reqMsgs  uint32
		respMsgs uint32
		outcome  flow.Outcome
	}
	wants := []g{
		{"UnaryCall", 0, "trailers", 1, 1, flow.OutcomeComplete},
		{"UnaryCall", 0, "trailers", 1, 1, flow.OutcomeComplete},
		{"UnaryCall", 0, "trailers", 1, 1, flow.OutcomeComplete},
		{"UnaryCall", 5, "trailers-only", 1, 0, flow.OutcomeComplete},
		{"StreamingOutputCall", 0, "trailers", 1, 4, flow.OutcomeComplete},
		{"FullDuplexCall", 0, "trailers", 5, 5, flow.OutcomeComplete},
		{"StreamingOutputCall", 4, "deadline", 1, 0, flow.OutcomeReset},
	}
	if len(flows) != len(wants) {
		for _, f := range flows {
			t.Logf("%s %v %+v", f.Path, f.Outcome, f.GRPC)
		}
		t.Fatalf("got %d flows, want %d", len(flows), len(wants))
	}
	for i, f := range flows {
		w := wants[i]
		gr := f.GRPC
		if gr == nil || gr.Service != "grpc.testing.TestService" || gr.Method != w.method || gr.Status == nil ||
			*gr.Status != w.status || gr.StatusSource != w.source || gr.RequestMessages != w.reqMsgs ||
			gr.ResponseMessages != w.respMsgs || f.Outcome != w.outcome || (f.Status == 200) != (w.outcome == flow.OutcomeComplete) {
			t.Errorf("flow %d: %s status=%d outcome=%v grpc=%+v; want %+v (latency %v reset %d by %v, req headers %v)", i, f.Path, f.Status, f.Outcome, gr, w, f.Latency, f.ResetCode, f.ResetBy, f.RequestHeaders)
		}
	}
	if m := flows[3].GRPC.Message; m != "no such thing: ü" {
		t.Errorf("grpc-message = %q", m)
	}
	if *st != (Stats{}) {
		t.Errorf("stats = %+v", *st)
	}
}
