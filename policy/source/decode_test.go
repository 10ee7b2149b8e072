package source

import (
	"errors"
	"strings"
	"testing"
)

const cnpHeader = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
spec:
  endpointSelector:
    matchLabels:
      app: web
`

// Every unsupported or unknown field is rejected at its own line, with
// its JSON path, never ignored.
func TestParseRejectsFields(t *testing.T) {
	cases := []struct {
		name, doc string
		line      int
		path      string
		reason    string
	}{
		{"unknown top-level field", cnpHeader + "bogus: 1\n", 9, "bogus", "unknown field"},
		{"unknown spec field", cnpHeader + "  ingres:\n  - {}\n", 9, "spec.ingres", "unknown field"},
		{"toFQDNs unsupported", cnpHeader + "  egress:\n  - toFQDNs:\n    - matchName: example.com\n", 10, "spec.egress[0].toFQDNs", "not supported"},
		{"toServices unsupported", cnpHeader + "  egress:\n  - toServices:\n    - k8sService: {serviceName: a}\n", 10, "spec.egress[0].toServices", "not supported"},
		{"icmps unsupported", cnpHeader + "  ingress:\n  - icmps:\n    - fields: [{type: 8}]\n", 10, "spec.ingress[0].icmps", "not supported"},
		{"fromRequires unsupported", cnpHeader + "  ingress:\n  - fromRequires: [a]\n", 10, "spec.ingress[0].fromRequires", "not supported"},
		{"nodeSelector unsupported", "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p}\nspec:\n  nodeSelector: {}\n  ingress: [{}]\n", 5, "spec.nodeSelector", "not supported"},
		{"L7 kafka unknown", cnpHeader + "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\"}]\n      rules:\n        kafka: []\n", 13, "spec.ingress[0].toPorts[0].rules.kafka", "unknown field"},
		{"L7 dns unsupported", cnpHeader + "  egress:\n  - toPorts:\n    - ports: [{port: \"53\"}]\n      rules:\n        dns: []\n", 13, "spec.egress[0].toPorts[0].rules.dns", "not supported"},
		{"terminatingTLS unsupported", cnpHeader + "  ingress:\n  - toPorts:\n    - terminatingTLS: {}\n", 11, "spec.ingress[0].toPorts[0].terminatingTLS", "not supported"},
		{"port as number", cnpHeader + "  ingress:\n  - toPorts:\n    - ports:\n      - port: 80\n", 12, "spec.ingress[0].toPorts[0].ports[0].port", "must be a string"},
		{"named port", cnpHeader + "  ingress:\n  - toPorts:\n    - ports:\n      - port: http\n", 12, "spec.ingress[0].toPorts[0].ports[0]", "named ports"},
		{"SCTP", cnpHeader + "  ingress:\n  - toPorts:\n    - ports:\n      - {port: \"80\", protocol: SCTP}\n", 12, "spec.ingress[0].toPorts[0].ports[0]", "protocol"},
		{"endPort below port", cnpHeader + "  ingress:\n  - toPorts:\n    - ports:\n      - {port: \"80\", endPort: 70}\n", 12, "spec.ingress[0].toPorts[0].ports[0]", "endPort"},
		{"bad CIDR", cnpHeader + "  egress:\n  - toCIDR:\n    - 10.0.0.0/33\n", 11, "spec.egress[0].toCIDR[0]", "invalid CIDR"},
		{"except outside", cnpHeader + "  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      except: [11.0.0.0/16]\n", 12, "spec.egress[0].toCIDRSet[0].except[0]", "not inside"},
		{"unsupported entity", cnpHeader + "  egress:\n  - toEntities: [kube-apiserver]\n", 10, "spec.egress[0].toEntities[0]", "not supported"},
		{"bad path regex", cnpHeader + "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\"}]\n      rules:\n        http:\n        - path: \"/a(\"\n", 14, "spec.ingress[0].toPorts[0].rules.http[0].path", "invalid regular expression"},
		{"bad method regex", cnpHeader + "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\"}]\n      rules:\n        http:\n        - method: \"[\"\n", 14, "spec.ingress[0].toPorts[0].rules.http[0].method", "invalid regular expression"},
		{"header mismatch action", cnpHeader + "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\"}]\n      rules:\n        http:\n        - headerMatches:\n          - {name: a, mismatch: ADD}\n", 15, "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch", "not supported"},
		{"bad selector operator", cnpHeader + "  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - {key: a, operator: Bogus}\n", 11, "spec.ingress[0].fromEndpoints[0]", "invalid label selector"},
		{"ingress not a list", cnpHeader + "  ingress: {}\n", 9, "spec.ingress", "must be a list"},
		{"no name", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n", 3, "metadata", "name is required"},
		{"unknown kind", "apiVersion: cilium.io/v2\nkind: CiliumEnvoyConfig\nmetadata: {name: a}\n", 1, "", "unsupported document"},
		{"status", cnpHeader + "  ingress: [{}]\nstatus: {}\n", 10, "status", "unknown field"},
		{"knp named port", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: http\n", 8, "spec.ingress[0].ports[0].port", "named port"},
		{"knp namespace label", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: a}\n", 9, "spec.ingress[0].from[0].namespaceSelector.matchLabels.team", "not supported"},
		{"knp unknown field", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingres: []\n", 6, "spec.ingres", "unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, errs := Parse("p.yaml", []byte(c.doc))
			if len(errs) == 0 {
				t.Fatalf("accepted: %+v", ps[0].Rules[0])
			}
			var fe *FieldError
			if !errors.As(errs[0], &fe) {
				t.Fatalf("error %v is not a FieldError", errs[0])
			}
			if fe.File != "p.yaml" || fe.Line != c.line || fe.Path != c.path || !strings.Contains(fe.Reason, c.reason) {
				t.Fatalf("got %s (line %d path %q), want line %d path %q reason ~%q", fe, fe.Line, fe.Path, c.line, c.path, c.reason)
			}
			if !strings.HasPrefix(fe.Error(), "p.yaml:") {
				t.Fatalf("message %q does not start with file:line", fe.Error())
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	doc := `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
  namespace: shop
  uid: "1234"
  labels: {team: a}
