package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/certs"
)

// Loopback is not authentication: plaintext TCP is refused everywhere,
// 127.0.0.1 included, unless explicitly allowed.
func TestTCPPlaintextNeedsConsent(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0", "0.0.0.0:0"} {
		if ln, err := TCP(addr, nil, false); !errors.Is(err, ErrPlaintext) {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("TCP(%q, plaintext) = %v, want ErrPlaintext", addr, err)
		}
	}
	ln, err := TCP("127.0.0.1:0", nil, true)
	if err != nil {
		t.Fatalf("TCP with allowInsecure: %v", err)
	}
	ln.Close()
}

func TestCheckDial(t *testing.T) {
	for _, tc := range []struct {
		addr          string
		secure, allow bool
		ok            bool
	}{
		{"unix:///run/sextant/observer.sock", false, false, true},
		{"127.0.0.1:4244", false, false, false},
		{"127.0.0.1:4244", true, false, true},
		{"10.0.0.1:4244", false, true, true},
	} {
		if err := CheckDial(tc.addr, tc.secure, tc.allow); (err == nil) != tc.ok {
			t.Errorf("CheckDial(%q, secure=%v, allow=%v) = %v", tc.addr, tc.secure, tc.allow, err)
		}
	}
}

// mtlsServer serves the gRPC health service with sextant's limits on an
// mTLS listener limited to maxConns connections.
func mtlsServer(t *testing.T, maxConns int) (addr string, dir string, limited *Limited) {
	t.Helper()
	dir = t.TempDir()
	if _, err := certs.Generate(dir, certs.GenerateOptions{}); err != nil {
		t.Fatal(err)
	}
	tc, err := certs.ServerConfig(certs.ServerFiles(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := TCP("127.0.0.1:0", tc, false)
	if err != nil {
		t.Fatal(err)
	}
	limited = LimitConns(ln, maxConns)
	srv := NewGRPC()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	g := &GRPC{Server: srv, Listeners: []net.Listener{limited}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ln.Addr().String(), dir, limited
}

func check(ctx context.Context, addr string, creds credentials.TransportCredentials, service string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(200<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return err
}

func TestMutualTLSAndLimits(t *testing.T) {
	addr, dir, limited := mtlsServer(t, 8)
	ctx := context.Background()
	client, err := certs.ClientConfig(certs.ClientFiles(dir), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	good := credentials.NewTLS(client)

	if err := check(ctx, addr, good, ""); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	noCert := client.Clone()
	noCert.Certificates = nil
	if err := check(ctx, addr, credentials.NewTLS(noCert), ""); status.Code(err) != codes.Unavailable {
		t.Errorf("client without a certificate: %v, want Unavailable", err)
	}
	if err := check(ctx, addr, insecure.NewCredentials(), ""); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}

	// A 100 MB request is refused, and the server keeps serving.
	err = check(ctx, addr, good, strings.Repeat("x", 100<<20))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("100 MB request: %v, want ResourceExhausted", err)
	}

	// A flood of connections: those over the limit are closed at once
	// (an error for the client, not a wait), the rest are held open.
	var held []net.Conn
	refusedAt := -1
	for i := range 1000 {
		c, err := tls.Dial("tcp", addr, client)
		if err != nil {
			refusedAt = i
			break
		}
		held = append(held, c)
	}
	if refusedAt < 0 || refusedAt > 8 {
		t.Errorf("connection %d refused first, want the 9th (limit 8)", refusedAt)
	}
	if limited.Refused() == 0 {
		t.Error("no connection counted as refused")
	}
	for _, c := range held {
		c.Close()
	}
	// Slots come back as connections close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := check(ctx, addr, good, ""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after the flood: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUnixSocketKeepsLimits(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Unix(socket, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewGRPC()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	g := &GRPC{Server: srv, Listeners: []net.Listener{LimitConns(ln, 0)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	if err := check(ctx, "unix://"+socket, insecure.NewCredentials(), strings.Repeat("y", 100<<20)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("100 MB request on the socket: %v, want ResourceExhausted", err)
	}
}
