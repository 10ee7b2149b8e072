package demo

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// answers counts the clients' log lines by client, protocol and status,
// and calls done once every wanted kind has been seen.
type answers struct {
	mu     sync.Mutex
	counts map[string]int
	failed []string
	want   []string
	done   func()
}

func (a *answers) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		fields := map[string]string{}
		for _, f := range strings.Fields(sc.Text()) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if _, failed := fields["error"]; failed {
			a.failed = append(a.failed, sc.Text())
			continue
		}
		a.counts[fields["client"]+" "+fields["proto"]+" "+fields["status"]]++
	}
	for _, w := range a.want {
		if a.counts[w] == 0 {
			return len(p), nil
		}
	}
	a.done()
	return len(p), nil
}

// TestRun runs the demo on real sockets until the clients have seen every
// kind of answer (each route, each gRPC outcome, both HTTP versions).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := &answers{counts: map[string]int{}, done: cancel, want: []string{
		"h2c HTTP/2.0 200", "h2c HTTP/2.0 201", "h2c HTTP/2.0 404", "h2c HTTP/2.0 500",
		"http1 HTTP/1.1 200", "http1 HTTP/1.1 201", "http1 HTTP/1.1 404",
		"grpc grpc OK", "grpc grpc NotFound", "grpc grpc DeadlineExceeded",
	}}
	start := time.Now()
	err := Run(ctx, Options{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Rate: 20, Log: a})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t.Logf("answers after %v: %v", time.Since(start).Round(time.Millisecond), a.counts)
	for _, line := range a.failed {
		t.Errorf("call failed: %s", line)
	}
	for _, w := range a.want {
		if a.counts[w] == 0 {
			t.Errorf("no %q answers", w)
		}
	}
	if len(a.counts) != len(a.want) {
		t.Errorf("%d kinds of answers, want exactly the %d above", len(a.counts), len(a.want))
	}
}

// TestRunPortInUse: a busy port is an error, not a silent demo.
func TestRunPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = Run(context.Background(), Options{HTTPAddr: busy.Addr().String(), GRPCAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "listen http") {
		t.Fatalf("Run on a busy port: %v", err)
	}
}
