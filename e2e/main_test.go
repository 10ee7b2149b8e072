package e2e

import (
	"os"
	"os/exec"
	"testing"
)

// peerEnv names the role a re-executed test binary plays (see peers_test.go).
const peerEnv = "SEXTANT_E2E_PEER"

func TestMain(m *testing.M) {
	if role := os.Getenv(peerEnv); role != "" {
		os.Exit(runPeer(role))
	}
	os.Exit(m.Run())
}

// inCI reports whether skips must turn into failures.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test, except in CI where a skipped end-to-end test
// would let a broken pipeline pass unnoticed.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("CI=true and the test cannot run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// requireRoot guards every test: loading eBPF programs needs root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to load eBPF programs (euid %d)", os.Geteuid())
	}
}

// requireTool returns the path of an external peer program (curl, h2load,
// nghttpd), skipping (or failing in CI) when it is not installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not installed (apt-get install -y curl nghttp2-client nghttp2-server): %v", name, err)
	}
	return p
}
