package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/testbed"
)

// The agent's lifecycle with the real probes: it answers once attached,
// refuses a second agent on its socket, and on cancel stops cleanly and
// removes its socket.
func TestRunLifecycle(t *testing.T) {
	testbed.RequireRoot(t)
	socket := filepath.Join(t.TempDir(), "run", "observer.sock")
	cfg := Config{
		Node:     "test-node",
		Observer: ObserverConfig{Config: serve.Config{Socket: socket}, RingSize: 128},
		// Nobody's traffic: this test is about the lifecycle, and other
		// packages' tests run beside it.
		Cgroup: testbed.NewCgroup(t, "agent-lifecycle-nobody").Path,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)
	var st *observerpb.ServerStatusResponse
	deadline := time.Now().Add(60 * time.Second)
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err = client.ServerStatus(sctx, &observerpb.ServerStatusRequest{})
		scancel()
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("agent stopped before answering: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not answering after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.GetMaxFlows() != 128 || st.GetNumConnectedNodes().GetValue() != 1 {
		t.Fatalf("status = %v, want max flows 128 and one connected node", st)
	}
	nodes, err := client.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetName() != "test-node" {
		t.Fatalf("GetNodes = %v, %v; want test-node", nodes, err)
	}
	fi, err := os.Stat(socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, mode %v; want 0600", socket, err, fi.Mode())
	}

	// A second agent on the same socket fails at once, before loading probes.
	second := cfg
	start := time.Now()
	err = Run(ctx, second)
	if err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second agent: err = %v, want 'already listening'", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("second agent took %v to fail", took)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// Loopback is not authentication: a TCP listener without mTLS is refused
// unless plaintext is explicitly allowed, and before any probe is loaded.
func TestRunRefusesPlaintextTCP(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		err := Run(context.Background(), Config{
			Observer: ObserverConfig{Config: serve.Config{Socket: filepath.Join(t.TempDir(), "agent.sock"), Listen: addr}},
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if !errors.Is(err, serve.ErrPlaintext) {
			t.Errorf("listen %s: err = %v, want a plaintext refusal", addr, err)
		}
	}
}

func TestDropsByName(t *testing.T) {
	drops := make([]uint64, 8)
	drops[0], drops[7] = 3, 1
	drops[probes.DropParseStopped] = 5
	got := dropsByName(drops)
	if _, ok := got["parse_stopped"]; ok {
		t.Errorf("parse stops are decode errors, not drops: %v", got)
	}
	if got["ringbuf_full"] != 3 {
		t.Errorf("ringbuf_full = %d, want 3", got["ringbuf_full"])
	}
	if got["drop_7"] != 1 {
		t.Errorf("an unnamed reason that counted must be reported: %v", got)
	}
	if _, ok := got["drop_6"]; ok {
		t.Errorf("an unnamed reason that counted nothing is noise: %v", got)
	}
}
