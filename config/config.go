// Package config reads sextant's configuration file: one YAML document,
// Kubernetes style, with a section per daemon. Flags given on the command
// line override it (cmd/sextant). docs/configuration.md documents every
// field.
//
//	apiVersion: sextant.io/v1alpha1
//	kind: Configuration
//	agent:
//	  node: node-a
//	  routes: ["/api/users/{id}"]
//	relay:
//	  agents: ["unix:///var/run/sextant/observer.sock"]
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/sextant/sextant/agent"
	"github.com/sextant/sextant/relay"
)

// APIVersion and Kind name the format.
const (
	APIVersion = "sextant.io/v1alpha1"
	Kind       = "Configuration"
)

// File is the configuration file.
type File struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Agent      agent.Config `yaml:"agent"`
	Relay      relay.Config `yaml:"relay"`
}

// Decode reads the file at path onto f: fields the file names replace
// those of f, the others keep their values (the flags' defaults). A field
// the format does not know is an error with its line, never ignored.
func Decode(path string, f *File) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: empty", path)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: one document expected, found another (line %d)", path, extra.Line)
	}
	if f.APIVersion != APIVersion || f.Kind != Kind {
		return fmt.Errorf("%s: apiVersion %q, kind %q: want apiVersion %s, kind %s", path, f.APIVersion, f.Kind, APIVersion, Kind)
	}
	return nil
}
