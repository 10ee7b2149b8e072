package dashboards

// The Flow history queries on the ClickHouse 18.16 server (Debian's
// package), over the legacy table the exporter creates there.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sextant/sextant/exporters/clickhouse"
)

const clickhouseServer = "/usr/sbin/clickhouse-server"

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startClickHouse runs the server on loopback ports with its data in a
// temp dir, until the test ends.
func startClickHouse(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(clickhouseServer); err != nil {
		missing(t, "ClickHouse server not installed (apt-get install -y clickhouse-server): %v", err)
	}
	dir := t.TempDir()
	tcp, httpPort := freePort(t), freePort(t)
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
`, dir, tcp, httpPort)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(clickhouseServer, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", clickhouseServer, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", httpPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return fmt.Sprintf("127.0.0.1:%d", tcp)
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("clickhouse-server exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("clickhouse-server not ready after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFlowHistorySQLServer1816(t *testing.T) {
	addr := startClickHouse(t)
	store, err := clickhouse.OpenNative(clickhouse.NativeConfig{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	t0 := time.Now().Add(-20 * time.Minute).Truncate(time.Minute)
	writeFlows(t, store, knownFlows(t0))
	checkFlowHistory(t, store, t0, false)
}
