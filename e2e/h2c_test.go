package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/testbed"
)

// wantHTTP derives the expected flow of one workload request: the servers
// answer /s/<status>/<size>/… with that status and that many body bytes.
func wantHTTP(protocol, scheme, addr string, port uint16, spec reqSpec) want {
	code, size, ok := parseWorkloadPath(strings.SplitN(spec.Path, "?", 2)[0])
	if !ok {
		panic("workload path without /s/<status>/<size>: " + spec.Path)
	}
	return want{
		Protocol:   protocol,
		Method:     spec.Method,
		Scheme:     scheme,
		Authority:  addr,
		Path:       spec.Path,
		Status:     uint32(code),
		ReqBytes:   uint64(spec.Body),
		RespBytes:  uint64(size),
		Outcome:    flow.OutcomeComplete,
		ServerPort: port,
	}
}

// checkClientResults proves the workload itself went as planned, so that a
// flow mismatch can only be the pipeline's fault.
func checkClientResults(t *testing.T, specs []reqSpec, res clientResult, wantDials int) {
	t.Helper()
	if len(res.Results) != len(specs) {
		t.Fatalf("client ran %d requests, want %d", len(res.Results), len(specs))
	}
	for i, r := range res.Results {
		code, size, _ := parseWorkloadPath(strings.SplitN(specs[i].Path, "?", 2)[0])
		if r.Err != "" || r.Status != code || r.RespBytes != size || r.ServerGotReq != specs[i].Body {
			t.Fatalf("workload request %d %s %s: got %+v, want status %d, %d response bytes, server read %d",
				i, specs[i].Method, specs[i].Path, r, code, size, specs[i].Body)
		}
		if big := len(specs[i].Header["X-Big"]); r.ServerBigLen != big {
			t.Fatalf("workload request %d: server saw X-Big of %d bytes, want %d", i, r.ServerBigLen, big)
		}
	}
	if wantDials > 0 && res.Dials != wantDials {
		t.Fatalf("client opened %d connections, want %d", res.Dials, wantDials)
	}
}

