package e2e

// The peers: workload processes the tests start and observe. Each one is
// this test binary re-executed with SEXTANT_E2E_PEER=<role> and its
// arguments as JSON in SEXTANT_E2E_ARGS. A peer talks to the test over a
// line protocol: it prints "ADDR host:port", "PAUSED", "CONNDONE n",
// "RESULT {json}" on stdout, reads lines on stdin when told to wait, and
// servers exit when stdin closes (so a dying test takes its peers along).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sextant/sextant/testbed"
)

const peerArgsEnv = "SEXTANT_E2E_ARGS"

// ---------------------------------------------------------------------------
// Test side: starting and talking to processes.

// proc is a child process (a peer or an external tool) whose stdout lines
// the test reads and whose stderr is kept for the failure log.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr testbed.Output
	exited chan struct{}
	err    error // valid after exited is closed
}

// startPeer re-executes the test binary in the given role.
func startPeer(t *testing.T, role string, args any) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find test binary: %v", err)
	}
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatalf("encode %s args: %v", role, err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+role, peerArgsEnv+"="+string(raw))
	return startProc(t, role, cmd)
}

// startProc starts cmd and arranges for it to be gone when the test ends.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, lines: make(chan string, 1024), exited: make(chan struct{})}
	// The child dies with the test process even when the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatalf("%s stdin: %v", name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%s stdout: %v", name, err)
	}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go func() {
		<-scanned // Wait must not run before the pipe is drained
		p.err = cmd.Wait()
		close(p.lines)
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			if s := p.stderr.String(); s != "" {
				t.Logf("%s (pid %d) stderr:\n%s", name, p.pid(), s)
			}
		}
	})
	return p
}

func (p *proc) pid() uint32 { return uint32(p.cmd.Process.Pid) }

// expect waits for a stdout line starting with prefix and returns the rest.
func (p *proc) expect(prefix string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.exited
				p.t.Fatalf("%s exited (%v) before printing %q; stderr:\n%s", p.name, p.err, prefix, p.stderr.String())
			}
			if rest, found := strings.CutPrefix(line, prefix); found {
				return strings.TrimSpace(rest)
			}
		case <-deadline:
			p.t.Fatalf("%s: no %q line within %v; stderr:\n%s", p.name, prefix, timeout, p.stderr.String())
		}
	}
}

// expectJSON waits for "RESULT {json}" and decodes it into v.
func (p *proc) expectJSON(v any, timeout time.Duration) {
	p.t.Helper()
	raw := p.expect("RESULT ", timeout)
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		p.t.Fatalf("%s: decode result %q: %v", p.name, raw, err)
	}
}

func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: write stdin: %v", p.name, err)
	}
}

// waitExit waits for the process to end by itself and requires success.
func (p *proc) waitExit(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v; stderr:\n%s", p.name, timeout, p.stderr.String())
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v; stderr:\n%s", p.name, p.err, p.stderr.String())
	}
}

// stop closes stdin (servers then shut down) and waits for the exit.
func (p *proc) stop(timeout time.Duration) {
	p.t.Helper()
	p.stdin.Close()
	p.waitExit(timeout)
}

// serverAddr parses the "ADDR host:port" a server peer prints.
func serverAddr(t *testing.T, p *proc) (addr string, port uint16) {
	t.Helper()
	addr = p.expect("ADDR ", 30*time.Second)
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s printed bad address %q: %v", p.name, addr, err)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		t.Fatalf("%s printed bad port %q: %v", p.name, addr, err)
	}
	return addr, uint16(n)
}

// ---------------------------------------------------------------------------
// Peer side: the roles.

var sayMu sync.Mutex

