package probes

import (
	"context"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// gRPC length prefixes are counted per DATA frame, across frames.
func TestGRPCMessagesCounted(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		hs := health.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		go srv.Serve(ln)
		defer srv.Stop()

		cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		hc := healthpb.NewHealthClient(cc)
		ctx := context.Background()
		const unary = 5
		for i := 0; i < unary; i++ {
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
		for _, st := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING} {
			if _, err := w.Recv(); err != nil {
				t.Fatal(err)
			}
			hs.SetServingStatus("svc", st)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		// Recv returns once the stream is finished, and finishing it queues
		// the RST_STREAM (before the HEADERS of the next request: once that
		// request completes the reset is on the wire). Without waiting, the
		// reset may be queued after the next request, or never before Close.
		if _, err := w.Recv(); err == nil {
			t.Fatal("Watch: Recv after cancel returned a message")
		}
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		cc.Close()
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, ln.Addr().String())
		// grpc-go servers write SETTINGS before they read the preface: still a
		// connection seen from its first byte.
		for _, id := range []uint64{cl, sv} {
			if p := g.conns[id].Proto; p != ProtoH2 {
				t.Errorf("conn %d (%s): proto %s, want h2", id, g.conns[id].Comm, p)
			}
		}
		for _, k := range []connKey{{sv, Ingress}, {sv, Egress}} {
			d := g.dirs[k]
			if d == nil || len(d.frames) == 0 {
				t.Fatalf("server %v: no frames", k)
			}
			for _, e := range append(d.errs, d.hpackErrs...) {
				t.Errorf("server %v: %s", k, e)
			}
		}
		var serverPaths int
		for _, f := range g.dirs[connKey{sv, Ingress}].frames {
			if f.typ == http2.FrameHeaders && strings.HasPrefix(field(f.fields, ":path"), "/grpc.health.v1.Health/") {
				serverPaths++
			}
		}
		if serverPaths != unary+2 {
			t.Errorf("server decoded %d request paths, want %d", serverPaths, unary+2)
		}
		out, in := g.dirs[connKey{cl, Egress}], g.dirs[connKey{cl, Ingress}]
		if out == nil || in == nil {
			t.Fatalf("client directions missing")
		}
		msgs := func(d *h2Dir) map[uint32]uint32 {
			m := map[uint32]uint32{}
			for _, f := range d.frames {
				if f.typ == http2.FrameData {
					m[f.stream] += f.grpcMsgs
				}
			}
			return m
		}
		sent, got := msgs(out), msgs(in)
		var paths []string
		var watch uint32
		for _, f := range out.frames {
			if f.typ == http2.FrameHeaders {
				p := field(f.fields, ":path")
				paths = append(paths, p)
				if p == "/grpc.health.v1.Health/Watch" {
					watch = f.stream
				}
				if sent[f.stream] != 1 {
					t.Errorf("stream %d %s: %d request messages, want 1", f.stream, p, sent[f.stream])
				}
			}
		}
		if len(paths) != unary+2 || watch == 0 {
			t.Fatalf("request paths %q", paths)
		}
		for id, n := range got {
			want := uint32(1)
			if id == watch {
				want = 3
			}
			if n != want {
				t.Errorf("stream %d: %d response messages, want %d", id, n, want)
			}
		}
		var rst bool
		for _, f := range out.frames {
			if f.typ == http2.FrameRSTStream && f.stream == watch {
				rst = f.value == uint32(http2.ErrCodeCancel)
			}
		}
		if !rst {
			t.Errorf("client did not reset the Watch stream %d with CANCEL", watch)
			for _, f := range g.dirs[connKey{sv, Ingress}].frames {
				t.Logf("server ingress %v stream %d len %d value %d flags %v", f.typ, f.stream, f.length, f.value, f.flags)
			}
			for _, f := range out.frames {
				t.Logf("client egress %v stream %d len %d value %d flags %v", f.typ, f.stream, f.length, f.value, f.flags)
			}
		}
		for _, d := range []*h2Dir{out, in} {
			for _, e := range append(d.errs, d.hpackErrs...) {
				t.Error(e)
			}
		}
	})
}
