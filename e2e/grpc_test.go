package e2e

import (
	"testing"
	"time"
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
		wants = append(wants, grpcWant(grpcService, c, addr, port).both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
}
