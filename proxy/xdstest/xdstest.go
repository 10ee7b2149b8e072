// Package xdstest runs what the proxy's tests prove things with: the
// control plane on loopback, grpc-go xDS clients and servers with their
// own bootstrap, test backends that say who answered, and sextant's own
// pipeline (real probes and collector) scoped to the test process's
// cgroup, so that every claim is checked by the clients' counts and by
// the flows sextant observes of the same traffic. Tests only.
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/proxy/config"
	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/testbed"
)

// ---------------------------------------------------------------------------
// The test process in its own cgroup.

// cgroupRoot is where cgroup v2 is mounted.
var cgroupRoot = identity.Cgroup2Mount("/proc/self/mountinfo")

// scope is the cgroup (path below the cgroup2 root) the test process
// moved itself into; "" when it could not.
var scope string

// Main runs the tests with the process in a cgroup of its own (when
// root), so that the pipeline observes this process's traffic and no
// other test binary's.
func Main(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	orig, err := ownCgroup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdstest: no cgroup v2:", err)
		return m.Run()
	}
	name := fmt.Sprintf("/sextant-proxytest-%d", os.Getpid())
	dir := filepath.Join(cgroupRoot, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "xdstest:", err)
		return m.Run()
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		fmt.Fprintln(os.Stderr, "xdstest: enter cgroup:", err)
		os.Remove(dir)
		return m.Run()
	}
	scope = name
	code := m.Run()
	_ = os.WriteFile(filepath.Join(cgroupRoot, orig, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
	for range 50 {
		if os.Remove(dir) == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return code
}

func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			if _, err := os.Stat(filepath.Join(cgroupRoot, p, "cgroup.procs")); err != nil {
				return "", err
			}
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 line in /proc/self/cgroup")
}

// Cgroup is the test process's cgroup directory (for attaching cgroup
// programs), or fails the test when the process has none.
func Cgroup(t testing.TB) string {
	t.Helper()
	testbed.RequireRoot(t)
	if scope == "" {
		testbed.Missing(t, "the test process is not in a cgroup of its own (cgroup v2 at %s; the package's TestMain must call xdstest.Main)", cgroupRoot)
	}
	return filepath.Join(cgroupRoot, scope)
}

// ---------------------------------------------------------------------------
// Control plane.

// ControlPlane is the proxy's xDS server on a loopback port.
type ControlPlane struct {
	*pxds.Server
	Addr string
}

// StartControlPlane serves a new xds.Server until the test ends.
func StartControlPlane(t testing.TB, opt pxds.Options) *ControlPlane {
	t.Helper()
	s := pxds.NewServer(opt, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("xDS server: %v", err)
		}
	})
	return &ControlPlane{Server: s, Addr: l.Addr().String()}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Apply parses YAML documents and applies them, failing the test on error.
func (cp *ControlPlane) Apply(t testing.TB, yaml string) pxds.Result {
	t.Helper()
	set, err := config.Parse(map[string][]byte{t.Name() + ".yaml": []byte(yaml)})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	res, err := cp.Server.Apply(set)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

// Bootstrap is a gRPC xDS bootstrap for node id against the plane.
func (cp *ControlPlane) Bootstrap(node string) []byte {
	return pxds.GRPCBootstrap(cp.Addr, node)
}

// Dial opens a grpc-go channel to xds:///target as node.
func (cp *ControlPlane) Dial(t testing.TB, node, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	r, err := xds.NewXDSResolverWithConfigForTesting(cp.Bootstrap(node))
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(r)}, opts...)
	cc, err := grpc.NewClient("xds:///"+target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// ---------------------------------------------------------------------------
// Backends.

// Handler decides a backend's answer; a non-nil error is the call's
// status (sent trailers-only, which retries need).
type Handler func(ctx context.Context, b *Backend) error

// Backend is a TestService server answering UnaryCall with its name (in
// SimpleResponse.hostname) and FullDuplexCall by echoing.
type Backend struct {
	testgrpc.UnimplementedTestServiceServer
	Name    string
	Addr    netip.AddrPort
	Handler Handler

	mu      sync.Mutex
	calls   int // UnaryCall
	streams int // FullDuplexCall
	serving chan struct{}
}

// Streams the backend has received (FullDuplexCall).
func (b *Backend) Streams() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.streams
}

// Calls the backend has received (UnaryCall).
func (b *Backend) Calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

func (b *Backend) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	if b.Handler != nil {
		if err := b.Handler(ctx, b); err != nil {
			return nil, err
		}
	}
	return &testpb.SimpleResponse{Hostname: b.Name, Payload: req.GetPayload()}, nil
}

func (b *Backend) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	b.mu.Lock()
	b.streams++
	b.mu.Unlock()
	if b.Handler != nil {
		if err := b.Handler(stream.Context(), b); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func (b *Backend) listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Addr = netip.MustParseAddrPort(l.Addr().String())
	return l
}

// StartBackend serves a plain grpc-go TestService on a loopback port.
func StartBackend(t testing.TB, name string, h Handler) *Backend {
	t.Helper()
	b := &Backend{Name: name, Handler: h}
	l := b.listen(t)
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return b
}

