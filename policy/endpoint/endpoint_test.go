package endpoint

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name, doc, err string
	}{
		{"unknown field", "endpoints:\n- name: a\n  cgroup: /a\n  lables: {}\n", "line 4: field lables not found"},
		{"no name", "endpoints:\n- cgroup: /a\n", "e.yaml:2: endpoints[0]: name is required"},
		{"duplicate", "endpoints:\n- {name: a, cgroup: /a}\n- {name: a, cgroup: /b}\n", "e.yaml:3: endpoints[1]: duplicate name"},
		{"both", "endpoints:\n- {name: a, cgroup: /a, netns: n}\n", "exactly one of cgroup and netns"},
		{"neither", "endpoints:\n- {name: a}\n", "exactly one of cgroup and netns"},
		{"bad label value", "endpoints:\n- {name: a, cgroup: /a, labels: {app: \"a b\"}}\n", `label "app" value "a b"`},
		{"bad label key", "endpoints:\n- {name: a, cgroup: /a, labels: {\"a b\": x}}\n", `label key "a b"`},
		{"bad name", "endpoints:\n- {name: \"a/b\", cgroup: /a}\n", "must be a valid label value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("e.yaml", []byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
	specs, err := Parse("e.yaml", []byte("endpoints:\n- {name: web, cgroup: /a, labels: {app: web, container:role: x}}\n- {name: db, netns: db, namespace: shop}\n"))
	if err != nil || len(specs) != 2 || specs[1].Namespace != "shop" || specs[0].Namespace != "default" {
		t.Fatalf("%+v %v", specs, err)
	}
	got := specs[0].labels(map[string]string{LabelExe: "nginx"}).GetModel()
	for _, want := range []string{"k8s:app=web", "container:role=x", "k8s:io.kubernetes.pod.namespace=default", "k8s:io.cilium.k8s.policy.cluster=default", "sextant:sextant.io/endpoint=web", "sextant:sextant.io/exe=nginx"} {
		if !slices.Contains(got, want) {
			t.Errorf("labels %v lack %s", got, want)
		}
	}
}

// Resolving against a cgroup tree of the test's own (a directory tree
// stands in for the cgroup2 mount: only inodes and paths are read).
func TestResolve(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "a/inner", "b", "docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sys := NewSystem(Paths{CgroupRoot: root})
	eps, err := sys.Resolve([]Spec{
		{Name: "a", Cgroup: "/a", Namespace: "default"},
		{Name: "inner", Cgroup: "/a/inner", Namespace: "default"},
		{Name: "c", Cgroup: "/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope", Namespace: "default"},
		{Name: "missing", Cgroup: "/nope", Namespace: "default"},
	})
	if err == nil || !strings.Contains(err.Error(), "endpoint missing") || !strings.Contains(err.Error(), "nested endpoints are not supported") {
		t.Fatalf("error %v", err)
	}
	var names []string
	for _, e := range eps {
		names = append(names, e.Name)
		if e.CgroupID == 0 {
			t.Errorf("%s: no cgroup id", e.Name)
		}
	}
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Fatalf("resolved %v, want [a c]", names)
	}
	if !slices.Contains(eps[1].Labels.GetModel(), "sextant:sextant.io/container=0123456789ab") {
		t.Errorf("container label missing: %v", eps[1].Labels.GetModel())
	}
}
