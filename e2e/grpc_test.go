package e2e

import (
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

const grpcService = "grpc.testing.TestService"

// Test 2: grpc-go interop client and server: unary, server streaming,
// client streaming, bidi, an error status and a deadline exceeded call.
func TestGRPCInterop(t *testing.T) {
	pl := startPipeline(t)
	srv := startPeer(t, "grpc-server", nil)
	addr, port := serverAddr(t, srv)
	cli := startPeer(t, "grpc-client", grpcArgs{Addr: addr})
	var calls []grpcCall
	cli.expectJSON(&calls, 2*time.Minute)
	cli.waitExit(30 * time.Second)
	if len(calls) != 16 {
		t.Fatalf("grpc client made %d calls, want 16", len(calls))
	}

	var wants []want
	for _, c := range calls {
		w := want{
			Protocol:   "HTTP/2",
			Method:     "POST",
			Scheme:     "http",
			Authority:  addr,
			Path:       "/" + grpcService + "/" + c.Method,
			Status:     200,
			ReqBytes:   uint64(c.ReqBytes),
			RespBytes:  uint64(c.RespBytes),
			Outcome:    flow.OutcomeComplete,
			ServerPort: port,
			GRPC: &wantGRPC{
				Service:      grpcService,
				Method:       c.Method,
				Status:       u32(c.Code),
				StatusSource: "trailers",
				Message:      c.Message,
				ReqMsgs:      uint32(c.ReqMsgs),
				RespMsgs:     uint32(c.RespMsgs),
			},
		}
		switch {
		case c.Deadline:
			// No response headers ever came: the stream was reset (CANCEL)
			// once the grpc-timeout the client sent had elapsed.
			w.Status = 0
			w.Outcome = flow.OutcomeReset
			w.ResetCode = 0x8 // CANCEL
			w.AnyResetBy = true
			w.GRPC.StatusSource = "deadline"
		case c.Code != 0:
			// grpc-go answers an error before any message with a single
			// HEADERS frame holding :status and grpc-status.
			w.GRPC.StatusSource = "trailers-only"
		}
		wants = append(wants, w.both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
}