// StartXDSBackend serves the TestService from a grpc-go xDS server (its
// listener, with RBAC, comes from the plane) and waits until it serves.
func StartXDSBackend(t testing.TB, cp *ControlPlane, name string, h Handler, opts ...grpc.ServerOption) *Backend {
	t.Helper()
	b := &Backend{Name: name, Handler: h}
	l := b.listen(t)
	serving := make(chan struct{})
	var once sync.Once
	opts = append(opts, grpc.Creds(insecure.NewCredentials()), xds.BootstrapContentsForTesting(cp.Bootstrap("server-"+name)),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				once.Do(func() { close(serving) })
			}
		}))
	g, err := xds.NewGRPCServer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	b.serving = serving
	return b
}

// WaitServing waits until an xDS backend got its listener.
func (b *Backend) WaitServing(t testing.TB) {
	t.Helper()
	select {
	case <-b.serving:
	case <-time.After(30 * time.Second):
		t.Fatalf("xDS server %s not serving after 30s (no listener %s?)", b.Name, pxds.ServerListenerName(b.Addr))
	}
}

// Header returns the value of a request header in a handler.
func Header(ctx context.Context, name string) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// ---------------------------------------------------------------------------
// Sextant's pipeline.

// Pipeline is the agent's observation path in-process: the real probes
// and collector, scoped to the test process's cgroup.
type Pipeline struct {
	t     testing.TB
	mu    sync.Mutex
	coll  *collector.Collector
	flows []*flow.Flow
}

// StartPipeline loads the probes (root) and collects flows until the
// test ends.
func StartPipeline(t testing.TB) *Pipeline {
	t.Helper()
	Cgroup(t)
	p, err := probes.Load(probes.Options{TraceSelf: true})
	if err != nil {
		t.Fatalf("load probes: %v", err)
	}
	pl := &Pipeline{t: t}
	pl.coll = collector.New(collector.Config{Node: "proxytest", CgroupScope: scope}, func(f *flow.Flow) {
		pl.mu.Lock()
		pl.flows = append(pl.flows, f)
		pl.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pl.coll.Run(ctx, p) }() // the agent's own drive loop
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("probes: %v", err)
		}
		p.Close()
	})
	return pl
}

// Await polls until keep selects at least n flows (60 s at most), then
// waits a little for extra ones, and returns them.
func (pl *Pipeline) Await(keep func(*flow.Flow) bool, n int) []*flow.Flow {
	pl.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(pl.Matching(keep)) < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	return pl.Matching(keep)
}

// Matching are the flows so far that keep selects.
func (pl *Pipeline) Matching(keep func(*flow.Flow) bool) []*flow.Flow {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []*flow.Flow
	for _, f := range pl.flows {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// RequireFlows: the flows each backend's side observed equal the calls
// it received (and these equal what the clients counted).
func RequireFlows(t testing.TB, pl *Pipeline, path string, want map[*Backend]int) map[*Backend][]*flow.Flow {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	out := map[*Backend][]*flow.Flow{}
	any := func(f *flow.Flow) bool {
		for b := range want {
			if ServedBy(b, path)(f) {
				return true
			}
		}
		return false
	}
	pl.Await(any, total)
	for b, n := range want {
		out[b] = pl.Matching(ServedBy(b, path))
		t.Logf("backend %s: %d calls, %d flows observed", b.Name, n, len(out[b]))
		if len(out[b]) != n {
			t.Errorf("backend %s: sextant observed %d flows, the clients counted %d calls", b.Name, len(out[b]), n)
		}
	}
	return out
}

// ServedBy selects the flows a backend observed as the server of a
// method ("/grpc.testing.TestService/UnaryCall").
func ServedBy(b *Backend, path string) func(*flow.Flow) bool {
	return func(f *flow.Flow) bool {
		return f.Observer == flow.SideServer && f.Destination == b.Addr && f.Path == path
	}
}

// GRPCStatus of a flow, -1 when none was seen.
func GRPCStatus(f *flow.Flow) int {
	if f.GRPC == nil || f.GRPC.Status == nil {
		return -1
	}
	return int(*f.GRPC.Status)
}

// ---------------------------------------------------------------------------
// grpc-js.

// GRPCJSModules installs @grpc/grpc-js and @grpc/grpc-js-xds once into a
// cache directory the tests own and returns its node_modules (NODE_PATH).
func GRPCJSModules(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		testbed.Missing(t, "node not installed: %v", err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testbed.Missing(t, "npm not installed: %v", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "sextant", "grpc-js-xds-1.14.1")
	mods := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "@grpc", "grpc-js-xds", "package.json")); err == nil {
		return mods
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(npm, "install", "--prefix", tmp, "--no-audit", "--no-fund", "@grpc/grpc-js@1.14.7", "@grpc/grpc-js-xds@1.14.1")
	if out, err := cmd.CombinedOutput(); err != nil {
		testbed.Missing(t, "npm install @grpc/grpc-js-xds: %v\n%s", err, out)
	}
	// Another test binary may have won the race: either copy works.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(mods); serr != nil {
			t.Fatalf("install grpc-js: %v", err)
		}
	}
	return mods
}