spec:
  endpointSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front]}
  enableDefaultDeny: {egress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}, {port: "9000", endPort: 9100, protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/api/.*", host: "shop\\.example", headers: ["X-Mode: test"]}
        - {method: POST, path: /pkg.Service/Method}
  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
  - fromEntities: [host, world]
  ingressDeny:
  - fromCIDR: [192.0.2.0/24]
  egressDeny:
  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]
---
# an empty document
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: all}
specs:
- endpointSelector: {}
  egress: [{toEntities: [all]}]
- endpointSelector: {matchLabels: {app: db}}
  ingress: [{}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: knp}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - ipBlock: {cidr: 172.16.0.0/12, except: [172.16.1.0/24]}
    ports:
    - {protocol: TCP, port: 5432}
    - {protocol: UDP, port: 7000, endPort: 7010}
`
	ps, errs := Parse("ok.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(ps) != 3 {
		t.Fatalf("%d policies, want 3", len(ps))
	}
	cnp, ccnp, knp := ps[0], ps[1], ps[2]
	if cnp.ID() != "CiliumNetworkPolicy/shop/web" || cnp.Line != 1 || len(cnp.Rules) != 1 {
		t.Fatalf("cnp %s line %d rules %d", cnp.ID(), cnp.Line, len(cnp.Rules))
	}
	r := cnp.Rules[0]
	// Cilium's namespace scoping: the subject and the peer selectors.
	if r.EndpointSelector.MatchLabels["k8s:io.kubernetes.pod.namespace"] != "shop" {
		t.Fatalf("subject not scoped to its namespace: %v", r.EndpointSelector)
	}
	if r.Ingress[0].FromEndpoints[0].MatchLabels["k8s:io.kubernetes.pod.namespace"] != "shop" {
		t.Fatalf("peer not scoped: %v", r.Ingress[0].FromEndpoints[0])
	}
	if *r.EnableDefaultDeny.Ingress != true || *r.EnableDefaultDeny.Egress != false {
		t.Fatalf("default deny %v/%v", *r.EnableDefaultDeny.Ingress, *r.EnableDefaultDeny.Egress)
	}
	if got := r.Labels.GetModel(); len(got) != 4 {
		t.Fatalf("labels %v", got)
	}
	if ccnp.Namespace != "" || len(ccnp.Rules) != 2 {
		t.Fatalf("ccnp %s rules %d", ccnp.ID(), len(ccnp.Rules))
	}
	kr := knp.Rules[0]
	if knp.Namespace != "default" || len(kr.Ingress) != 2 || len(kr.Egress) != 1 || len(kr.Egress[0].ToEndpoints) != 0 {
		t.Fatalf("knp %s %+v", knp.ID(), kr)
	}
	if kr.EndpointSelector.MatchLabels["k8s:app"] != "db" {
		t.Fatalf("knp subject %v", kr.EndpointSelector)
	}
	if p := kr.Ingress[0].ToPorts[0].Ports; len(p) != 2 || p[0].Port != "5432" || p[1].EndPort != 7010 {
		t.Fatalf("knp ports %+v", p)
	}
}

// A document after a rejected one is still decoded, with its own lines.
func TestParseSeveralDocuments(t *testing.T) {
	doc := cnpHeader + "  bad: 1\n---\n" + cnpHeader + "  ingress: [{}]\n"
	ps, errs := Parse("m.yaml", []byte(doc))
	if len(ps) != 1 || len(errs) != 1 {
		t.Fatalf("%d policies, %d errors", len(ps), len(errs))
	}
	if ps[0].Line != 11 {
		t.Fatalf("second document at line %d, want 11", ps[0].Line)
	}
	// A YAML syntax error is reported at its line in the file, and the
	// documents around it are still decoded.
	doc = cnpHeader + "  ingress: [{}]\n---\nkind: [\n---\n" + cnpHeader + "  ingress: [{}]\n"
	ps, errs = Parse("m.yaml", []byte(doc))
	var fe *FieldError
	if len(ps) != 2 || len(errs) != 1 || !errors.As(errs[0], &fe) || fe.Line < 11 || !strings.Contains(fe.Error(), "m.yaml:") {
		t.Fatalf("%d policies, errors %v", len(ps), errs)
	}
	if ps[1].Line != 13 {
		t.Fatalf("third document at line %d, want 13", ps[1].Line)
	}
}
