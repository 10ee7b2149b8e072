package policy

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	promexp "github.com/sextant/sextant/exporters/prometheus"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/testbed"
)

// Host-local endpoints (cgroups on the host's loopback) with real
// clients and servers: nghttpd serving h2c to curl and nghttp, a grpc-go
// server and client. The server's endpoint is known to local clients by
// its bound socket (post_bind), and its clients by their flows
// (cgroup_skb egress), not by the shared 127.0.0.1.
func TestRealPeersOnLoopback(t *testing.T) {
	for _, tool := range []string{"nghttpd", "nghttp", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbed.Missing(t, "%s not installed (apt-get install -y nghttp2-client nghttp2-server curl)", tool)
		}
	}
	r := newRig(t, false)
	web, grpcSrv, client, other := testCgroup(t), testCgroup(t), testCgroup(t), testCgroup(t)
	httpPort, grpcPort := testbed.FreePort(t), testbed.FreePort(t)
	r.writeEndpoints(fmt.Sprintf(`endpoints:
- {name: web, cgroup: %s, labels: {app: web}}
- {name: grpc, cgroup: %s, labels: {app: grpc}}
- {name: client, cgroup: %s, labels: {app: client}}
- {name: other, cgroup: %s, labels: {app: other}}
`, web, grpcSrv, client, other))
	// Servers: ingress from the client only, on their port. The client:
	// egress to the two servers only (by their endpoint labels).
	r.writePolicy("servers.yaml", fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "%d", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: grpc}
spec:
  endpointSelector: {matchLabels: {app: grpc}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "%d", protocol: TCP}]
      rules:
        http: [{method: POST, path: /grpc.health.v1.Health/Check}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}, {matchLabels: {app: grpc}}]
