package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/serve"
)

func sextant(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"observe", "--bogus"},
		{"observe", "extra-arg"},
		{"observe", "-o", "yaml"},
		{"observe", "--last", "-1"},
		{"observe", "--last", "many"},
		{"observe", "--first", "1", "--follow"},
		{"observe", "--since", "yesterday"},
		{"observe", "--to-port", "http"},
		{"agent", "--ring-size", "0"},
		{"agent", "--log-level", "loud"},
		{"demo", "--rate", "0"},
	} {
		code, _, stderr := sextant(args...)
		if code != exitUsage {
			t.Errorf("sextant %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), code, exitUsage, stderr)
		}
		if !strings.HasPrefix(stderr, "Error: ") || !strings.Contains(stderr, "--help' for usage") {
			t.Errorf("sextant %s: stderr %q, want the error and a pointer to --help", strings.Join(args, " "), stderr)
		}
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"observe", "--help"}, {"agent", "-h"}} {
		code, stdout, _ := sextant(args...)
		if code != exitOK || !strings.Contains(stdout, "Usage:") {
			t.Errorf("sextant %s: exit %d, stdout %q", strings.Join(args, " "), code, stdout)
		}
	}
}

func TestObserveWithoutAgent(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "observer.sock")
	code, _, stderr := sextant("observe", "--server", "unix://"+socket)
	want := "Error: no agent running at unix://" + socket + " (start one with `sextant agent`)\n"
	if code != exitError || stderr != want {
		t.Fatalf("exit %d, stderr %q; want exit %d, %q", code, stderr, exitError, want)
	}
}

// serveObserver serves r as the Observer API on a fresh unix socket.
func serveObserver(t *testing.T, r *ring.Ring[observer.Entry]) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "observer.sock")
	ln, err := serve.Unix(socket, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := observer.New(observer.Options{Ring: r, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return socket
}

// observe against a real Observer API server whose ring holds real
// conversions of flows.
func TestObservePrintsFlows(t *testing.T) {
	r := observer.NewRing(64)
	feed := observer.NewFeed(r, "node-a")
	socket := serveObserver(t, r)
	for i := range 3 {
		f := &flow.Flow{
			Time:        time.Now(),
			Latency:     time.Duration(i+1) * time.Millisecond,
			TTFB:        time.Millisecond,
			Node:        "node-a",
			Observer:    flow.SideClient,
			Protocol:    "HTTP/2",
			Method:      "GET",
			Scheme:      "http",
			Authority:   "localhost:8080",
			Path:        "/item/" + string(rune('a'+i)),
			Status:      200 + uint32(i)*150, // 200, 350, 500
			Source:      netip.MustParseAddrPort("127.0.0.1:40000"),
			Destination: netip.MustParseAddrPort("127.0.0.1:8080"),
			Process:     flow.Process{PID: 42, Comm: "curl"},
		}
		feed.Export(f)
	}

	code, stdout, stderr := sextant("observe", "--server", "unix://"+socket, "--last", "2")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 ||
		!strings.HasSuffix(lines[0], "[node-a]: 127.0.0.1:40000 (curl:42) -> 127.0.0.1:8080 http-request FORWARDED (HTTP/2 GET http://localhost:8080/item/c)") ||
		!strings.HasSuffix(lines[1], "[node-a]: 127.0.0.1:8080 -> 127.0.0.1:40000 (curl:42) http-response FORWARDED (HTTP/2 500 3ms (GET http://localhost:8080/item/c))") {
		t.Fatalf("compact output:\n%s", stdout)
	}

	// A bare path works as --server; the server filters.
	code, stdout, stderr = sextant("observe", "--server", socket, "--http-status", "500", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines = strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 1 {
		t.Fatalf("--http-status 500 gave %d lines:\n%s", len(lines), stdout)
	}
	var e observerpb.GetFlowsResponse
	if err := protojson.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatalf("json output: %v\n%s", err, stdout)
	}
	if h := e.GetFlow().GetL7().GetHttp(); h.GetCode() != 500 || h.GetUrl() != "http://localhost:8080/item/c" {
		t.Fatalf("json output: %v", &e)
	}

	code, stdout, _ = sextant("observe", "--server", socket, "--http-path", "^/item/[ab]$", "-o", "table")
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); code != exitOK || len(lines) != 5 || !strings.HasPrefix(lines[0], "TIMESTAMP") {
		t.Fatalf("table with --http-path: exit %d\n%s", code, stdout)
	}

	// A filter the server rejects is a usage error.
	code, _, stderr = sextant("observe", "--server", socket, "--http-path", "(")
	if code != exitUsage {
		t.Fatalf("bad regexp: exit %d, stderr %q; want %d", code, stderr, exitUsage)
	}
}

func TestObserveRequest(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	type req = observerpb.GetFlowsRequest
	for _, tc := range []struct {
		args []string
		want *req
	}{
		{nil, &req{Number: 20}},
		{[]string{"--last", "5"}, &req{Number: 5}},
		{[]string{"-f"}, &req{Follow: true}},
		{[]string{"-f", "--last", "2"}, &req{Number: 2, Follow: true}},
		{[]string{"--first", "3"}, &req{Number: 3, First: true}},
		{[]string{"--since", "5m"}, &req{Since: timestamppb.New(now.Add(-5 * time.Minute))}},
		{[]string{"--until", "2026-11-25T19:00:00Z", "--last", "1"}, &req{Number: 1, Until: timestamppb.New(now.Add(-time.Hour))}},
		{[]string{"--http-status", "5+", "--http-method", "GET", "--to-port", "80", "--from-label", "sextant.io/comm=curl"},
			&req{Number: 20, Whitelist: []*flowpb.FlowFilter{{HttpStatusCode: []string{"5+"}, HttpMethod: []string{"GET"},
				DestinationPort: []string{"80"}, SourceLabel: []string{"sextant.io/comm=curl"}}}}},
	} {
		o := &observeFlags{}
		cmd := observeCmd(o)
		var req *observerpb.GetFlowsRequest
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			var err error
			req, err = o.request(cmd, now)
			return err
		}
		cmd.SetArgs(tc.args)
		if err := cmd.Execute(); err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if !proto.Equal(req, tc.want) {
			t.Errorf("%v: request %v, want %v", tc.args, req, tc.want)
		}
	}
}
