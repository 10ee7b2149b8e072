package agent

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sextant/sextant/certs"
)

func TestListenUnixCreatesPrivateSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing", "dir")
	socket := filepath.Join(dir, "agent.sock")
	ln, err := ListenUnix(socket, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("created directory mode = %v, want 0700", di.Mode().Perm())
	}

	// A second agent on the same socket must be refused while the first lives.
	if _, err := ListenUnix(socket, ""); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second ListenUnix: err = %v, want 'already listening'", err)
	}
	ln.Close()
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind after Close: %v", err)
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	// A socket file whose listener is gone, as a killed agent leaves it.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("stale socket not present: %v", err)
	}

	ln, err := ListenUnix(socket, "")
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a socket" {
		t.Fatal("ListenUnix touched a file that is not a socket")
	}
}

func TestListenTCPLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if ln, err := listenTCP(Config{ListenTCP: addr}); err == nil {
			ln.Close()
			t.Errorf("listenTCP(%q) succeeded, want refusal", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := listenTCP(Config{ListenTCP: addr})
		if err != nil {
			t.Errorf("listenTCP(%q): %v", addr, err)
			continue
		}
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			t.Errorf("listenTCP(%q) bound %v", addr, ip)
		}
		ln.Close()
	}
}

func TestListenTCPInsecureAllowed(t *testing.T) {
	ln, err := listenTCP(Config{ListenTCP: "0.0.0.0:0", AllowInsecureTCP: true})
	if err != nil {
		t.Fatalf("listenTCP with AllowInsecureTCP: %v", err)
	}
	ln.Close()
}

// With certificates the agent serves mTLS on any address, and a client
// without a certificate from the CA is turned away.
func TestListenTCPMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(dir, certs.GenerateOptions{}); err != nil {
		t.Fatal(err)
	}
	files := func(role string) certs.Files {
		return certs.Files{Cert: filepath.Join(dir, role+".crt"), Key: filepath.Join(dir, role+".key"), CA: filepath.Join(dir, "ca.crt")}
	}
	ln, err := listenTCP(Config{ListenTCP: "127.0.0.1:0", TLS: files("server")})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Write([]byte("ok"))
				c.Close()
			}()
		}
	}()
	good, err := certs.ClientConfig(files("client"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), good)
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "ok" {
		t.Fatalf("read %q, %v", b, err)
	}
	c.Close()
	noCert := good.Clone()
	noCert.Certificates = nil
	if c, err := tls.Dial("tcp", ln.Addr().String(), noCert); err == nil {
		_, err = io.ReadAll(c)
		c.Close()
		if err == nil {
			t.Fatal("client without a certificate was served")
		}
	}
}

func TestListenUnixGroup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	socket := filepath.Join(dir, "observer.sock")
	// Our own group: any user may give a file to a group it belongs to.
	gid := os.Getgid()
	ln, err := ListenUnix(socket, strconv.Itoa(gid))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode = %v, want 0660 with a group", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid {
		t.Fatalf("socket gid = %d, want %d", st.Gid, gid)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o750 {
		t.Fatalf("socket directory: %v, mode %v; want 0750 with a group", err, di.Mode().Perm())
	}
	if _, err := ListenUnix(filepath.Join(dir, "x.sock"), "no-such-group-sextant"); err == nil || !strings.Contains(err.Error(), "no-such-group-sextant") {
		t.Fatalf("unknown group: err = %v", err)
	}
}
