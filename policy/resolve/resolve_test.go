package resolve

import (
	"net/netip"
	"testing"

	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/sextant/sextant/policy/ipcache"
	"github.com/sextant/sextant/policy/source"
)

func init() { api.InitEntities("default") }

func lbls(kv ...string) labels.LabelArray {
	var out labels.LabelArray
	for _, s := range kv {
		l := labels.ParseLabel(s)
		if l.Source == labels.LabelSourceUnspec {
			l.Source = labels.LabelSourceK8s
		}
		out = append(out, l)
	}
	out = append(out, labels.NewLabel("io.kubernetes.pod.namespace", "default", "k8s"), labels.NewLabel("io.cilium.k8s.policy.cluster", "default", "k8s"))
	return out.Sort()
}

type world struct {
	alloc  *ipcache.Allocator
	ipc    *ipcache.Cache
	web    ipcache.Identity
	db     ipcache.Identity
	client ipcache.Identity
}

func compile(t *testing.T, doc string) (*Result, *world) {
	t.Helper()
	ps, errs := source.Parse("t.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	w := &world{alloc: ipcache.NewAllocator(), ipc: ipcache.New()}
	w.web = w.alloc.ForLabels(lbls("app=web"))
	w.db = w.alloc.ForLabels(lbls("app=db"))
	w.client = w.alloc.ForLabels(lbls("app=client"))
	for _, p := range CIDRs(ps) {
		w.ipc.Upsert(p, w.alloc.ForPrefix(p).ID)
	}
	res := Compile(Input{
		Revision: 1, Policies: ps, Identities: w.alloc.All(),
		Endpoints: []Endpoint{{ID: 1, Name: "web", Identity: w.web}, {ID: 2, Name: "db", Identity: w.db}, {ID: 3, Name: "client", Identity: w.client}},
	})
	return res, w
}

func (w *world) addr(s string) ipcache.ID {
	id, _ := w.ipc.Lookup(netip.MustParseAddr(s))
	return id
}

const dbIngress = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: client}}]
  - toPorts: [{ports: [{port: "9000", endPort: 9010}]}]
  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "0", protocol: UDP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  - fromCIDR: [10.2.0.0/16]
`

func TestDecide(t *testing.T) {
	res, w := compile(t, dbIngress)
	db := res.Endpoints[2].Tables[Ingress]
	cases := []struct {
		name   string
		remote ipcache.ID
		proto  uint8
		port   uint16
		want   Verdict
		match  MatchType
	}{
		{"web to 5432/TCP: L3-L4 allow", w.web.ID, ProtoTCP, 5432, Allowed, MatchL3L4},
		{"web to 5432/UDP: default deny", w.web.ID, ProtoUDP, 5432, DeniedByDefault, MatchNone},
		{"web to 5433: default deny", w.web.ID, ProtoTCP, 5433, DeniedByDefault, MatchNone},
		{"client any port: L3-only", w.client.ID, ProtoUDP, 1234, Allowed, MatchL3Only},
		{"client 22: deny rule wins over L3 allow", w.client.ID, ProtoTCP, 22, DeniedByRule, MatchL3L4},
		{"anyone to 9005 (range): L4-only", w.web.ID, ProtoTCP, 9005, Allowed, MatchL4Only},
		{"world to 9010 (range end)", w.addr("192.0.2.1"), ProtoUDP, 9010, Allowed, MatchL4Only},
		{"world to 9011: past the range", w.addr("192.0.2.1"), ProtoTCP, 9011, DeniedByDefault, MatchNone},
		{"10.3.0.1 to 80: CIDR set", w.addr("10.3.0.1"), ProtoTCP, 80, Allowed, MatchL3L4},
		{"10.1.0.1 to 80: except", w.addr("10.1.0.1"), ProtoTCP, 80, DeniedByDefault, MatchNone},
		{"10.2.0.1 to 80: deny CIDR wins", w.addr("10.2.0.1"), ProtoTCP, 80, DeniedByRule, MatchL3Only},
		{"10.2.0.1 to 9001: deny wins over L4-only allow", w.addr("10.2.0.1"), ProtoTCP, 9001, DeniedByRule, MatchL3Only},
		{"host UDP any port: L3-proto", ipcache.Host, ProtoUDP, 53, Allowed, MatchL3Proto},
		{"host TCP: default deny", ipcache.Host, ProtoTCP, 53, DeniedByDefault, MatchNone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := db.Decide(c.remote, c.proto, c.port)
			if d.Verdict != c.want || d.MatchType != c.match {
				t.Fatalf("got %s/%s, want %s/%s", d.Verdict, d.MatchType, c.want, c.match)
			}
			if (d.Verdict == Allowed || d.Verdict == DeniedByRule) && len(res.Refs[d.Cookie]) == 0 {
				t.Fatalf("no rule behind the decision")
			}
		})
	}
	if !db.Enforced || res.Endpoints[2].Tables[Egress].Enforced {
		t.Fatalf("db: ingress enforced %v, egress enforced %v; want true, false", db.Enforced, res.Endpoints[2].Tables[Egress].Enforced)
	}
	// Unselected endpoints are not enforced and have no entries.
	web := res.Endpoints[1]
	for _, tb := range web.Tables {
		if tb.Enforced || len(tb.Entries) > 0 {
			t.Fatalf("web is selected by nothing but has %v %d", tb.Enforced, len(tb.Entries))
		}
		if d := tb.Decide(w.db.ID, ProtoTCP, 1); d.Verdict != NotEnforced {
			t.Fatalf("web: %s", d.Verdict)
		}
	}
}

func TestDefaultDenyPerDirection(t *testing.T) {
	cases := []struct {
		name            string
		spec            string
		ingress, egress bool
	}{
		{"ingress rules only", "  ingress: [{fromEntities: [host]}]\n", true, false},
		{"egress rules only", "  egress: [{toEntities: [host]}]\n", false, true},
		{"deny rules count too", "  egressDeny: [{toEntities: [world]}]\n", false, true},
		{"enableDefaultDeny off", "  enableDefaultDeny: {ingress: false}\n  ingress: [{fromEntities: [host]}]\n", false, false},
		{"both", "  ingress: [{}]\n  egress: [{}]\n", true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n" + c.spec
			res, _ := compile(t, doc)
			tb := res.Endpoints[1].Tables
			if tb[Ingress].Enforced != c.ingress || tb[Egress].Enforced != c.egress {
				t.Fatalf("enforced ingress %v egress %v, want %v %v", tb[Ingress].Enforced, tb[Egress].Enforced, c.ingress, c.egress)
			}
		})
	}
}

// A deny rule in a direction without default deny still denies; allows
// there change nothing.
func TestDenyWithoutDefaultDeny(t *testing.T) {
	res, w := compile(t, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {egress: false}
  egress: [{toEndpoints: [{matchLabels: {app: client}}]}]
  egressDeny: [{toEndpoints: [{matchLabels: {app: db}}]}]
`)
	eg := res.Endpoints[1].Tables[Egress]
	if d := eg.Decide(w.db.ID, ProtoTCP, 80); d.Verdict != DeniedByRule {
		t.Fatalf("to db: %s", d.Verdict)
	}
	if d := eg.Decide(ipcache.WorldIPv4, ProtoTCP, 80); d.Verdict != NotEnforced {
		t.Fatalf("to world: %s", d.Verdict)
	}
}

