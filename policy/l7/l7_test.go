package l7

import (
	"testing"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/policy/source"
)

func TestEvaluate(t *testing.T) {
	p := &source.Policy{Kind: source.KindCNP, Name: "api", Namespace: "default"}
	open := &source.Policy{Kind: source.KindCNP, Name: "open", Namespace: "default"}
	rule := resolve.L7Rule{Proto: resolve.ProtoTCP, Lo: 8080, Hi: 8080, Ref: resolve.Ref{Policy: p}, HTTP: api.PortRulesHTTP{
		{Method: "GET", Path: "/api/v[0-9]+/.*", Host: "shop\\.example(:8080)?"},
		{Method: "POST", Path: "/pkg.Service/Method"},
		{Method: "PUT", Path: "/upload", Headers: []string{"X-Mode: test", "X-Trace"}},
		{Method: "DELETE", Headers: []string{"Authorization"}},
	}}
	allowAll := resolve.L7Rule{Proto: resolve.ProtoTCP, Lo: 8080, Hi: 8080, Ref: resolve.Ref{Policy: open}}
	cases := []struct {
		name  string
		f     flow.Flow
		rules []resolve.L7Rule
		want  Outcome
	}{
		{"path and host match", flow.Flow{Method: "GET", Path: "/api/v2/items", Authority: "shop.example"}, []resolve.L7Rule{rule}, Allowed},
		{"regex is anchored", flow.Flow{Method: "GET", Path: "/x/api/v2/items", Authority: "shop.example"}, []resolve.L7Rule{rule}, Denied},
		{"wrong host", flow.Flow{Method: "GET", Path: "/api/v2/items", Authority: "evil.example"}, []resolve.L7Rule{rule}, Denied},
		{"method is a regex, anchored", flow.Flow{Method: "GETX", Path: "/api/v1/a", Authority: "shop.example"}, []resolve.L7Rule{rule}, Denied},
		{"gRPC method", flow.Flow{Method: "POST", Path: "/pkg.Service/Method"}, []resolve.L7Rule{rule}, Allowed},
		{"other gRPC method", flow.Flow{Method: "POST", Path: "/pkg.Service/Other"}, []resolve.L7Rule{rule}, Denied},
		{"headers present and exact", flow.Flow{Method: "PUT", Path: "/upload", RequestHeaders: []flow.Header{{Name: "x-mode", Value: "test"}, {Name: "x-trace", Value: "1"}}}, []resolve.L7Rule{rule}, Allowed},
		{"header value differs", flow.Flow{Method: "PUT", Path: "/upload", RequestHeaders: []flow.Header{{Name: "x-mode", Value: "prod"}, {Name: "x-trace", Value: "1"}}}, []resolve.L7Rule{rule}, Denied},
		{"header missing", flow.Flow{Method: "PUT", Path: "/upload", RequestHeaders: []flow.Header{{Name: "x-mode", Value: "test"}}}, []resolve.L7Rule{rule}, Denied},
		{"secret header: unknown, not guessed", flow.Flow{Method: "DELETE", Path: "/a"}, []resolve.L7Rule{rule}, Unknown},
		{"path not decoded: unknown", flow.Flow{Method: "GET", Authority: "shop.example", Unknown: []string{"path"}}, []resolve.L7Rule{rule}, Unknown},
		{"an L4 rule without HTTP rules allows everything", flow.Flow{Method: "DELETE", Path: "/x"}, []resolve.L7Rule{rule, allowAll}, Allowed},
		{"no rules", flow.Flow{Method: "GET", Path: "/"}, nil, Allowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Evaluate(&c.f, c.rules)
			if res.Outcome != c.want {
				t.Fatalf("%s, want %s", res.Outcome, c.want)
			}
			if c.want == Denied && (len(res.DeniedBy) != 1 || res.DeniedBy[0].Policy != p) {
				t.Fatalf("denied by %v", res.DeniedBy)
			}
		})
	}
}

func TestApplies(t *testing.T) {
	r := resolve.L7Rule{Remote: 300, Proto: resolve.ProtoTCP, Lo: 8000, Hi: 8010}
	for _, c := range []struct {
		remote uint32
		port   uint16
		want   bool
	}{{300, 8005, true}, {301, 8005, false}, {300, 8011, false}, {300, 8000, true}} {
		if got := Applies(r, c.remote, c.port); got != c.want {
			t.Errorf("remote %d port %d: %v", c.remote, c.port, got)
		}
	}
	if !Applies(resolve.L7Rule{}, 7, 1) {
		t.Error("any remote, any port")
	}
}
