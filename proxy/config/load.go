// Package config reads the proxy's inputs — Gateway API HTTPRoute and
// GRPCRoute, sextant's Backend, TrafficPolicy and L7Policy, and
// CiliumEnvoyConfig raw Envoy resources — from YAML files (several
// documents per file), strictly: an unknown or duplicate field, a wrong
// type, a reference to nothing or an invalid Envoy resource is an error
// naming file:line and the field. Kubernetes objects come later through
// the same Set.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Doc is one decoded input with where it came from.
type Doc[T any] struct {
	Origin
	Obj T
}

// Set is every input the proxy serves, validated. Build one with Load or
// Parse; the translation (proxy/xds) reads it and never changes it.
type Set struct {
	HTTPRoutes      []Doc[*gwv1.HTTPRoute]
	GRPCRoutes      []Doc[*gwv1.GRPCRoute]
	Backends        []Doc[*Backend]
	TrafficPolicies []Doc[*TrafficPolicy]
	L7Policies      []Doc[*L7Policy]
	// EnvoyResources are the CiliumEnvoyConfig resources, decoded into
	// their Envoy types and validated (typed configs inside Any too).
	EnvoyResources []Doc[proto.Message]
}

// Load reads files (directories: their *.yaml, *.yml and *.json files)
// and validates the whole set. Any error rejects the set: the caller
// keeps serving its last good one.
func Load(paths ...string) (*Set, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	contents := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		contents[f] = b
	}
	return Parse(contents)
}

// Parse decodes and validates named file contents (file name → bytes).
func Parse(files map[string][]byte) (*Set, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	s := &Set{}
	var errs []error
	for _, name := range names {
		docs, err := splitDocuments(name, files[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range docs {
			if err := s.add(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, s.validate()...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func (s *Set) add(d rawDoc) error {
	var h header
	for _, f := range []struct {
		key string
		dst *string
	}{{"apiVersion", &h.APIVersion}, {"kind", &h.Kind}} {
		for i := 0; i+1 < len(d.Node.Content); i += 2 {
			if d.Node.Content[i].Value == f.key {
				*f.dst = d.Node.Content[i+1].Value
			}
		}
	}
	switch {
	case h.APIVersion == "" || h.Kind == "":
		return d.Errorf("", "apiVersion and kind are required")
	case h.APIVersion == gwv1.GroupVersion.String() && h.Kind == "HTTPRoute":
		return decodeInto(d, &s.HTTPRoutes)
	case h.APIVersion == gwv1.GroupVersion.String() && h.Kind == "GRPCRoute":
		return decodeInto(d, &s.GRPCRoutes)
	case h.APIVersion == APIVersion && h.Kind == "Backend":
		return decodeInto(d, &s.Backends)
	case h.APIVersion == APIVersion && h.Kind == "TrafficPolicy":
		return decodeInto(d, &s.TrafficPolicies)
	case h.APIVersion == APIVersion && h.Kind == "L7Policy":
		return decodeInto(d, &s.L7Policies)
	case h.APIVersion == "cilium.io/v2" && h.Kind == "CiliumEnvoyConfig":
		return s.addEnvoyConfig(d)
	}
	return d.Errorf("kind", "unsupported kind %s %s (supported: HTTPRoute and GRPCRoute %s; Backend, TrafficPolicy, L7Policy %s; CiliumEnvoyConfig cilium.io/v2)",
		h.APIVersion, h.Kind, gwv1.GroupVersion, APIVersion)
}

func decodeInto[T any](d rawDoc, into *[]Doc[*T]) error {
	v := new(T)
	if err := d.decodeStrict(v); err != nil {
		return err
	}
	*into = append(*into, Doc[*T]{Origin: d.Origin, Obj: v})
	return nil
}

// Name of an object for messages and references: "namespace/name".
func Name(namespace, name string) string {
	if namespace == "" {
		namespace = "default"
	}
	return namespace + "/" + name
}

// BackendByName finds a Backend by "namespace/name".
func (s *Set) BackendByName(ref string) (Doc[*Backend], bool) {
	for _, b := range s.Backends {
		if Name(b.Obj.Namespace, b.Obj.Name) == ref {
			return b, true
		}
	}
	return Doc[*Backend]{}, false
}

// Summary is one line per kind, for `sextant proxy validate`.
func (s *Set) Summary() string {
	var parts []string
	for _, c := range []struct {
		n    int
		kind string
	}{
		{len(s.HTTPRoutes), "HTTPRoute"}, {len(s.GRPCRoutes), "GRPCRoute"}, {len(s.Backends), "Backend"},
		{len(s.TrafficPolicies), "TrafficPolicy"}, {len(s.L7Policies), "L7Policy"}, {len(s.EnvoyResources), "Envoy resource"},
	} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.kind))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