// runHTTPWorkload starts a Go server peer and a Go client peer, runs specs,
// and asserts the exact set of flows on both sides.
func runHTTPWorkload(t *testing.T, pl *pipeline, h2 bool, specs []reqSpec, concurrency int) {
	t.Helper()
	// An HTTP/1.1 request line (origin form) names no scheme: the flow
	// must not claim one.
	role, protocol, scheme := "h1-server", "HTTP/1.1", ""
	if h2 {
		role, protocol, scheme = "h2c-server", "HTTP/2", "http"
	}
	srv := startPeer(t, role, nil)
	addr, port := serverAddr(t, srv)
	cli := startPeer(t, "http-client", clientArgs{Addr: addr, H2C: h2, Reqs: specs, Concurrency: concurrency})
	var res clientResult
	cli.expectJSON(&res, 2*time.Minute)
	cli.waitExit(30 * time.Second)
	wantDials := 0
	if h2 || concurrency == 1 {
		wantDials = 1 // one HTTP/2 connection; or HTTP/1.1 keep-alive
	}
	checkClientResults(t, specs, res, wantDials)

	var wants []want
	for _, s := range specs {
		wants = append(wants, wantHTTP(protocol, scheme, addr, port, s).both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
}

// mixedRequests: statuses 200/201/404/500, GET and POST with bodies of
// known sizes, long paths, query strings, and repeated paths so that the
// encoder refers to its HPACK dynamic table.
func mixedRequests(n int) []reqSpec {
	long := strings.Repeat("segment-abcdefghij/", 16) // ~300 bytes
	var specs []reqSpec
	for i := range n {
		var s reqSpec
		switch i % 6 {
		case 0:
			s = reqSpec{Method: "GET", Path: "/s/200/128/repeated"}
		case 1:
			s = reqSpec{Method: "GET", Path: fmt.Sprintf("/s/404/0/missing-%d", i)}
		case 2:
			s = reqSpec{Method: "POST", Path: fmt.Sprintf("/s/200/%d/upload", 31*i), Body: 97 * i}
		case 3:
			s = reqSpec{Method: "GET", Path: "/s/500/17/" + long}
		case 4:
			s = reqSpec{Method: "POST", Path: fmt.Sprintf("/s/201/5/items?id=%d&kind=e2e", i%3), Body: 1 + i}
		case 5:
			s = reqSpec{Method: "GET", Path: fmt.Sprintf("/s/200/%d/%s/%d", 20000+i, long, i%2)} // multi-frame DATA
		}
		specs = append(specs, s)
	}
	return specs
}

// Test 1: Go net/http h2c client and server.
func TestH2CGoClientServer(t *testing.T) {
	pl := startPipeline(t)
	runHTTPWorkload(t, pl, true, mixedRequests(50), 4)
}

// Test 5: a ~40 KB header forces HEADERS + CONTINUATION frames, and the
// header block is larger than one probe record: user space must reassemble
// it from several records. Requests after it must still decode (the HPACK
// state stays in sync).
func TestH2CLargeHeadersContinuation(t *testing.T) {
	pl := startPipeline(t)
	rng := rand.New(rand.NewPCG(1, 2))
	value := func(n int) string {
		const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	big1, big2 := value(40_000), value(45_000)
	specs := []reqSpec{
		{Method: "GET", Path: "/s/200/10/big-1", Header: map[string]string{"X-Big": big1}},
		{Method: "POST", Path: "/s/200/20/big-2", Body: 100, Header: map[string]string{"X-Big": big2}},
		{Method: "GET", Path: "/s/200/30/after-big"},
		{Method: "GET", Path: "/s/404/0/big-1", Header: map[string]string{"X-Big": big1}},
		{Method: "GET", Path: "/s/200/30/after-big"},
	}
	srv := startPeer(t, "h2c-server", nil)
	addr, port := serverAddr(t, srv)
	cli := startPeer(t, "http-client", clientArgs{Addr: addr, H2C: true, Reqs: specs, Concurrency: 1})
	var res clientResult
	cli.expectJSON(&res, 2*time.Minute)
	cli.waitExit(30 * time.Second)
	checkClientResults(t, specs, res, 1)

	var wants []want
	for _, s := range specs {
		w := wantHTTP("HTTP/2", "http", addr, port, s)
		if v, ok := s.Header["X-Big"]; ok {
			w.ReqHeaders = map[string]string{"x-big": v}
		}
		wants = append(wants, w.both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	// A 40 KB value comes out as a prefix marked truncated (flows keep 1 KiB
	// of a value); nothing else about these flows may be unknown.
	pl.assertFlows(got, wants, noUnknown)
}

// Test 7: a connection that was open (with HPACK state) before the probes
// were loaded. Afterwards exactly the new requests must show up, on both
// sides, and nothing may be wrong: a field may only be unknown when it
// depends on HPACK state from before the load.
func TestH2CConnectionOpenBeforeLoad(t *testing.T) {
	testbed.RequireRoot(t)
	before := []reqSpec{
		{Method: "GET", Path: "/s/200/11/alpha"},
		{Method: "GET", Path: "/s/404/0/beta"},
		{Method: "POST", Path: "/s/200/12/gamma", Body: 50},
		{Method: "GET", Path: "/s/500/3/delta"},
		{Method: "GET", Path: "/s/200/11/alpha"},
		{Method: "POST", Path: "/s/200/12/gamma", Body: 50},
	}
	after := []reqSpec{
		{Method: "GET", Path: "/s/200/11/alpha"},
		{Method: "GET", Path: "/s/200/21/new-one"},
		{Method: "GET", Path: "/s/200/21/new-one"},
		{Method: "POST", Path: "/s/500/13/new-two", Body: 77},
		{Method: "GET", Path: "/s/404/0/beta"},
		{Method: "GET", Path: "/s/200/21/new-one"},
		{Method: "POST", Path: "/s/200/12/gamma", Body: 50},
		{Method: "GET", Path: "/s/200/5/new-three?q=1"},
		{Method: "POST", Path: "/s/500/13/new-two", Body: 77},
		{Method: "GET", Path: "/s/200/11/alpha"},
	}
	srv := startPeer(t, "h2c-server", nil)
	addr, port := serverAddr(t, srv)
	cli := startPeer(t, "http-client", clientArgs{Addr: addr, H2C: true, Reqs: append(slices.Clone(before), after...), PauseAfter: len(before)})
	cli.expect("PAUSED", time.Minute)

	pl := startPipeline(t)
	cli.send("go")
	var res clientResult
	cli.expectJSON(&res, 2*time.Minute)
	cli.waitExit(30 * time.Second)
	checkClientResults(t, append(slices.Clone(before), after...), res, 1)

	oldPaths := map[string]bool{}
	for _, s := range before {
		oldPaths[s.Path] = true
	}
	var wants []want
	for _, s := range after {
		wants = append(wants, wantHTTP("HTTP/2", "http", addr, port, s).both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	// What may be unknown: :authority and the paths first sent before the
	// load (Go indexed them in its dynamic table then), and header lists.
	// Method, scheme and status are static-table entries and every path
	// first sent after the load is a literal (or refers to an entry added
	// after the load): those must be exact.
	allow := func(w want, field string) bool {
		switch field {
		case "method", "scheme", "status", "protocol", "request_bytes", "response_bytes", "outcome":
			return false
		case "path":
			return oldPaths[w.Path]
		}
		return true
	}
	pl.assertFlows(got, wants, allow)
	unknown := map[string]int{}
	for _, f := range got {
		for _, u := range f.Unknown {
			unknown[f.Observer.String()+" "+u]++
		}
	}
	t.Logf("unknown fields after joining midstream: %v", unknown)
}
