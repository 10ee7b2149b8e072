package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The documented file decodes as documented: every field of
// docs/configuration.md is a real one.
func TestDocumentedFile(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no yaml block in docs/configuration.md")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	var f File
	if err := Decode(path, &f); err != nil {
		t.Fatal(err)
	}
	a, r := f.Agent, f.Relay
	if a.Node != "node-a" || len(a.Routes) != 2 || a.Observer.Listen != "127.0.0.1:4244" || a.Observer.TLS.CA != "/etc/sextant/tls/ca.crt" ||
		a.Observer.RingSize != 16384 || a.StatusInterval != 10*time.Second || a.Metrics.MaxSeries != 2000 ||
		a.Policy.Dir != "/etc/sextant/policies" || a.Policy.Endpoints != "/etc/sextant/endpoints.yaml" || a.Policy.BPFFS != "/sys/fs/bpf/sextant/policy" ||
		len(a.Proxy.Config) != 1 || a.Proxy.Forwarder != "127.0.0.1:15002" || a.Proxy.StateDir != "/var/run/sextant/proxy" {
		t.Errorf("agent section: %+v", a)
	}
	if len(r.Agents) != 2 || r.SortWindow != time.Second || r.Store.Retention != 168*time.Hour ||
		r.Store.QueryUsername != "sextant_query" || r.Store.Query.Socket != "/var/run/sextant/query.sock" || r.OTLP.Protocol != "grpc" {
		t.Errorf("relay section: %+v", r)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown field, with its line", "apiVersion: sextant.io/v1alpha1\nkind: Configuration\nagent:\n  observer:\n    listn: x\n", "line 5: field listn not found"},
		{"wrong kind", "apiVersion: sextant.io/v1alpha1\nkind: Agent\n", `kind "Agent"`},
		{"no apiVersion", "kind: Configuration\n", `apiVersion ""`},
		{"bad duration", "apiVersion: sextant.io/v1alpha1\nkind: Configuration\nrelay:\n  sortWindow: soon\n", "line 4"},
		{"two documents", "apiVersion: sextant.io/v1alpha1\nkind: Configuration\n---\nagent: {}\n", "one document"},
		{"empty", "", "empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			err := Decode(path, &File{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Decode: %v, want an error with %q and the file name", err, c.want)
			}
		})
	}
}

// Fields the file does not name keep what was there (the flags' defaults).
func TestDecodeKeepsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("apiVersion: sextant.io/v1alpha1\nkind: Configuration\nagent:\n  node: from-file\n"), 0o600)
	f := File{}
	f.Agent.Metrics.Listen = "127.0.0.1:9962"
	if err := Decode(path, &f); err != nil {
		t.Fatal(err)
	}
	if f.Agent.Node != "from-file" || f.Agent.Metrics.Listen != "127.0.0.1:9962" {
		t.Errorf("agent: %+v", f.Agent)
	}
}
