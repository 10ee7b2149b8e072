package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sextant/sextant/testbed"
)

// testPinPath is a bpffs directory of the test's own, removed at the end.
func testPinPath(t *testing.T) string {
	t.Helper()
	testbed.RequireRoot(t)
	p := filepath.Join("/sys/fs/bpf", fmt.Sprintf("sextant-test-%d-%s", os.Getpid(), filepath.Base(t.Name())))
	t.Cleanup(func() {
		if err := Cleanup(p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

func TestLoadVerifies(t *testing.T) {
	p := testPinPath(t)
	d, err := Load(Options{PinPath: p})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Pinned maps are re-opened by a second load.
	d, err = Load(Options{PinPath: p})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}
