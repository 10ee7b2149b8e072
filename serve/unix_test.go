package serve

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestUnixCreatesPrivateSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing", "dir")
	socket := filepath.Join(dir, "agent.sock")
	ln, err := Unix(socket, "")
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
	if _, err := Unix(socket, ""); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second ListenUnix: err = %v, want 'already listening'", err)
	}
	ln.Close()
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind after Close: %v", err)
	}
}

func TestUnixReplacesStaleSocket(t *testing.T) {
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

	ln, err := Unix(socket, "")
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()
}

func TestUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Unix(path, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a socket" {
		t.Fatal("ListenUnix touched a file that is not a socket")
	}
}

func TestUnixGroup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	socket := filepath.Join(dir, "observer.sock")
	// Our own group: any user may give a file to a group it belongs to.
	gid := os.Getgid()
	ln, err := Unix(socket, strconv.Itoa(gid))
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
	if _, err := Unix(filepath.Join(dir, "x.sock"), "no-such-group-sextant"); err == nil || !strings.Contains(err.Error(), "no-such-group-sextant") {
		t.Fatalf("unknown group: err = %v", err)
	}
}
