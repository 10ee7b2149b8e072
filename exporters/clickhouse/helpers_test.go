package clickhouse

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sextant/sextant/collector/flow"
)

// missing fails under CI=true (the system must be installed there) and
// skips elsewhere.
func missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

const serverBinary = "/usr/sbin/clickhouse-server"

// chServer is a real ClickHouse server (the 18.16 from Debian) on loopback
// ports with its data in a temp dir; it can be stopped and started again
// on the same ports and data.
type chServer struct {
	tb      testing.TB
	dir     string
	tcpPort int
	http    int
	cmd     *exec.Cmd
	exited  chan struct{}
}

func (s *chServer) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.tcpPort) }

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startServer(tb testing.TB) *chServer {
	tb.Helper()
	if _, err := os.Stat(serverBinary); err != nil {
		missing(tb, "ClickHouse server not installed (apt-get install -y clickhouse-server clickhouse-client): %v", err)
	}
	dir := tb.TempDir()
	s := &chServer{tb: tb, dir: dir, tcpPort: freePort(tb), http: freePort(tb)}
	config := fmt.Sprintf(`<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
</yandex>
`, dir, s.tcpPort, s.http)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	s.start()
	tb.Cleanup(s.stop)
	return s
}

func (s *chServer) start() {
	s.tb.Helper()
	cmd := exec.Command(serverBinary, "--config-file="+filepath.Join(s.dir, "config.xml"))
	cmd.Dir = s.dir
	out, err := os.Create(filepath.Join(s.dir, "stdout.log"))
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start %s: %v", serverBinary, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", s.http))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
			s.tb.Fatalf("clickhouse-server exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatal("clickhouse-server not ready after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the server (SIGKILL: an outage, not a clean shutdown) and
// waits for it to exit.
func (s *chServer) stop() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// sql runs a statement over the server's HTTP interface (independent of
// the code under test) and returns the raw answer.
func (s *chServer) sql(tb testing.TB, q string) string {
	tb.Helper()
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/", s.http), "text/plain", strings.NewReader(q))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != 200 {
		tb.Fatalf("%s: %s", q, body)
	}
	return strings.TrimSpace(string(body))
}

var (
	chdbOnce  sync.Once
	chdbShare *EmbeddedStore
	chdbErr   error
	chdbDir   string
)

// embedded returns the test process's embedded store (chDB allows one
// engine per process) with an empty flows table.
func embedded(tb testing.TB) *EmbeddedStore {
	tb.Helper()
	chdbOnce.Do(func() {
		lib := os.Getenv("CHDB_LIB_PATH")
		if lib == "" {
			lib = filepath.Join(DefaultChDBDir(), chdbLibRel)
		}
		if _, err := os.Stat(lib); err != nil {
			chdbErr = fmt.Errorf("libchdb.so not found (npm install --prefix %s %s, or set CHDB_LIB_PATH): %w", DefaultChDBDir(), ChDBPackage, err)
			return
		}
		chdbDir, chdbErr = os.MkdirTemp("", "sextant-chdb-test-")
		if chdbErr != nil {
			return
		}
		chdbShare, chdbErr = OpenEmbedded(context.Background(), EmbeddedConfig{Lib: lib, Dir: chdbDir, Retention: 30 * 24 * time.Hour})
	})
	if chdbErr != nil {
		missing(tb, "chDB: %v", chdbErr)
	}
	if err := chdbShare.exec(context.Background(), "TRUNCATE TABLE sextant.flows"); err != nil {
		tb.Fatal(err)
	}
	return chdbShare
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chdbShare != nil {
		chdbShare.Close()
	}
	if chdbDir != "" {
		os.RemoveAll(chdbDir)
	}
	os.Exit(code)
}

// testFlows makes n flows around t0 spread over services, routes with ids,
// statuses and gRPC methods; every 10th carries a traceparent.
func testFlows(n int, t0 time.Time) []*flow.Flow {
	out := make([]*flow.Flow, n)
	for i := range out {
		f := &flow.Flow{
			Time:          t0.Add(time.Duration(i) * time.Microsecond),
			Latency:       time.Duration(1+i%100) * time.Millisecond,
			TTFB:          time.Duration(1+i%50) * time.Millisecond,
			Node:          fmt.Sprintf("node-%d", i%3),
			Observer:      flow.Side(1 + i%2),
			Protocol:      "HTTP/2",
			Method:        "GET",
			Scheme:        "http",
			Authority:     fmt.Sprintf("svc-%d:8080", i%4),
			Path:          fmt.Sprintf("/users/%d/orders?page=%d", i%1000, i%7),
			Status:        []uint32{200, 200, 200, 404, 500}[i%5],
			RequestBytes:  uint64(i % 512),
			ResponseBytes: uint64(i % 4096),
			RequestHeaders: []flow.Header{
				{Name: "user-agent", Value: "test/1"},
				{Name: "x-request-id", Value: fmt.Sprintf("req-%d", i)},
			},
			ResponseHeaders: []flow.Header{{Name: "content-type", Value: "text/plain"}},
			Source:          netip.MustParseAddrPort(fmt.Sprintf("10.0.%d.%d:%d", i%7, 1+i%200, 30000+i%1000)),
			Destination:     netip.MustParseAddrPort(fmt.Sprintf("10.1.0.%d:8080", 1+i%4)),
			Process:         flow.Process{PID: uint32(100 + i%5), Comm: "server", Exe: "/usr/bin/server", ContainerID: "c0ffee", Cgroup: "/system.slice/x.service"},
			ConnID:          uint64(i / 10),
			StreamID:        uint32(1 + 2*(i%10)),
		}
		if i%10 == 0 {
			f.TraceParent = fmt.Sprintf("00-%032x-%016x-01", 1+i/10, 1+i)
		}
		if i%3 == 0 {
			st := uint32(i % 17)
			f.Path = "/helloworld.Greeter/SayHello"
			f.Method = "POST"
			f.Status = 200
			f.GRPC = &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: &st, StatusSource: "trailers", RequestMessages: 1, ResponseMessages: 1}
			if st != 0 {
				f.GRPC.Message = "failed \"quoted\"\n"
			}
		}
		out[i] = f
	}
	return out
}