// say prints one protocol line on stdout.
func say(format string, args ...any) {
	sayMu.Lock()
	defer sayMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func sayJSON(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	say("RESULT %s", raw)
	return nil
}

// peerRoles are roles other files add (in their init), beside the ones above.
var peerRoles = map[string]func(args []byte) error{}

func runPeer(role string) int {
	args := []byte(os.Getenv(peerArgsEnv))
	var err error
	switch role {
	case "h2c-server":
		err = serveHTTP(true)
	case "h1-server":
		err = serveHTTP(false)
	case "http-client":
		err = runHTTPClient(args)
	case "grpc-server":
		err = serveGRPC()
	case "grpc-client":
		err = runGRPCClient(args)
	case "raw-sink":
		err = serveRawSink()
	case "raw-send":
		err = runRawSend(args)
	default:
		if run, ok := peerRoles[role]; ok {
			err = run(args)
		} else {
			err = fmt.Errorf("unknown peer role %q", role)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}

// untilStdinCloses blocks until the test closes our stdin (or dies).
func untilStdinCloses() { _, _ = io.Copy(io.Discard, os.Stdin) }

// listenLocal binds an ephemeral port on 127.0.0.1 and announces it.
func listenLocal() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	say("ADDR %s", l.Addr())
	return l, nil
}

// The HTTP servers answer /s/<status>/<size>[/anything]: they read the whole
// request body, then reply with <status> and exactly <size> body bytes, so
// the test can predict every field of every flow from the request alone.
// Headers echo what the server saw, so the client can prove the workload
// really happened as planned.
func workloadHandler(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	code, size, ok := parseWorkloadPath(r.URL.Path)
	if !ok {
		code, size = http.StatusBadRequest, 0
	}
	w.Header().Set("X-Request-Bytes", strconv.FormatInt(n, 10))
	w.Header().Set("X-Big-Len", strconv.Itoa(len(r.Header.Get("X-Big"))))
	w.Header().Set("Content-Type", "application/octet-stream")
	// "/nolen/" in the path: no Content-Length, so that the client must
	// wait for END_STREAM (curl closes the connection as soon as it has
	// Content-Length bytes, and may then never read the END_STREAM frame;
	// the stream then really did not end on the wire).
	if !strings.Contains(r.URL.Path, "/nolen/") {
		w.Header().Set("Content-Length", strconv.Itoa(size))
	}
	w.WriteHeader(code)
	_, _ = w.Write(bytes.Repeat([]byte{'r'}, size))
}

func parseWorkloadPath(path string) (code, size int, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 4)
	if len(parts) < 3 || parts[0] != "s" {
		return 0, 0, false
	}
	code, err1 := strconv.Atoi(parts[1])
	size, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || code < 200 || code > 599 || size < 0 {
		return 0, 0, false
	}
	return code, size, true
}

func serveHTTP(h2 bool) error {
	l, err := listenLocal()
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(workloadHandler),
		// The CONTINUATION test sends a ~40 KB header; the HTTP/2 server
		// advertises this as SETTINGS_MAX_HEADER_LIST_SIZE.
		MaxHeaderBytes: 1 << 20,
	}
	if h2 {
		srv.Handler = h2c.NewHandler(srv.Handler, &http2.Server{})
	} else {
		var p http.Protocols
		p.SetHTTP1(true)
		srv.Protocols = &p
	}
	go func() { _ = srv.Serve(l) }()
	untilStdinCloses()
	return srv.Close()
}

type reqSpec struct {
	Method string
	Path   string
	Body   int               // request body bytes
	Header map[string]string // extra request headers
}

type clientArgs struct {
	Addr        string
	H2C         bool
	Reqs        []reqSpec
	Concurrency int // parallel requests (on one HTTP/2 connection)
	// PauseAfter > 0: after that many requests (done sequentially) print
	// PAUSED and wait for a stdin line before the rest, on the same
	// connection.
	PauseAfter int
}

type reqResult struct {
	Status       int
	RespBytes    int
	ServerGotReq int // X-Request-Bytes: body bytes the server read
	ServerBigLen int // X-Big-Len
	Err          string
}

type clientResult struct {
	Results []reqResult // in the order of clientArgs.Reqs
	Dials   int         // TCP connections opened
}