func TestEntities(t *testing.T) {
	res, w := compile(t, `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: p}
specs:
- endpointSelector: {matchLabels: {app: web}}
  egress: [{toEntities: [world]}]
- endpointSelector: {matchLabels: {app: db}}
  egress: [{toEntities: [cluster]}]
- endpointSelector: {matchLabels: {app: client}}
  egress: [{toEntities: [all]}]
`)
	cases := []struct {
		ep     uint32
		remote ipcache.ID
		want   Verdict
	}{
		{1, ipcache.WorldIPv4, Allowed},
		{1, ipcache.WorldIPv6, Allowed},
		{1, ipcache.Host, DeniedByDefault},
		{1, w.db.ID, DeniedByDefault},
		{2, w.web.ID, Allowed},
		{2, ipcache.Host, Allowed},
		{2, ipcache.WorldIPv4, DeniedByDefault},
		{3, ipcache.WorldIPv6, Allowed},
		{3, w.db.ID, Allowed},
	}
	for _, c := range cases {
		if d := res.Endpoints[c.ep].Tables[Egress].Decide(c.remote, ProtoTCP, 443); d.Verdict != c.want {
			t.Errorf("endpoint %d to %d: %s, want %s", c.ep, c.remote, d.Verdict, c.want)
		}
	}
	if d := res.Endpoints[3].Tables[Egress].Decide(w.db.ID, ProtoTCP, 443); d.MatchType != MatchAll {
		t.Errorf("toEntities all: match type %s, want all", d.MatchType)
	}
}

func TestPortPrefixes(t *testing.T) {
	cases := []struct {
		lo, hi uint16
		n      int
	}{
		{80, 80, 1}, {0, 0, 1}, {8080, 8087, 1}, {9000, 9010, 3}, {1, 65535, 16}, {1024, 65535, 6},
	}
	for _, c := range cases {
		keys := portPrefixes(7, portSpec{proto: ProtoTCP, lo: c.lo, hi: c.hi})
		if len(keys) != c.n {
			t.Errorf("%d-%d: %d prefixes, want %d: %v", c.lo, c.hi, len(keys), c.n, keys)
		}
		if c.lo == 0 {
			continue
		}
		// Exactly the range is covered.
		for p := uint32(max(int(c.lo)-3, 0)); p <= min(uint32(c.hi)+3, 65535); p++ {
			in := false
			for _, k := range keys {
				in = in || k.Matches(ProtoTCP, uint16(p))
			}
			if in != (uint16(p) >= c.lo && uint16(p) <= c.hi) {
				t.Fatalf("%d-%d: port %d covered=%v", c.lo, c.hi, p, in)
			}
		}
	}
}
