package e2e

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sextant/sextant/testbed"
)

// peerEnv names the role a re-executed test binary plays (see peers_test.go).
const peerEnv = "SEXTANT_E2E_PEER"

func TestMain(m *testing.M) {
	if role := os.Getenv(peerEnv); role != "" {
		os.Exit(runPeer(role))
	}
	os.Exit(m.Run())
}

// requireTool returns the path of an external peer program (curl, h2load,
// nghttpd), skipping (or failing in CI) when it is not installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testbed.Missing(t, "%s not installed (apt-get install -y curl nghttp2-client nghttp2-server): %v", name, err)
	}
	return p
}
