package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/policy/datapath"
	"github.com/sextant/sextant/policy/endpoint"
	"github.com/sextant/sextant/testbed"
)

// The test binary plays servers and clients in cgroups and network
// namespaces the tests create: `SEXTANT_POLICY_ROLE=<role> <test binary>`.
func TestMain(m *testing.M) {
	if role := os.Getenv("SEXTANT_POLICY_ROLE"); role != "" {
		os.Exit(runRole(role, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

func runRole(role, arg string) int {
	switch role {
	case "serve":
		// TCP and UDP on the same address: TCP writes "ok\n" and closes,
		// UDP answers every datagram with "ok".
		if err := testbed.ServeOK(strings.Split(arg, ",")); err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		fmt.Println("ready")
		select {}
	case "echo":
		// TCP: echoes every line back, connections stay open.
		l, err := net.Listen("tcp", arg)
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		fmt.Println("ready")
		for {
			c, err := l.Accept()
			if err != nil {
				return 0
			}
			go func() {
				defer c.Close()
				rd := bufio.NewReader(c)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	case "grpc-server":
		l, err := net.Listen("tcp", arg)
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, health.NewServer())
		fmt.Println("ready")
		s.Serve(l)
		return 0
	case "tcp":
		fmt.Println(tcpProbe(arg))
		return 0
	case "udp":
		fmt.Println(udpProbe(arg))
		return 0
	case "udp-burst":
		// 5 datagrams at once, then one more after the kernel's 1 s
		// aggregation interval, from one unconnected socket.
		pc, err := net.ListenPacket("udp", ":0")
		if err != nil {
			fmt.Println("error:", err)
			return 0
		}
		ua, _ := net.ResolveUDPAddr("udp", arg)
		refused := 0
		for i := range 6 {
			if i == 5 {
				time.Sleep(1200 * time.Millisecond)
			}
			if _, err := pc.WriteTo([]byte("x"), ua); errors.Is(err, syscall.EPERM) {
				refused++
			}
		}
		fmt.Println(refused)
		return 0
	case "grpc":
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cc, err := grpc.NewClient(arg, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Println("error:", err)
			return 0
		}
		defer cc.Close()
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
		if err != nil {
			fmt.Println("error:", err)
			return 0
		}
		fmt.Println(strings.ToLower(resp.Status.String()))
		return 0
	}
	fmt.Println("unknown role", role)
	return 2
}

// Results of the probes.
const (
	resOK      = testbed.ProbeOK
	resEPERM   = testbed.ProbeEPERM   // refused by the connect/sendmsg hook: immediate
	resTimeout = testbed.ProbeTimeout // dropped on the way (SYN or datagram)
)

var (
	tcpProbe  = testbed.ProbeTCP
	dialProbe = testbed.ProbeDial
	udpProbe  = testbed.ProbeUDP
)

var testSeq atomic.Int32

// uniq is a short name unique to this test process.
func uniq(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, os.Getpid()%10000, testSeq.Add(1))
}

// testCgroup creates a cgroup v2 directory of the test's own.
func testCgroup(t testing.TB) string {
	t.Helper()
	root := endpoint.CgroupRoot()
	if root == "" {
		testbed.Missing(t, "no cgroup v2 hierarchy mounted")
	}
	dir := filepath.Join(root, uniq("sextant-test-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Kill what is left, then remove the (empty) cgroup.
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(b)) {
				var p int
				fmt.Sscan(pid, &p)
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for os.Remove(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// newTestNetns is a network namespace joined to the host by a veth pair.
func newTestNetns(t testing.TB) *testbed.Netns { return testbed.NewNetns(t) }

// proc is a helper process.
type proc struct {
	cmd *exec.Cmd
	out *testbed.Output
}

// where says where a helper runs: a cgroup, a netns, both or neither.
type where struct {
	cgroup string
	netns  string
}

// command builds a command that runs in w: placed into its cgroup before
// it runs anything (a shell writes itself into cgroup.procs, then execs),
// inside its netns.
func command(w where, name string, args ...string) *exec.Cmd {
	argv := append([]string{name}, args...)
	if w.netns != "" {
		argv = append([]string{"ip", "netns", "exec", w.netns}, argv...)
	}
	if w.cgroup != "" {
		script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$@"`, w.cgroup)
		argv = append([]string{"sh", "-c", script, "sh"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// role runs the test binary in a role until it exits and returns its output.
func role(t testing.TB, w where, name, arg string) string {
	t.Helper()
	cmd := command(w, os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), "SEXTANT_POLICY_ROLE="+name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, arg, err, out)
	}
	return strings.TrimSpace(string(out))
}

// start runs a long-lived helper (a server) until the test ends and
// waits until it prints "ready" or, when readyAddr is set, until that
// address accepts connections.
func start(t testing.TB, w where, readyAddr string, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, command(w, name, args...), name, readyAddr)
}

// startRole starts the test binary in a server role.
func startRole(t testing.TB, w where, name, arg string) *proc {
	t.Helper()
	cmd := command(w, os.Args[0], "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), "SEXTANT_POLICY_ROLE="+name)
	return startCmd(t, cmd, name, "")
}

func startCmd(t testing.TB, cmd *exec.Cmd, name, readyAddr string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, out: &testbed.Output{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if strings.Contains(p.out.String(), "ready") || (readyAddr != "" && listening(readyAddr)) {
			return p
		}
		select {
		case <-done:
			t.Fatalf("%s exited: %s", name, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 20s: %s", name, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening looks for a listening TCP socket on addr's port in the host's
// /proc/net/tcp{,6}: a connection attempt could itself be denied.
func listening(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	var p int
	fmt.Sscan(port, &p)
	want := fmt.Sprintf(":%04X ", p)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", want) && fields[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// rig is an engine on the test's own policy directory, endpoints file
// and bpffs directory.
type rig struct {
	t         testing.TB
	dir       string
	endpoints string
	pin       string
	eng       *Engine
	mu        sync.Mutex
	seen      []Verdict
	cancel    context.CancelFunc
	cfg       Config
	// discard: count verdicts instead of keeping them (benchmarks).
	discard  atomic.Bool
	verdictN atomic.Uint64
}

func newRig(t testing.TB, audit bool) *rig {
	t.Helper()
	testbed.RequireRoot(t)
	if err := datapath.CheckKernel(); err != nil {
		testbed.Missing(t, "%v", err)
	}
	r := &rig{t: t, dir: t.TempDir(), pin: filepath.Join("/sys/fs/bpf", uniq("sextant-test-"))}
	r.endpoints = filepath.Join(t.TempDir(), "endpoints.yaml")
	logs := &testbed.Output{}
	r.cfg = Config{PolicyDir: r.dir, EndpointsFile: r.endpoints, PinPath: r.pin, Audit: audit, Node: "test-node", KernelStats: true,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SEXTANT_TEST_LOG") != "" {
			t.Logf("engine log:\n%s", logs.String())
		}
		r.stop()
		if err := Cleanup(r.pin); err != nil {
			t.Errorf("cleanup %s: %v", r.pin, err)
		}
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	cfg := r.cfg
	cfg.Sink = func(vs []Verdict) {
		r.verdictN.Add(uint64(len(vs)))
		if r.discard.Load() {
			return
		}
		r.mu.Lock()
		r.seen = append(r.seen, vs...)
		r.mu.Unlock()
	}
	eng, err := New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := eng.Start(ctx); err != nil {
		cancel()
		r.t.Fatal(err)
	}
	r.eng, r.cancel = eng, cancel
}

func (r *rig) stop() {
	if r.eng == nil {
		return
	}
	r.cancel()
	if err := r.eng.Stop(); err != nil {
		r.t.Errorf("stop: %v", err)
	}
	r.eng = nil
}

func (r *rig) writeEndpoints(yaml string) {
	r.t.Helper()
	writeFile(r.t, r.endpoints, yaml)
}

func (r *rig) writePolicy(name, yaml string) {
	r.t.Helper()
	writeFile(r.t, filepath.Join(r.dir, name), yaml)
}

func writeFile(t testing.TB, path, content string) { testbed.WriteFile(t, path, content) }

// waitRevision waits until a revision newer than after is in force.
func (r *rig) waitRevision(after uint64) uint64 {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n := r.eng.Revision(); n > after {
			return n
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no revision after %d within 20s: %s", after, r.eng.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually retries probe until it answers want (a reload is applied
// within the watcher's settle time; an endpoint resync may apply a
// revision in between, so revision numbers alone do not say which
// content is in force).
func eventually(t testing.TB, what string, probe func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := probe()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s, want %s (for 20s)", what, got, want)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hubbleEvent is the Hubble event the agent serves for a verdict.
func hubbleEvent(v Verdict) *flowpb.Flow { return hubble.Request(v.Flow(), "test") }

// waitVerdict waits for a verdict that match accepts.
func (r *rig) waitVerdict(what string, match func(*Verdict) bool) Verdict {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		for i := range r.seen {
			if match(&r.seen[i]) {
				v := r.seen[i]
				r.mu.Unlock()
				return v
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.mu.Lock()
			var all []string
			for _, v := range r.seen {
				all = append(all, v.String())
			}
			r.mu.Unlock()
			r.t.Fatalf("no verdict %s within 20s; seen:\n%s", what, strings.Join(all, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
