package policy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sextant/sextant/policy/resolve"
)

func denyAllEgress(name string) string {
	return egressPolicy(name, "app: client", "  egress: [{}]\n")
}

// Audit mode, global and per endpoint: the decision is made and
// reported (AUDIT), the traffic passes.
func TestAudit(t *testing.T) {
	for _, global := range []bool{true, false} {
		t.Run(fmt.Sprintf("global=%v", global), func(t *testing.T) {
			r := newRig(t, global)
			ns := newTestNetns(t)
			port := 18301
			startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr, port))
			audited, enforced := testCgroup(t), testCgroup(t)
			r.writeEndpoints(fmt.Sprintf(`endpoints:
- name: audited
  cgroup: %s
  labels: {app: client}
  audit: true
- name: enforced
  cgroup: %s
  labels: {app: client}
`, audited, enforced))
			r.writePolicy("p.yaml", denyAllEgress("deny-egress"))
			r.start()
			r.waitRevision(0)
			if got := role(t, where{cgroup: audited}, "tcp", hostPort(ns.Addr, port)); got != resOK {
				t.Errorf("audited endpoint: %s, want ok", got)
			}
			wantEnforced := resEPERM
			if global {
				wantEnforced = resOK
			}
			if got := role(t, where{cgroup: enforced}, "tcp", hostPort(ns.Addr, port)); got != wantEnforced {
				t.Errorf("other endpoint: %s, want %s", got, wantEnforced)
			}
			v := r.waitVerdict("audit", func(v *Verdict) bool { return v.Outcome == Audited && v.Source.Endpoint == "audited" })
			if v.DropReason != PolicyDenied || v.Direction != resolve.Egress {
				t.Errorf("audit verdict: %+v", v)
			}
			if hf := hubbleEvent(v); hf.GetVerdict().String() != "AUDIT" {
				t.Errorf("hubble verdict %s", hf.GetVerdict())
			}
		})
	}
}

// Hot reload: new connections follow the new revision within the
// watcher's settle time; an established TCP connection keeps working
// (decisions are taken at the SYN, as Cilium's conntrack keeps
// established flows); a rejected document keeps the revision in force.
func TestReload(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	port := 18401
	startRole(t, where{netns: ns.Name}, "echo", hostPort(ns.Addr, port))
	r.writeEndpoints(fmt.Sprintf("endpoints:\n- name: db\n  netns: %s\n  labels: {app: db}\n", ns.Name))
	allowHost := egressPolicy("db", "app: db", "  ingress: [{fromEntities: [host]}]\n")
	r.writePolicy("db.yaml", allowHost)
	r.start()
	rev1 := r.waitRevision(0)

	// The test process is the host: allowed, and it keeps a connection open.
	conn, err := net.DialTimeout("tcp", hostPort(ns.Addr, port), 3*time.Second)
	if err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	echo := func() error {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte("ping\n")); err != nil {
			return err
		}
		line, err := rd.ReadString('\n')
		if err == nil && line != "ping\n" {
			err = fmt.Errorf("echo %q", line)
		}
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}

	// New revision: the host is no longer allowed.
	changed := time.Now()
	r.writePolicy("db.yaml", egressPolicy("db", "app: db", "  ingress: [{fromEntities: [world]}]\n"))
	eventually(t, "new connection after reload", func() string { return dialProbe(hostPort(ns.Addr, port)) }, resTimeout)
	rev2 := r.eng.Revision()
	t.Logf("file change to revision %d in force: %v", rev2, time.Since(changed))
	if err := echo(); err != nil {
		t.Errorf("established connection after reload: %v", err)
	}
	r.waitVerdict("a drop in the new revision", func(v *Verdict) bool {
		return v.Outcome == Dropped && v.Revision > rev1 && v.Direction == resolve.Ingress
	})

	// A bad document: rejected with file:line, revision 2 stays in force.
	r.writePolicy("db.yaml", egressPolicy("db", "app: db", "  ingress: [{fromEntities: [host], toFQDNs: []}]\n"))
	deadline := time.Now().Add(20 * time.Second)
	for len(r.eng.Status().Rejections) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("bad document not rejected within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := r.eng.Status()
	if st.Revision < rev2 {
		t.Errorf("revision %d after a rejected document, want %d or later", st.Revision, rev2)
	}
	rej := st.Rejections[0].Errors[0]
	if !strings.Contains(rej, "db.yaml:8:") || !strings.Contains(rej, "toFQDNs") {
		t.Errorf("rejection %q lacks file:line and field", rej)
	}
	if !strings.Contains(st.String(), "REJECTED") {
		t.Errorf("list does not show the rejection:\n%s", st)
	}
	if got := dialProbe(hostPort(ns.Addr, port)); got != resTimeout {
		t.Errorf("after the rejection: %s, want timeout (revision 2)", got)
	}
	if g := gauge(t, r.eng.Metrics(), "sextant_policy_rejected_files"); g != 1 {
		t.Errorf("rejected files gauge %v", g)
	}
	// Fixing the file applies it.
	r.writePolicy("db.yaml", allowHost)
	eventually(t, "after the fix", func() string { return dialProbe(hostPort(ns.Addr, port)) }, resOK)
	if len(r.eng.Status().Rejections) != 0 {
		t.Errorf("rejection still listed after the fix")
	}
}

