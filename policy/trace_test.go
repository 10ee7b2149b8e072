package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sextant/sextant/policy/resolve"
)

const tracePolicies = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  ingressDeny:
  - fromCIDR: [192.0.2.0/24]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
`

func TestTraceFiles(t *testing.T) {
	f := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(f, []byte(tracePolicies), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		from, to TraceLabels
		port     uint16
		allowed  bool
		egress   resolve.Verdict
		ingress  resolve.Verdict
		contains string
	}{
		{"web to db 5432", TraceLabels{"app=web"}, TraceLabels{"app=db"}, 5432, true, resolve.Allowed, resolve.Allowed, "CiliumNetworkPolicy/default/db rule 0 ingress[0]"},
		{"web to db 22: ingress default deny", TraceLabels{"app=web"}, TraceLabels{"app=db"}, 22, false, resolve.Allowed, resolve.DeniedByDefault, "default deny"},
		{"other to db: egress not enforced, ingress denied", TraceLabels{"app=other"}, TraceLabels{"app=db"}, 5432, false, resolve.NotEnforced, resolve.DeniedByDefault, "no policy selects it"},
		{"a denied CIDR to db", TraceLabels{"192.0.2.9"}, TraceLabels{"app=db"}, 5432, false, 0, resolve.DeniedByRule, "ingressDeny[0]"},
		{"web to the world", TraceLabels{"app=web"}, TraceLabels{"reserved:world-ipv4"}, 443, false, resolve.DeniedByDefault, 0, "Final verdict: DENIED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, err := TraceFiles([]string{f}, c.from, c.to, c.port, resolve.ProtoTCP)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Allowed != c.allowed {
				t.Errorf("allowed %v, want %v", tr.Allowed, c.allowed)
			}
			if tr.Egress != nil && tr.Egress.Decision.Verdict != c.egress {
				t.Errorf("egress %s, want %s", tr.Egress.Decision.Verdict, c.egress)
			}
			if tr.Ingress != nil && tr.Ingress.Decision.Verdict != c.ingress {
				t.Errorf("ingress %s, want %s", tr.Ingress.Decision.Verdict, c.ingress)
			}
			if s := tr.String(); !strings.Contains(s, c.contains) {
				t.Errorf("trace lacks %q:\n%s", c.contains, s)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(tracePolicies), 0o644)
	os.WriteFile(bad, []byte(strings.Replace(tracePolicies, "ingressDeny:", "ingressDenied:", 1)), 0o644)
	if err := Validate(good); err != nil {
		t.Errorf("good file: %v", err)
	}
	err := Validate(good, bad)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:9:3: spec.ingressDenied: unknown field") {
		t.Errorf("bad file: %v", err)
	}
	if err := Validate(dir); err == nil {
		t.Error("directory with a bad file validated")
	}
}
