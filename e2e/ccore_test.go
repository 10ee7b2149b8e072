package e2e

// gRPC C-core (Debian's python3-grpcio, the C core under Python) as client
// and as server, with itself and against grpc-go both ways: every call
// exactly once from each end.

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/testbed"
)

// debianPython is Debian's interpreter: python3-grpcio is installed for
// it, not for another python3 that may come first on PATH.
const debianPython = "/usr/bin/python3"

// requireCCore returns the C-core peer script, skipping (failing in CI)
// when python3-grpcio is missing.
func requireCCore(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command(debianPython, "-c", "import grpc").CombinedOutput(); err != nil {
		testbed.Missing(t, "%s cannot import grpc (apt-get install -y python3-grpcio): %v %s", debianPython, err, out)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "ccore_peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	return script
}

// ccoreRounds: each round is 15 calls (10 unary, 3 error statuses, one
// server stream of 5 messages, one deadline exceeded); one unary call ends
// the workload.
const ccoreRounds = 4

// echoPeers starts the Echo server of one implementation and runs the
// client workload of the other against it, both in s.
type echoPeers struct {
	goServer, goClient bool
}

func (e echoPeers) run(t *testing.T, s *scope, pl *pipeline) {
	t.Helper()
	var script string
	if !e.goServer || !e.goClient {
		script = requireCCore(t)
	}
	var srv *proc
	if e.goServer {
		srv = s.peer("rawgrpc-server", nil)
	} else {
		srv = s.command("ccore server", debianPython, script, "server")
	}
	addr, port := serverAddr(t, srv)
	var cli *proc
	if e.goClient {
		cli = s.peer("rawgrpc-client", rawGRPCArgs{Addr: addr, Rounds: ccoreRounds})
	} else {
		cli = s.command("ccore client", debianPython, script, "client", addr, strconv.Itoa(ccoreRounds))
	}
	var calls []grpcCall
	cli.expectJSON(&calls, 2*time.Minute)
	cli.waitExit(30 * time.Second)
	if len(calls) != 15*ccoreRounds+1 {
		t.Fatalf("client made %d calls, want %d", len(calls), 15*ccoreRounds+1)
	}
	var wants []want
	for _, c := range calls {
		wants = append(wants, echoWant(c, addr, port, !e.goServer).both(cli.pid(), srv.pid())...)
	}
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)
	if t.Failed() {
		pl.logConns(cli.pid(), srv.pid())
	}
}

// grpcWant is the flow of one gRPC call as the client saw it (the same
// from both ends): complete with grpc-status in trailers, trailers-only for
// an error before any message, reset (CANCEL) for a deadline exceeded.
func grpcWant(service string, c grpcCall, addr string, port uint16) want {
	w := want{
		Protocol:   "HTTP/2",
		Method:     "POST",
		Scheme:     "http",
		Authority:  addr,
		Path:       "/" + service + "/" + c.Method,
		Status:     200,
		ReqBytes:   uint64(c.ReqBytes),
		RespBytes:  uint64(c.RespBytes),
		Outcome:    flow.OutcomeComplete,
		ServerPort: port,
		GRPC: &wantGRPC{
			Service:      service,
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
		// once the grpc-timeout the client sent had elapsed; both ends'
		// timers race to reset it.
		w.Status = 0
		w.Outcome = flow.OutcomeReset
		w.ResetCode = 0x8 // CANCEL
		w.AnyResetBy = true
		w.GRPC.StatusSource = "deadline"
	case c.Code != 0:
		// C-core and grpc-go answer an error before any message with a
		// single HEADERS frame holding :status and grpc-status.
		w.GRPC.StatusSource = "trailers-only"
	}
	return w
}

// echoWant is grpcWant for the Echo service, but for one difference of
// implementations: a C-core server answers a call whose deadline passed by
// itself (trailers-only DEADLINE_EXCEEDED), racing the client's RST_STREAM,
// and either may reach the wire first.
func echoWant(c grpcCall, addr string, port uint16, ccoreServer bool) want {
	w := grpcWant(echoService, c, addr, port)
	if c.Deadline && ccoreServer {
		answered := grpcWant(echoService, grpcCall{Method: c.Method, ReqBytes: c.ReqBytes, ReqMsgs: 1, Code: c.Code,
			Message: "Deadline Exceeded"}, addr, port)
		w.Or = &answered
	}
	return w
}

func TestCCoreClientServer(t *testing.T) {
	s, pl := newScope(t)
	echoPeers{}.run(t, s, pl)
}

func TestCCoreClientGoServer(t *testing.T) {
	s, pl := newScope(t)
	echoPeers{goServer: true}.run(t, s, pl)
}

func TestGoClientCCoreServer(t *testing.T) {
	s, pl := newScope(t)
	echoPeers{goClient: true}.run(t, s, pl)
}

// TestGoClientGoServerEcho is the control: grpc-go at both ends of the same
// workload, which the probes follow today.
func TestGoClientGoServerEcho(t *testing.T) {
	s, pl := newScope(t)
	echoPeers{goServer: true, goClient: true}.run(t, s, pl)
}