`, httpPort, grpcPort))
	r.start()
	r.waitRevision(0)
	webProc := start(t, where{cgroup: web}, fmt.Sprintf("127.0.0.1:%d", httpPort), "nghttpd", "--no-tls", "-a", "127.0.0.1", fmt.Sprint(httpPort))
	startRole(t, where{cgroup: grpcSrv}, "grpc-server", fmt.Sprintf("127.0.0.1:%d", grpcPort))
	url := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)

	run := func(w where, name string, args ...string) (string, error) {
		out, err := command(w, name, args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	curl := []string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", "--max-time", "3", url}
	if out, err := run(where{cgroup: client}, "curl", curl...); err != nil || out != "404" {
		// nghttpd has no document root here: 404 is its answer.
		t.Errorf("curl from client: %q %v, want an HTTP answer", out, err)
	}
	if out, err := run(where{cgroup: other}, "curl", curl...); err == nil {
		t.Errorf("curl from other: %q, want a timeout (ingress drop)", out)
	}
	if out, err := run(where{cgroup: client}, "nghttp", "-t", "3", url); err != nil && !strings.Contains(out, "404") {
		t.Errorf("nghttp from client: %q %v", out, err)
	}
	if out := role(t, where{cgroup: client}, "grpc", fmt.Sprintf("127.0.0.1:%d", grpcPort)); out != "serving" {
		t.Errorf("grpc from client: %q", out)
	}
	if out := role(t, where{cgroup: other}, "grpc", fmt.Sprintf("127.0.0.1:%d", grpcPort)); !strings.Contains(out, "error") {
		t.Errorf("grpc from other: %q, want an error", out)
	}
	// The client's egress is enforced: anything else is refused at connect.
	if out, err := run(where{cgroup: client}, "curl", "-s", "--max-time", "3", fmt.Sprintf("http://127.0.0.1:%d/", testbed.FreePort(t))); err == nil {
		t.Errorf("curl to an unlisted local port: %q", out)
	}

	v := r.waitVerdict("web ingress from client", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Destination.Endpoint == "web" && v.Outcome == Forwarded
	})
	if v.Source.Endpoint != "client" || v.MatchType != resolve.MatchL3L4 || !hasPolicy(v.AllowedBy, "web") {
		t.Errorf("web ingress verdict: %+v", v)
	}
	e := r.waitVerdict("client egress to web", func(v *Verdict) bool {
		return v.Direction == resolve.Egress && v.Source.Endpoint == "client" && v.Destination.Endpoint == "web" && v.Outcome == Forwarded
	})
	if e.MatchType != resolve.MatchL3Only || !hasPolicy(e.AllowedBy, "client") {
		t.Errorf("client egress verdict: %+v", e)
	}
	r.waitVerdict("grpc ingress drop from other", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Destination.Endpoint == "grpc" && v.Source.Endpoint == "other" && v.Outcome == Dropped
	})
	r.waitVerdict("client egress refused", func(v *Verdict) bool {
		return v.Direction == resolve.Egress && v.Source.Endpoint == "client" && v.Outcome == Dropped && v.DropReason == PolicyDenied
	})

	// L7 audit on the gRPC server's observed requests: the connection the
	// client made (its port from the verdict), a method the rules allow
	// and one they do not.
	g := r.waitVerdict("grpc ingress from client", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Destination.Endpoint == "grpc" && v.Source.Endpoint == "client" && v.Outcome == Forwarded
	})
	var st syscall.Stat_t
	if err := syscall.Stat(grpcSrv, &st); err != nil {
		t.Fatal(err)
	}
	req := func(path string) *flow.Flow {
		return &flow.Flow{
			Time: time.Now(), Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Path: path,
			Source: g.Source.Addr, Destination: g.Destination.Addr,
			Process: flow.Process{PID: 1, CgroupID: st.Ino},
		}
	}
	allowed := req("/grpc.health.v1.Health/Check")
	r.eng.Enrich(allowed)
	if p := allowed.Policy; p == nil || p.Verdict != flow.VerdictForwarded || p.Hook != "" || !hasPolicy(p.IngressAllowedBy, "grpc") {
		t.Errorf("allowed method: policy %+v, want FORWARDED with the connection's allowed_by", p)
	}
	denied := req("/grpc.health.v1.Health/Watch")
	r.eng.Enrich(denied)
	a := denied.Policy
	if a == nil || a.Verdict != flow.VerdictAudit || a.Hook != flow.HookL7Audit {
		t.Fatalf("a method no rule allows was not audited: %+v", a)
	}
	if !hasPolicy(a.IngressDeniedBy, "grpc") || a.Source.Identity != g.Source.Identity || a.Destination.Name != "grpc" {
		t.Errorf("L7 audit policy: %+v", a)
	}
	if hf := hubble.Request(denied, "l7"); hf.GetVerdict().String() != "AUDIT" || hf.GetL7().GetHttp().GetUrl() != "/grpc.health.v1.Health/Watch" ||
		len(hf.GetIngressDeniedBy()) != 1 || hf.GetDestination().GetIdentity() != g.Destination.Identity {
		t.Errorf("L7 hubble flow: %v", hf)
	}

	// The bound socket names its endpoint while it lives (post_bind), and
	// is forgotten when it is released (sock_release): a later server on
	// that port must not inherit web's identity.
	webAddr := netip.MustParseAddr("127.0.0.1")
	if id := r.eng.dp.ServerIdentity(r.eng.hostNetns, webAddr, uint16(httpPort), resolve.ProtoTCP); id != v.Destination.Identity {
		t.Errorf("listening web server: identity %d, want web's %d", id, v.Destination.Identity)
	}
	syscall.Kill(-webProc.cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for r.eng.dp.ServerIdentity(r.eng.hostNetns, webAddr, uint16(httpPort), resolve.ProtoTCP) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the web server exited, its bound socket still names it after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UDP: a netns server's ingress admits a client endpoint's datagrams, and
// the replies reach a client whose own ingress is default deny (replies
// are recognised by the flow the client started); entities host and
// world; default deny per direction (egress-only policy leaves ingress open).
func TestUDPRepliesAndEntities(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	port := 18601
	startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr, port))
	client, egressOnly := testCgroup(t), testCgroup(t)
	r.writeEndpoints(fmt.Sprintf(`endpoints:
- {name: srv, netns: %s, labels: {app: srv}}
- {name: client, cgroup: %s, labels: {app: client}}
- {name: egress-only, cgroup: %s, labels: {app: eo}}
`, ns.Name, client, egressOnly))
	r.writePolicy("p.yaml", `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: srv}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "18601", protocol: UDP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "18601", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client}
spec:
  endpointSelector: {matchLabels: {app: client}}
  ingress: [{}]
  egress: [{toEndpoints: [{matchLabels: {app: srv}}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: eo}
spec:
  endpointSelector: {matchLabels: {app: eo}}
  egress: [{toEntities: [world]}]
`)
	r.start()
	r.waitRevision(0)
	addr := hostPort(ns.Addr, port)
	cases := []struct {
		name        string
		from        where
		probe, want string
	}{
		{"client UDP, reply through default-deny ingress", where{cgroup: client}, "udp", resOK},
		{"client TCP: srv admits TCP from the host only", where{cgroup: client}, "tcp", resTimeout},
		{"host TCP (entity host)", where{}, "tcp", resOK},
		{"host UDP", where{}, "udp", resTimeout},
		{"egress-only to a local endpoint: not world", where{cgroup: egressOnly}, "udp", resEPERM},
	}
	for _, c := range cases {
		if got := role(t, c.from, c.probe, addr); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// egress-only's ingress is not enforced: the host reaches its server.
	eoPort := testbed.FreePort(t)
	startRole(t, where{cgroup: egressOnly}, "serve", fmt.Sprintf("127.0.0.1:%d", eoPort))
	if got := tcpProbe(fmt.Sprintf("127.0.0.1:%d", eoPort)); got != resOK {
		t.Errorf("into the egress-only endpoint: %s", got)
	}
	v := r.waitVerdict("udp ingress at srv", func(v *Verdict) bool {
		return v.Proto == resolve.ProtoUDP && v.Direction == resolve.Ingress && v.Destination.Endpoint == "srv" && v.Outcome == Forwarded
	})
	if v.Source.Endpoint != "client" || v.Hook != "tcx_ingress" {
		t.Errorf("udp verdict: %+v", v)
	}
	r.waitVerdict("world egress refused to a local endpoint", func(v *Verdict) bool {
		return v.Source.Endpoint == "egress-only" && v.Outcome == Dropped && v.Destination.Endpoint == "srv"
	})

	// UDP verdicts are aggregated per socket and peer, one record a
	// second: 5 refused datagrams are one record, the sixth, 1.2 s later,
	// is a record that counts the 4 suppressed ones too.
	if got := role(t, where{cgroup: egressOnly}, "udp-burst", hostPort(ns.Addr, port+1)); got != "6" {
		t.Fatalf("refused datagrams: %s, want 6", got)
	}
	var first, second Verdict
	first = r.waitVerdict("first record of the burst", func(v *Verdict) bool {
		return v.Source.Endpoint == "egress-only" && v.Hook == "sendmsg" && v.Destination.Addr.Port() == uint16(port+1)
	})
	second = r.waitVerdict("second record of the burst", func(v *Verdict) bool {
		return v.Source.Endpoint == "egress-only" && v.Hook == "sendmsg" && v.Destination.Addr.Port() == uint16(port+1) && v.Time.After(first.Time)
	})
	if first.Count != 1 || second.Count != 5 {
		t.Errorf("burst records count %d and %d, want 1 and 5", first.Count, second.Count)
	}
	// The metric (the Prometheus sink, fed the verdicts' flows) counts
	// decisions, not records.
	reg := prometheus.NewRegistry()
	exp, err := promexp.New(promexp.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	for i := range r.seen {
		exp.Export(r.seen[i].Flow())
	}
	r.mu.Unlock()
	exp.Close(context.Background())
	if n := gathered(t, reg, "sextant_policy_verdicts_total", map[string]string{"direction": "egress", "verdict": "DROPPED", "match_type": "none", "policy": ""}); n < 6 {
		t.Errorf("sextant_policy_verdicts_total{egress,DROPPED,none} = %v, want >= 6", n)
	}
}
