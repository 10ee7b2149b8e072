package testbed

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClickHouseServer is Debian's ClickHouse 18.16 server.
const ClickHouseServer = "/usr/sbin/clickhouse-server"

// ClickHouse is a real ClickHouse server on loopback ports with its data in
// a temp dir; it can be stopped and started again on the same ports and
// data.
type ClickHouse struct {
	TCPPort  int // native protocol
	HTTPPort int

	tb     testing.TB
	dir    string
	logs   *Output
	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr is the host:port of the native protocol.
func (c *ClickHouse) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.TCPPort) }

// StartClickHouse runs ClickHouse until the test ends; it returns once the
// server answers /ping.
func StartClickHouse(tb testing.TB) *ClickHouse {
	tb.Helper()
	return StartClickHouseWithUsers(tb, "")
}

// StartClickHouseWithUsers is StartClickHouse with usersD added to the
// package's users configuration the way an operator adds a file to
// /etc/clickhouse-server/users.d/ ("": nothing added).
func StartClickHouseWithUsers(tb testing.TB, usersD string) *ClickHouse {
	tb.Helper()
	if _, err := os.Stat(ClickHouseServer); err != nil {
		Missing(tb, "ClickHouse server not installed (apt-get install -y clickhouse-server clickhouse-client): %v", err)
	}
	dir := tb.TempDir()
	users := "/etc/clickhouse-server/users.xml"
	if usersD != "" {
		base, err := os.ReadFile(users)
		if err != nil {
			tb.Fatal(err)
		}
		users = filepath.Join(dir, "users.xml")
		if err := os.MkdirAll(filepath.Join(dir, "users.d"), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(users, base, 0o644); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "users.d", "sextant.xml"), []byte(usersD), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	p := freePorts(tb, 2)
	c := &ClickHouse{TCPPort: p[0], HTTPPort: p[1], tb: tb, dir: dir, logs: &Output{}}
	config := fmt.Sprintf(`<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[4]s</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
</yandex>
`, dir, c.TCPPort, c.HTTPPort, users)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	c.Start()
	tb.Cleanup(func() {
		c.Stop()
		if tb.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			tb.Logf("clickhouse output:\n%s\nerror.log:\n%s", c.logs.String(), log)
		}
	})
	return c
}

// Start starts the server (again, after Stop) and waits until it answers.
func (c *ClickHouse) Start() {
	c.tb.Helper()
	cmd := exec.Command(ClickHouseServer, "--config-file="+filepath.Join(c.dir, "config.xml"))
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.tb.Fatalf("start %s: %v", ClickHouseServer, err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	exited := c.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", c.HTTPPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(c.dir, "error.log"))
			c.tb.Fatalf("clickhouse-server exited: %s%s", c.logs.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("clickhouse-server not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: an outage, not a clean shutdown) and
// waits for it to exit.
func (c *ClickHouse) Stop() {
	if c.cmd == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.exited
	c.cmd = nil
}

// Query runs a statement over the HTTP interface (independent of the code
// under test) and returns the raw answer, trimmed.
func (c *ClickHouse) Query(q string) (string, error) {
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/", c.HTTPPort), "text/plain", strings.NewReader(q))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse: %s", body) // e.g. the table is not created yet
	}
	return strings.TrimSpace(string(body)), nil
}

// SQL is Query that fails the test on error.
func (c *ClickHouse) SQL(tb testing.TB, q string) string {
	tb.Helper()
	out, err := c.Query(q)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return out
}
