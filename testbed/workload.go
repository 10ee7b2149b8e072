package testbed

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// WorkloadHandler answers any request with status ?status=N (400 when
// absent) and the 5-byte body "hello", after ?sleep=D: one handler that
// makes every golden signal (latency, errors, routes) on demand.
func WorkloadHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	d, _ := time.ParseDuration(r.URL.Query().Get("sleep"))
	time.Sleep(d)
	code, err := strconv.Atoi(r.URL.Query().Get("status"))
	if err != nil {
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Length", "5")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, "hello")
}

// ServeH2C serves WorkloadHandler (or h) over h2c and HTTP/1.1 on a
// loopback port in this process until the test ends, and returns its
// address.
func ServeH2C(tb testing.TB, h http.Handler) *net.TCPAddr {
	tb.Helper()
	if h == nil {
		h = http.HandlerFunc(WorkloadHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr)
}

// H2CClient is an HTTP/2 client without TLS (prior knowledge), closed when
// the test ends.
func H2CClient(tb testing.TB) *http.Client {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	tb.Cleanup(c.CloseIdleConnections)
	return c
}

// ServeGRPCHealth serves the gRPC health service (service "" SERVING, any
// other NOT_FOUND) on a loopback port until the test ends, and returns a
// client of it.
func ServeGRPCHealth(tb testing.TB) (*net.TCPAddr, healthpb.HealthClient) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return ln.Addr().(*net.TCPAddr), healthpb.NewHealthClient(cc)
}
