package policy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/policy/resolve"
)

func hostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }

func egressPolicy(name, selector, body string) string {
	return fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: %s
spec:
  endpointSelector:
    matchLabels: {%s}
%s`, name, selector, body)
}

func hasPolicy(refs []PolicyRef, name string) bool {
	return slices.ContainsFunc(refs, func(r PolicyRef) bool { return r.Name == name })
}

// A cgroup endpoint's egress: allowed by CIDR and port, refused at
// connect() with EPERM otherwise (not a timeout), UDP sends too; every
// decision is a verdict with the deciding policy.
func TestEgressCIDRAndPorts(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	p1, p2, p3, p4 := 18001, 18002, 18100, 18004
	startRole(t, where{netns: ns.Name}, "serve", fmt.Sprintf("%s,%s,%s,%s", hostPort(ns.Addr, p1), hostPort(ns.Addr, p2), hostPort(ns.Addr, p3), hostPort(ns.Addr, p4)))
	cg := testCgroup(t)
	r.writeEndpoints(fmt.Sprintf("endpoints:\n- name: client\n  cgroup: %s\n  labels: {app: client}\n", cg))
	r.writePolicy("client.yaml", egressPolicy("client-egress", "app: client", fmt.Sprintf(`  egress:
  - toCIDRSet:
    - cidr: %s/24
      except: [%s/32]
    toPorts:
    - ports: [{port: "%d", protocol: TCP}, {port: "18090", endPort: 18110, protocol: ANY}]
  - toCIDR: [%s/31]
    toPorts:
    - ports: [{port: "%d", protocol: UDP}]
  - toPorts:
    - ports: [{port: "%d", protocol: TCP}]
`, ns.Addr, ns.HostAddr, p1, ns.Addr, p2, p4)))
	// No rule names ns.Addr as a /32: the kernel finds its identity in the
	// ipcache's trie, where the host's address (the except) is an exact
	// entry, found in the hash map looked up first.
	r.start()
	r.waitRevision(0)
	client := where{cgroup: cg}
	// Only egress is decided: no ingress program on the endpoint's packets.
	links := strings.Join(r.eng.dp.Links(), " ")
	if !strings.Contains(links, "-connect4") || strings.Contains(links, "-skb_ingress") || !strings.Contains(links, "-skb_egress") {
		t.Errorf("links %s: want connect4 and skb_egress, no skb_ingress", links)
	}

	cases := []struct {
		probe, addr, want string
	}{
		{"tcp", hostPort(ns.Addr, p1), resOK},        // allowed port
		{"tcp", hostPort(ns.Addr, p2), resEPERM},     // TCP not allowed on p2
		{"udp", hostPort(ns.Addr, p2), resOK},        // UDP allowed on p2
		{"udp", hostPort(ns.Addr, p1), resEPERM},     // UDP not allowed on p1
		{"tcp", hostPort(ns.Addr, p3), resOK},        // in the ANY range
		{"udp", hostPort(ns.Addr, p3), resOK},        // in the ANY range
		{"tcp", hostPort(ns.HostAddr, p1), resEPERM}, // CIDR except
		{"tcp", hostPort(ns.Addr, p4), resOK},        // an L4-only rule: any remote identity
	}
	for _, c := range cases {
		if got := role(t, client, c.probe, c.addr); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.probe, c.addr, got, c.want)
		}
	}
	// The test process itself is no endpoint: not enforced.
	if got := tcpProbe(hostPort(ns.Addr, p2)); got != resOK {
		t.Errorf("unmanaged process: %s", got)
	}

	v := r.waitVerdict("egress allowed to p1", func(v *Verdict) bool {
		return v.Direction == resolve.Egress && v.Outcome == Forwarded && v.Destination.Addr.Port() == uint16(p1) && v.Proto == resolve.ProtoTCP
	})
	if !hasPolicy(v.AllowedBy, "client-egress") || v.MatchType != resolve.MatchL3L4 || v.Source.Endpoint != "client" || v.Hook != "connect" {
		t.Errorf("allowed verdict: %+v", v)
	}
	if v.Process.PID == 0 || v.Process.CgroupID == 0 {
		t.Errorf("verdict without process: %+v", v.Process)
	}
	if v.Destination.Identity < 1<<24 {
		t.Errorf("destination identity %d is not a CIDR identity", v.Destination.Identity)
	}
	d := r.waitVerdict("egress dropped to p2", func(v *Verdict) bool {
		return v.Direction == resolve.Egress && v.Outcome == Dropped && v.Destination.Addr.Port() == uint16(p2) && v.Proto == resolve.ProtoTCP
	})
	if d.DropReason != PolicyDenied || len(d.DeniedBy) != 0 {
		t.Errorf("dropped verdict: %+v", d)
	}
	hf := hubbleEvent(d)
	if hf.GetVerdict().String() != "DROPPED" || hf.GetDropReasonDesc().String() != "POLICY_DENIED" || hf.GetEventType().GetType() != hubble.MessageTypePolicyVerdict || hf.GetTrafficDirection().String() != "EGRESS" {
		t.Errorf("hubble flow: %v", hf)
	}
	r.waitVerdict("udp sendmsg dropped", func(v *Verdict) bool {
		return v.Outcome == Dropped && v.Proto == resolve.ProtoUDP && v.Hook == "sendmsg"
	})
}

// Labels: a netns endpoint's ingress admits clients by their endpoint
// labels; deny rules win over allows; the server never sees a denied
// connection (TCX on its veth).
func TestIngressLabelsAndDeny(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	port, sshPort, openPort := 18201, 18222, 18233
	startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr, port)+","+hostPort(ns.Addr, sshPort)+","+hostPort(ns.Addr, openPort))
	web, other := testCgroup(t), testCgroup(t)
	r.writeEndpoints(fmt.Sprintf(`endpoints:
- name: db
  netns: %s
  labels: {app: db}
- name: web
  cgroup: %s
  labels: {app: web}
- name: other
  cgroup: %s
  labels: {app: other}
`, ns.Name, web, other))
	r.writePolicy("db.yaml", egressPolicy("db-ingress", "app: db", `  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
  - toPorts: [{ports: [{port: "18233", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "18222", protocol: TCP}]}]
`))
	r.start()
	r.waitRevision(0)
	cases := []struct {
		from where
		addr string
		want string
	}{
		{where{cgroup: web}, hostPort(ns.Addr, port), resOK},
		{where{cgroup: web}, hostPort(ns.Addr, sshPort), resTimeout}, // deny rule beats the L3 allow
		{where{cgroup: other}, hostPort(ns.Addr, port), resTimeout},  // default deny
		{where{}, hostPort(ns.Addr, port), resTimeout},               // the host is not allowed either
		{where{cgroup: other}, hostPort(ns.Addr, openPort), resOK},   // an L4-only rule: any remote identity
		{where{}, hostPort(ns.Addr, openPort), resOK},
	}
	for _, c := range cases {
		if got := role(t, c.from, "tcp", c.addr); got != c.want {
			t.Errorf("from %+v to %s: %s, want %s", c.from, c.addr, got, c.want)
		}
	}
	v := r.waitVerdict("ingress allowed from web", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Outcome == Forwarded && v.Destination.Addr.Port() == uint16(port)
	})
	if v.Source.Endpoint != "web" || v.Destination.Endpoint != "db" || !hasPolicy(v.AllowedBy, "db-ingress") || v.MatchType != resolve.MatchL3Only || v.Hook != "tcx_ingress" {
		t.Errorf("allowed: %+v", v)
	}
	d := r.waitVerdict("deny rule", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Outcome == Dropped && v.Destination.Addr.Port() == uint16(sshPort)
	})
	if d.DropReason != PolicyDeny || !hasPolicy(d.DeniedBy, "db-ingress") || d.Source.Endpoint != "web" {
		t.Errorf("deny: %+v", d)
	}
	hf := hubbleEvent(d)
	if hf.GetDropReasonDesc().String() != "POLICY_DENY" || len(hf.GetIngressDeniedBy()) != 1 || hf.GetIngressDeniedBy()[0].GetName() != "db-ingress" {
		t.Errorf("hubble: %v", hf)
	}
	r.waitVerdict("default deny from other", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Outcome == Dropped && v.DropReason == PolicyDenied && v.Source.Endpoint == "other"
	})
}

// IPv6: connect6 and the TCX programs' IPv6 parsing, by CIDR and by labels.
func TestIPv6(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	p1, p2 := 18801, 18802
	startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr6, p1)+","+hostPort(ns.Addr6, p2))
	client, other := testCgroup(t), testCgroup(t)
	r.writeEndpoints(fmt.Sprintf(`endpoints:
- {name: srv, netns: %s, labels: {app: srv}}
- {name: client, cgroup: %s, labels: {app: client}}
- {name: other, cgroup: %s, labels: {app: other}}
`, ns.Name, client, other))
	// The client's egress (the peer varies), the server's ingress from the client.
	policies := func(peer string) string {
		return egressPolicy("client", "app: client", fmt.Sprintf("  egress:\n  - %s\n    toPorts: [{ports: [{port: \"%d\"}]}]\n", peer, p1)) +
			"---\n" + egressPolicy("srv", "app: srv", "  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n")
	}
	r.writePolicy("p.yaml", policies(fmt.Sprintf("toCIDR: [%s/128]", ns.Addr6)))
	r.start()
	r.waitRevision(0)
	// The netns endpoint's own address is its identity, not the CIDR's:
	// the client's CIDR rule does not select it (identity-based, as in Cilium).
	if got := role(t, where{cgroup: client}, "tcp", hostPort(ns.Addr6, p1)); got != resEPERM {
		t.Errorf("client to an endpoint by CIDR: %s, want eperm", got)
	}
	if got := role(t, where{cgroup: other}, "tcp", hostPort(ns.Addr6, p1)); got != resTimeout {
		t.Errorf("other (egress not enforced) to srv: %s, want timeout at srv's ingress", got)
	}
	r.writePolicy("p.yaml", policies("toEndpoints: [{matchLabels: {app: srv}}]"))
	eventually(t, "client to srv p1 after the reload", func() string { return role(t, where{cgroup: client}, "tcp", hostPort(ns.Addr6, p1)) }, resOK)
	if got := role(t, where{cgroup: client}, "tcp", hostPort(ns.Addr6, p2)); got != resEPERM {
		t.Errorf("client to srv p2: %s, want eperm", got)
	}
	v := r.waitVerdict("v6 ingress at srv", func(v *Verdict) bool {
		return v.Direction == resolve.Ingress && v.Destination.Endpoint == "srv" && v.Outcome == Forwarded && v.Source.Addr.Addr().Is6()
	})
	if v.Source.Endpoint != "client" {
		t.Errorf("v6 verdict: %+v", v)
	}
	if hf := hubbleEvent(v); hf.GetIP().GetIpVersion().String() != "IPv6" {
		t.Errorf("hubble IP %v", hf.GetIP())
	}
}
