package probes

import (
	"io"
	"os"
	"os/exec"
	"testing"
)

const childEnv = "SEXTANT_PROBES_H2C_CHILD"

// TestMain lets the test binary act as a short-lived h2c client that exits
// with its connection open (TestProcessExitCloses).
func TestMain(m *testing.M) {
	if addr := os.Getenv(childEnv); addr != "" {
		resp, err := h2cClient().Get("http://" + addr + "/echo/child")
		if err != nil {
			os.Exit(2)
		}
		io.ReadAll(resp.Body)
		os.Exit(0) // the kernel closes the socket: no close() syscall
	}
	os.Exit(m.Run())
}

func TestProcessExitCloses(t *testing.T) {
	rec := startRecorder(t)
	addr := h2cServer(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v %s", err, out)
	}
	g := group(rec.stop(t))
	clients, _ := connsTo(g, addr)
	if len(clients) != 1 {
		t.Fatalf("client conns %v (%s)", clients, describe(g))
	}
	// One record for the whole process, none per connection: user space
	// closes the process's connections by pid.
	pid := uint32(cmd.Process.Pid)
	if got := g.pids[clients[0]]; got != pid {
		t.Fatalf("client connection belongs to pid %d, want the child %d", got, pid)
	}
	if n := g.exits[pid]; n != 1 {
		t.Errorf("child pid %d: %d proc-exit records, want 1", pid, n)
	}
	if n := g.close[clients[0]]; n != 0 {
		t.Errorf("child's connection: %d close records, want 0 (the proc-exit record covers it)", n)
	}
}
