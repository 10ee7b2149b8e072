package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/agent/api"
	"github.com/sextant/sextant/collector/flow"
	"github.com/sextant/sextant/collector/ring"
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
	socket := filepath.Join(t.TempDir(), "agent.sock")
	code, _, stderr := sextant("observe", "--socket", socket)
	want := "Error: no agent running at " + socket + " (start one with `sextant agent`)\n"
	if code != exitError || stderr != want {
		t.Fatalf("exit %d, stderr %q; want exit %d, %q", code, stderr, exitError, want)
	}
}

// observe against a real API server whose ring is filled directly.
func TestObservePrintsFlows(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := api.ListenUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	r := ring.New(16)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- api.NewServer(r, nil, slog.New(slog.NewTextHandler(io.Discard, nil))).Serve(ctx, ln)
	}()
	defer func() {
		cancel()
		<-served
	}()

	for i := range 3 {
		r.Write(&flow.Flow{
			Time:        time.Now(),
			Latency:     time.Duration(i+1) * time.Millisecond,
			Node:        "node-a",
			Observer:    flow.SideClient,
			Protocol:    "HTTP/2",
			Method:      "GET",
			Scheme:      "http",
			Authority:   "localhost:8080",
			Path:        "/item/" + string(rune('a'+i)),
			Status:      200,
			Source:      netip.MustParseAddrPort("127.0.0.1:40000"),
			Destination: netip.MustParseAddrPort("127.0.0.1:8080"),
			Process:     flow.Process{PID: 42, Comm: "curl"},
		})
	}

	code, stdout, stderr := sextant("observe", "--socket", socket, "--last", "2")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 ||
		!strings.Contains(lines[0], "node-a  curl(42) 127.0.0.1:40000 -> 127.0.0.1:8080  HTTP/2  GET http://localhost:8080/item/b  200  2ms") ||
		!strings.HasSuffix(lines[1], "GET http://localhost:8080/item/c  200  3ms") {
		t.Fatalf("compact output:\n%s", stdout)
	}

	code, stdout, stderr = sextant("observe", "--socket", socket, "--last", "5", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var paths []string
	for dec.More() {
		var f flow.Flow
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("json output: %v\n%s", err, stdout)
		}
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, ",") != "/item/a,/item/b,/item/c" {
		t.Fatalf("json output paths %v", paths)
	}
}