func runHTTPClient(raw []byte) error {
	var args clientArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("decode args: %w", err)
	}
	var dials atomic.Int32
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	var rt http.RoundTripper
	var closeIdle func()
	if args.H2C {
		tr := &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return dial(ctx, network, addr)
			},
		}
		rt, closeIdle = tr, tr.CloseIdleConnections
	} else {
		tr := &http.Transport{
			DialContext:         dial,
			DisableCompression:  true,
			MaxIdleConnsPerHost: max(args.Concurrency, 1),
		}
		rt, closeIdle = tr, tr.CloseIdleConnections
	}
	client := &http.Client{Transport: rt, Timeout: 60 * time.Second}

	do := func(spec reqSpec) reqResult {
		var body io.Reader
		if spec.Body > 0 {
			body = bytes.NewReader(bytes.Repeat([]byte{'q'}, spec.Body))
		}
		req, err := http.NewRequest(spec.Method, "http://"+args.Addr+spec.Path, body)
		if err != nil {
			return reqResult{Err: err.Error()}
		}
		for k, v := range spec.Header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return reqResult{Err: err.Error()}
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		res := reqResult{Status: resp.StatusCode, RespBytes: int(n)}
		res.ServerGotReq, _ = strconv.Atoi(resp.Header.Get("X-Request-Bytes"))
		res.ServerBigLen, _ = strconv.Atoi(resp.Header.Get("X-Big-Len"))
		if err != nil {
			res.Err = err.Error()
		}
		return res
	}

	results := make([]reqResult, len(args.Reqs))
	if args.PauseAfter > 0 {
		in := bufio.NewReader(os.Stdin)
		for i, spec := range args.Reqs {
			if i == args.PauseAfter {
				say("PAUSED")
				if _, err := in.ReadString('\n'); err != nil {
					return fmt.Errorf("wait for resume: %w", err)
				}
			}
			results[i] = do(spec)
		}
	} else {
		work := make(chan int)
		var wg sync.WaitGroup
		for range max(args.Concurrency, 1) {
			wg.Go(func() {
				for i := range work {
					results[i] = do(args.Reqs[i])
				}
			})
		}
		for i := range args.Reqs {
			work <- i
		}
		close(work)
		wg.Wait()
	}
	closeIdle()
	return sayJSON(clientResult{Results: results, Dials: int(dials.Load())})
}

func serveGRPC() error {
	l, err := listenLocal()
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	go func() { _ = srv.Serve(l) }()
	untilStdinCloses()
	srv.Stop()
	return nil
}

type grpcArgs struct{ Addr string }

// grpcCall is what the client did and saw in one call; the test derives
// both flows (client and server side) from it.
type grpcCall struct {
	Method    string // TestService method name
	ReqBytes  int    // DATA bytes: 5-byte prefix + message, summed
	RespBytes int
	ReqMsgs   int
	RespMsgs  int
	Code      uint32
	Message   string
	Deadline  bool // ended by the client's deadline
}

// framed is the number of DATA bytes gRPC sends for one uncompressed message.
func framed(m proto.Message) int { return 5 + proto.Size(m) }

