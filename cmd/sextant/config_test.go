package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/config"
)

// Defaults, then the file, then the flags given: a flag on the command
// line wins over the file, the file over a flag's default.
func TestFlagsOverrideTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(`apiVersion: sextant.io/v1alpha1
kind: Configuration
agent:
  node: from-file
  routes: ["/file/{id}"]
  observer:
    socket: /run/file.sock
    ringSize: 77
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var file config.File
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	f := cmd.Flags()
	listenFlags(f, &file.Agent.Observer.Config, "Observer API", "/run/default.sock")
	f.StringVar(&file.Agent.Node, "node", "hostname", "")
	f.StringArrayVar(&file.Agent.Routes, "route", nil, "")
	f.IntVar(&file.Agent.Observer.RingSize, "ring-size", 16384, "")
	f.StringVar(&file.Agent.Metrics.Listen, "metrics-listen", "127.0.0.1:9962", "")
	if err := f.Parse([]string{"--node", "from-flag", "--route", "/flag/{id}", "--route", "/flag2"}); err != nil {
		t.Fatal(err)
	}
	if err := withConfigFile(cmd, path, &file); err != nil {
		t.Fatal(err)
	}
	a := file.Agent
	if a.Node != "from-flag" || !slices.Equal(a.Routes, []string{"/flag/{id}", "/flag2"}) {
		t.Errorf("flags given did not win: node %q routes %v", a.Node, a.Routes)
	}
	if a.Observer.Socket != "/run/file.sock" || a.Observer.RingSize != 77 {
		t.Errorf("the file did not win over defaults: socket %q ring %d", a.Observer.Socket, a.Observer.RingSize)
	}
	if a.Metrics.Listen != "127.0.0.1:9962" {
		t.Errorf("a default neither set: %q", a.Metrics.Listen)
	}
	if err := withConfigFile(cmd, filepath.Join(t.TempDir(), "missing.yaml"), &file); err == nil {
		t.Error("a missing file is not an error")
	}
}