func gauge(t *testing.T, c prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return metricValue(mf.GetMetric()[0])
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// gathered is the value of the series of name with exactly labels.
func gathered(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return metricValue(m)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// Enforcement survives the agent: closing the engine leaves the pinned
// programs enforcing, a new engine re-adopts them and goes on with a
// higher revision; Cleanup removes them.
func TestRestartKeepsEnforcement(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	port := 18501
	startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr, port))
	cg := testCgroup(t)
	client := where{cgroup: cg}
	r.writeEndpoints(fmt.Sprintf("endpoints:\n- name: client\n  cgroup: %s\n  labels: {app: client}\n", cg))
	r.writePolicy("p.yaml", denyAllEgress("deny"))
	r.start()
	rev1 := r.waitRevision(0)
	if got := role(t, client, "tcp", hostPort(ns.Addr, port)); got != resEPERM {
		t.Fatalf("before restart: %s", got)
	}
	r.stop()
	if got := role(t, client, "tcp", hostPort(ns.Addr, port)); got != resEPERM {
		t.Errorf("while no agent runs: %s, want eperm", got)
	}
	links, err := os.ReadDir(r.pin + "/links")
	if err != nil || len(links) == 0 {
		t.Fatalf("pinned links: %v %v", links, err)
	}
	r.start()
	if rev2 := r.waitRevision(0); rev2 <= rev1 {
		t.Errorf("revision %d after restart, want > %d", rev2, rev1)
	}
	if got := role(t, client, "tcp", hostPort(ns.Addr, port)); got != resEPERM {
		t.Errorf("after restart: %s", got)
	}
	r.waitVerdict("a verdict after restart", func(v *Verdict) bool { return v.Outcome == Dropped && v.Revision > rev1 })
	r.stop()
	if err := Cleanup(r.pin); err != nil {
		t.Fatal(err)
	}
	if got := role(t, client, "tcp", hostPort(ns.Addr, port)); got != resOK {
		t.Errorf("after cleanup: %s, want ok", got)
	}
	if _, err := os.Stat(r.pin); !os.IsNotExist(err) {
		t.Errorf("pin directory left: %v", err)
	}
}

// An endpoint whose cgroup does not exist yet is reported, and enforced
// once the cgroup appears, without an edit of the endpoints file.
func TestEndpointAppearsLater(t *testing.T) {
	r := newRig(t, false)
	ns := newTestNetns(t)
	port := 18901
	startRole(t, where{netns: ns.Name}, "serve", hostPort(ns.Addr, port))
	cg := testCgroup(t)
	later := cg + "/later"
	r.writeEndpoints(fmt.Sprintf("endpoints:\n- name: client\n  cgroup: %s\n  labels: {app: client}\n", later))
	r.writePolicy("p.yaml", denyAllEgress("deny"))
	r.start()
	rev := r.waitRevision(0)
	if st := r.eng.Status(); !strings.Contains(st.EndpointErrors, "endpoint client") {
		t.Fatalf("missing cgroup not reported: %q", st.EndpointErrors)
	}
	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(later) })
	r.waitRevision(rev)
	if got := role(t, where{cgroup: later}, "tcp", hostPort(ns.Addr, port)); got != resEPERM {
		t.Errorf("after the cgroup appeared: %s, want eperm", got)
	}
	if st := r.eng.Status(); st.EndpointErrors != "" {
		t.Errorf("endpoint error still listed: %s", st.EndpointErrors)
	}
}
