package e2e

// The trust model of docs/security.md, tried as a local user would: an
// agent and a relay with their default protections, and the unprivileged
// user nobody (uid 65534) trying every endpoint. Flows, history and SQL are
// readable only through sockets with owner/group permissions or over mTLS;
// /metrics is public but carries no header value and no query string.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/testbed"
)

const (
	nobodyUID = 65534
	// operatorsGID is the group given --socket-group; nobody gets it as a
	// supplementary group to play a member of the operators.
	operatorsGID = 46201
)

// as runs a command as nobody (with the operators' group when member) or,
// with uid 0, as root; it returns the combined output and the error.
func as(t *testing.T, uid int, member bool, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if uid != 0 {
		cred := &syscall.Credential{Uid: uint32(uid), Gid: nobodyUID}
		if member {
			cred.Groups = []uint32{operatorsGID}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// publicCopy copies a binary where nobody may run it.
func publicCopy(t *testing.T, dir, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestLocalUsersReadNothing(t *testing.T) {
	testbed.RequireRoot(t)
	if _, err := os.Stat(filepath.Join(clickhouse.DefaultChDBDir(), "node_modules")); err != nil {
		testbed.Missing(t, "chDB not fetched into %s (go tool task setup): %v", clickhouse.DefaultChDBDir(), err)
	}
	// A directory every user may enter, so that what refuses nobody is the
	// sockets' own mode, not a parent directory; keys stay in a private one.
	pub, err := os.MkdirTemp("", "sextant-security-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	sextant := publicCopy(t, pub, testbed.Sextant(t))
	hubble := publicCopy(t, pub, testbed.Hubble(t))
	keys := devCerts(t)
	srv := certs.ServerFiles(keys)
	tlsFlags := []string{"--tls-cert", srv.Cert, "--tls-key", srv.Key, "--tls-ca", srv.CA}

	cg := testbed.NewCgroup(t, "security")
	agentSocket, relaySocket := filepath.Join(pub, "observer.sock"), filepath.Join(pub, "relay.sock")
	querySocket, groupSocket := filepath.Join(pub, "query.sock"), filepath.Join(pub, "group.sock")
	agentTCP, relayTCP, queryTCP, metrics := testbed.FreeAddr(t), testbed.FreeAddr(t), testbed.FreeAddr(t), testbed.FreeAddr(t)
	agent := testbed.StartDaemon(t, "agent", sextant, append([]string{"agent", "--node", "secure", "--cgroup", cg.Path,
		"--socket", agentSocket, "--listen", agentTCP, "--metrics-listen", metrics}, tlsFlags...)...)
	agent.Await("agent answering", 90*time.Second, func() error {
		_, err := as(t, 0, false, hubble, "status", "--server", "unix://"+agentSocket)
		return err
	})
	// A second agent whose socket the operators' group may use.
	group := testbed.StartDaemon(t, "agent (group)", sextant, "agent", "--node", "group", "--cgroup", cg.Path,
		"--socket", groupSocket, "--socket-group", fmt.Sprint(operatorsGID), "--metrics-listen", "")
	group.Await("group agent answering", 90*time.Second, func() error {
		_, err := as(t, 0, false, hubble, "status", "--server", "unix://"+groupSocket)
		return err
	})
	relay := testbed.StartDaemon(t, "relay", sextant, append([]string{"relay", "--agent", "unix://" + agentSocket,
		"--socket", relaySocket, "--listen", relayTCP, "--data-dir", filepath.Join(t.TempDir(), "relay"),
		"--query-socket", querySocket, "--metrics-listen", ""}, tlsFlags...)...)
	relay.Await("relay answering queries", 3*time.Minute, func() error {
		_, err := as(t, 0, false, sextant, "query", "--relay", "unix://"+querySocket, "SELECT 1")
		return err
	})
	// The same relay data over TCP: a second relay with the query endpoint
	// on mTLS (one embedded engine per process).
	relay2 := testbed.StartDaemon(t, "relay (query over TCP)", sextant, append([]string{"relay", "--agent", "unix://" + agentSocket,
		"--socket", filepath.Join(pub, "relay2.sock"), "--data-dir", filepath.Join(t.TempDir(), "relay2"),
		"--query-listen", queryTCP, "--metrics-listen", ""}, tlsFlags...)...)
	cli := certs.ClientFiles(keys)
	relay2.Await("relay answering queries over mTLS", 3*time.Minute, func() error {
		_, err := as(t, 0, false, sextant, "query", "--relay", queryTCP, "--tls-cert", cli.Cert, "--tls-key", cli.Key, "--tls-ca", cli.CA, "SELECT 1")
		return err
	})

	// Some traffic with a query string and a header value that must not
	// reach /metrics.
	cg.Join(t)
	h2 := testbed.ServeH2C(t, nil)
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/private/report?token=QUERYSECRET&status=200", h2), nil)
	req.Header.Set("X-Tenant", "HEADERSECRET")
	req.Host = "internal-name.example"
	resp, err := testbed.H2CClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	agent.Await("the request in /metrics", 30*time.Second, func() error {
		f, err := testbed.Scrape("http://" + metrics + "/metrics")
		if err == nil && f.Sum("http_server_request_duration_seconds", map[string]string{"server_port": fmt.Sprint(h2.Port)}) != 1 {
			err = fmt.Errorf("not counted yet")
		}
		return err
	})

	hubbleTLSNoCert := []string{"--tls", "--tls-allow-insecure"}
	for _, c := range []struct {
		what string
		args []string
		bin  string
		// refused: the error nobody gets (a substring of the output).
		refused string
	}{
		{"agent socket", []string{"observe", "--server", "unix://" + agentSocket, "--last", "5"}, hubble, "permission denied"},
		{"agent TCP, plaintext", []string{"observe", "--server", agentTCP, "--last", "5"}, hubble, ""},
		{"agent TCP, TLS without a client certificate", append([]string{"observe", "--server", agentTCP, "--last", "5"}, hubbleTLSNoCert...), hubble, ""},
		{"relay socket", []string{"observe", "--server", "unix://" + relaySocket, "--last", "5"}, hubble, "permission denied"},
		{"relay TCP, plaintext", []string{"observe", "--server", relayTCP, "--last", "5"}, hubble, ""},
		{"relay TCP, TLS without a client certificate", append([]string{"observe", "--server", relayTCP, "--last", "5"}, hubbleTLSNoCert...), hubble, ""},
		{"sextant observe, agent socket", []string{"observe", "--server", "unix://" + agentSocket}, sextant, "permission denied"},
		{"query socket", []string{"query", "--relay", "unix://" + querySocket, "SELECT count() FROM flows"}, sextant, "permission denied"},
		{"query TCP without a client certificate", []string{"query", "--relay", queryTCP, "SELECT count() FROM flows"}, sextant, "mTLS"},
		{"group socket, not a member", []string{"observe", "--server", "unix://" + groupSocket, "--last", "5"}, hubble, "permission denied"},
	} {
		out, err := as(t, nobodyUID, false, c.bin, c.args...)
		if err == nil {
			t.Errorf("nobody, %s: read:\n%s", c.what, out)
		} else if !strings.Contains(out, c.refused) {
			t.Errorf("nobody, %s: refused, but with %q, want %q", c.what, out, c.refused)
		} else {
			t.Logf("nobody, %s: refused: %s", c.what, firstLine(out))
		}
	}
	// The query endpoint over TCP refuses a TLS client without a
	// certificate at the handshake, whatever the client program.
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := noCert.Post("https://"+queryTCP+clickhouse.QueryPath, "application/json", strings.NewReader(`{"sql":"SELECT 1"}`)); err == nil {
		resp.Body.Close()
		t.Errorf("query endpoint over TCP answered a client without certificate: %s", resp.Status)
	}

	// What nobody may do: be in the operators' group, and scrape /metrics,
	// which holds no query string and no header value.
	if out, err := as(t, nobodyUID, true, hubble, "observe", "--server", "unix://"+groupSocket, "--last", "1"); err != nil {
		t.Errorf("an operator (group member) on the group socket: %v\n%s", err, out)
	}
	body, err := as(t, nobodyUID, false, "/usr/bin/curl", "-sf", "http://"+metrics+"/metrics")
	if err != nil {
		t.Errorf("nobody scraping /metrics: %v %s", err, body)
	}
	for _, secret := range []string{"QUERYSECRET", "HEADERSECRET", "internal-name.example", "token="} {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics carries %q", secret)
		}
	}

	// Root, on the same endpoints, reads (mTLS with the client certificate).
	withCert := append([]string{}, hubbleTLS(keys)...)
	for _, c := range []struct {
		what string
		args []string
		bin  string
	}{
		{"agent socket", []string{"observe", "--server", "unix://" + agentSocket, "--last", "5"}, hubble},
		{"agent TCP, mTLS", append([]string{"observe", "--server", agentTCP, "--last", "5"}, withCert...), hubble},
		{"relay socket", []string{"observe", "--server", "unix://" + relaySocket, "--last", "5"}, hubble},
		{"relay TCP, mTLS", append([]string{"status", "--server", relayTCP}, withCert...), hubble},
		{"query socket", []string{"query", "--relay", "unix://" + querySocket, "SELECT count() FROM flows"}, sextant},
	} {
		if out, err := as(t, 0, false, c.bin, c.args...); err != nil {
			t.Errorf("root, %s: %v\n%s", c.what, err, out)
		}
	}

	// Floods: 1,000 connections to the agent's TCP listener and a 100 MB
	// request on its socket get errors, and the agent keeps observing.
	var held []net.Conn
	refused := 0
	for range 1000 {
		c, err := net.DialTimeout("tcp", agentTCP, 5*time.Second)
		if err != nil {
			refused++
			continue
		}
		held = append(held, c)
	}
	big, err := grpc.NewClient("unix://"+agentSocket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(200<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	huge := &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpPath: []string{strings.Repeat("x", 100<<20)}}}}
	stream, err := observerpb.NewObserverClient(big).GetFlows(context.Background(), huge)
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("100 MB GetFlows request: %v, want ResourceExhausted", err)
	}
	// A refused connection is closed by the agent at once (EOF); a served
	// one waits for the TLS handshake (the read times out).
	closed := make(chan bool, len(held))
	for _, c := range held {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			closed <- !(errors.As(err, &ne) && ne.Timeout())
			c.Close()
		}()
	}
	for range held {
		if <-closed {
			refused++
		}
	}
	if refused < 1000-serve.DefaultMaxConns {
		t.Errorf("flood: %d of 1000 connections refused, want at least %d", refused, 1000-serve.DefaultMaxConns)
	}
	t.Logf("flood: %d of 1000 connections refused at once, the rest served", refused)
	resp, err = testbed.H2CClient(t).Get(fmt.Sprintf("http://%s/after/flood?status=200", h2))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	agent.Await("the request after the flood in /metrics", 30*time.Second, func() error {
		f, err := testbed.Scrape("http://" + metrics + "/metrics")
		if n := f.Sum("http_server_request_duration_seconds", map[string]string{"server_port": fmt.Sprint(h2.Port)}); err == nil && n != 2 {
			err = fmt.Errorf("%v requests counted, want 2", n)
		}
		return err
	})

	// Even root's SQL reaches neither files nor the network.
	for _, sql := range []string{
		"SELECT * FROM file('/etc/shadow', 'LineAsString') LIMIT 2",
		"SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
		"SELECT file('/etc/shadow')",
		"SELECT count() FROM flows SETTINGS readonly = 0",
		"SELECT 1; SELECT 2",
	} {
		out, err := as(t, 0, false, sextant, "query", "--relay", "unix://"+querySocket, sql)
		if err == nil || strings.Contains(out, "root:") {
			t.Errorf("query %q: %v\n%s", sql, err, out)
		} else {
			t.Logf("query %q: refused: %s", sql, firstLine(out))
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