func runGRPCClient(raw []byte) error {
	var args grpcArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("decode args: %w", err)
	}
	cc, err := grpc.NewClient("passthrough:///"+args.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", args.Addr, err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	// No deadline on the ordinary calls: a grpc-timeout would let the
	// collector legitimately infer DEADLINE_EXCEEDED if the box stalls.
	ctx := context.Background()
	var calls []grpcCall

	for i := range 10 {
		req := &testgrpc.SimpleRequest{
			ResponseSize: int32(10 * i),
			Payload:      &testgrpc.Payload{Body: bytes.Repeat([]byte{'u'}, 7*i)},
		}
		resp, err := tc.UnaryCall(ctx, req)
		if err != nil {
			return fmt.Errorf("unary %d: %w", i, err)
		}
		calls = append(calls, grpcCall{Method: "UnaryCall", ReqBytes: framed(req), RespBytes: framed(resp), ReqMsgs: 1, RespMsgs: 1})
	}

	{ // server streaming: 5 responses of known sizes
		req := &testgrpc.StreamingOutputCallRequest{}
		for i := range 5 {
			req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{Size: int32(100 * (i + 1))})
		}
		st, err := tc.StreamingOutputCall(ctx, req)
		if err != nil {
			return fmt.Errorf("server streaming: %w", err)
		}
		c := grpcCall{Method: "StreamingOutputCall", ReqBytes: framed(req), ReqMsgs: 1}
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("server streaming recv: %w", err)
			}
			c.RespMsgs++
			c.RespBytes += framed(resp)
		}
		if c.RespMsgs != 5 {
			return fmt.Errorf("server streaming: got %d responses, want 5", c.RespMsgs)
		}
		calls = append(calls, c)
	}

	{ // client streaming: 3 requests, 1 response
		st, err := tc.StreamingInputCall(ctx)
		if err != nil {
			return fmt.Errorf("client streaming: %w", err)
		}
		c := grpcCall{Method: "StreamingInputCall"}
		for i := range 3 {
			req := &testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: bytes.Repeat([]byte{'c'}, 33*(i+1))}}
			if err := st.Send(req); err != nil {
				return fmt.Errorf("client streaming send: %w", err)
			}
			c.ReqMsgs++
			c.ReqBytes += framed(req)
		}
		resp, err := st.CloseAndRecv()
		if err != nil {
			return fmt.Errorf("client streaming close: %w", err)
		}
		c.RespMsgs, c.RespBytes = 1, framed(resp)
		calls = append(calls, c)
	}

	{ // bidi ping-pong: 4 each way
		st, err := tc.FullDuplexCall(ctx)
		if err != nil {
			return fmt.Errorf("bidi: %w", err)
		}
		c := grpcCall{Method: "FullDuplexCall"}
		for i := range 4 {
			req := &testgrpc.StreamingOutputCallRequest{
				ResponseParameters: []*testgrpc.ResponseParameters{{Size: int32(50 * (i + 1))}},
				Payload:            &testgrpc.Payload{Body: bytes.Repeat([]byte{'b'}, 20*(i+1))},
			}
			if err := st.Send(req); err != nil {
				return fmt.Errorf("bidi send: %w", err)
			}
			c.ReqMsgs++
			c.ReqBytes += framed(req)
			resp, err := st.Recv()
			if err != nil {
				return fmt.Errorf("bidi recv: %w", err)
			}
			c.RespMsgs++
			c.RespBytes += framed(resp)
		}
		if err := st.CloseSend(); err != nil {
			return fmt.Errorf("bidi close: %w", err)
		}
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			return fmt.Errorf("bidi: want EOF after close, got %v", err)
		}
		calls = append(calls, c)
	}

	{ // an error status the server echoes: NOT_FOUND with a message
		const msg = "e2e: no such thing"
		req := &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: msg}}
		_, err := tc.UnaryCall(ctx, req)
		if status.Code(err) != codes.NotFound || status.Convert(err).Message() != msg {
			return fmt.Errorf("echo status: got %v, want NotFound %q", err, msg)
		}
		calls = append(calls, grpcCall{Method: "UnaryCall", ReqBytes: framed(req), ReqMsgs: 1, Code: uint32(codes.NotFound), Message: msg})
	}

	{ // deadline exceeded: the server sleeps 3 s before answering, we wait 300 ms
		req := &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10, IntervalUs: 3_000_000}},
		}
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := tc.StreamingOutputCall(dctx, req)
		if err == nil {
			_, err = st.Recv()
		}
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			return fmt.Errorf("deadline call: got %v, want DeadlineExceeded", err)
		}
		calls = append(calls, grpcCall{Method: "StreamingOutputCall", ReqBytes: framed(req), ReqMsgs: 1, Code: uint32(codes.DeadlineExceeded), Deadline: true})
	}

	{ // one more call on the connection: grpc-go writes frames in order, so
		// once this one is answered the RST_STREAM of the deadline call is
		// on the wire too (and not lost in the close that follows).
		req := &testgrpc.Empty{}
		resp, err := tc.EmptyCall(ctx, req)
		if err != nil {
			return fmt.Errorf("empty call: %w", err)
		}
		calls = append(calls, grpcCall{Method: "EmptyCall", ReqBytes: framed(req), RespBytes: framed(resp), ReqMsgs: 1, RespMsgs: 1})
	}
	return sayJSON(calls)
}

// serveRawSink accepts TCP connections and reads them to EOF without ever
// answering: the malformed-input test writes garbage into it.
func serveRawSink() error {
	l, err := listenLocal()
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				say("CONNDONE %d", n)
			}()
		}
	}()
	untilStdinCloses()
	return l.Close()
}

type rawSendArgs struct {
	Addr string
	// Files hold the chunks, written one write() each with a short pause
	// between (files, not arguments: a CONTINUATION flood is larger than
	// what one environment string may hold).
	Files []string
}

func runRawSend(raw []byte) error {
	var args rawSendArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("decode args: %w", err)
	}
	c, err := net.Dial("tcp", args.Addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", args.Addr, err)
	}
	for i, file := range args.Files {
		chunk, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if i > 0 {
			time.Sleep(20 * time.Millisecond) // separate syscalls, separate reads
		}
		if _, err := c.Write(chunk); err != nil {
			return fmt.Errorf("write chunk %d: %w", i, err)
		}
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	say("SENT")
	return nil
}
