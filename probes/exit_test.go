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
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
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
		pid := uint32(cmd.Process.Pid)
		if got := g.pids[clients[0]]; got != pid {
			t.Fatalf("client connection belongs to pid %d, want the child %d", got, pid)
		}
		wantExits, wantCloses := 0, 1
		if capture == CaptureSyscall {
			// One record for the whole process, none per connection: user
			// space closes the process's connections by pid.
			wantExits, wantCloses = 1, 0
		}
		// Socket capture: the kernel destroys the socket, which ends the
		// connection itself.
		if n := g.exits[pid]; n != wantExits {
			t.Errorf("child pid %d: %d proc-exit records, want %d", pid, n, wantExits)
		}
		if n := g.close[clients[0]]; n != wantCloses {
			t.Errorf("child's connection: %d close records, want %d", n, wantCloses)
		}
		if got, want := g.conns[clients[0]].EndReported, capture == CaptureSocket; got != want {
			t.Errorf("child's connection: EndReported %v, want %v (the collector sweeps by pid only without it)", got, want)
		}
	})
}
