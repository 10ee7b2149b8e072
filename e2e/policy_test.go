package e2e

// Policy through the whole pipeline: a real `sextant agent` enforces
// CiliumNetworkPolicy on endpoints this test creates (a cgroup of
// clients, a network namespace behind a veth pair with the servers), and
// every decision reaches the stock hubble CLI, on the agent and through a
// relay, with Cilium's fields; a rejected document keeps the revision in
// force and says so in the log, on /metrics and in `sextant policy
// list`; enforcement survives the agent (pinned) until `--cleanup`.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/policy"
	"github.com/sextant/sextant/policy/datapath"
	"github.com/sextant/sextant/testbed"
)

func init() {
	peerRoles["policy-server"] = runPolicyServer
	peerRoles["policy-probe"] = runPolicyProbe
}

// policyServerArgs: TCP servers that write "ok\n" and close, UDP echoes
// answering "ok", on each address; h2c on HTTP.
type policyServerArgs struct {
	Addrs []string `json:"addrs"`
	HTTP  string   `json:"http"`
}

func runPolicyServer(raw []byte) error {
	var a policyServerArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	if err := testbed.ServeOK(a.Addrs); err != nil {
		return err
	}
	if a.HTTP != "" {
		l, err := net.Listen("tcp", a.HTTP)
		if err != nil {
			return err
		}
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		srv := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })}
		go srv.Serve(l)
	}
	fmt.Println("READY")
	untilStdinCloses()
	return nil
}

type policyProbeArgs struct {
	Proto, Addr string
}

func runPolicyProbe(raw []byte) error {
	var a policyProbeArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	res := testbed.ProbeUDP(a.Addr)
	if a.Proto == "tcp" {
		res = testbed.ProbeTCP(a.Addr)
	}
	b, _ := json.Marshal(map[string]string{"result": res})
	fmt.Printf("RESULT %s\n", b)
	return nil
}

// policyRig is the test's endpoints and policy files.
type policyRig struct {
	t         *testing.T
	cg        *testbed.Cgroup
	ns        *testbed.Netns
	dir       string // --policy-dir
	endpoints string // --policy-endpoints
	bpffs     string // --policy-bpffs
	bin       string
}

func newPolicyRig(t *testing.T) *policyRig {
	t.Helper()
	testbed.RequireRoot(t)
	if err := datapath.CheckKernel(); err != nil {
		testbed.Missing(t, "policy datapath: %v", err)
	}
	r := &policyRig{t: t, cg: testbed.NewCgroup(t, "policy"), ns: testbed.NewNetns(t), dir: t.TempDir(), bin: testbed.Sextant(t),
		bpffs: filepath.Join("/sys/fs/bpf", fmt.Sprintf("sextant-e2e-policy-%d", os.Getpid()))}
	r.endpoints = filepath.Join(t.TempDir(), "endpoints.yaml")
	t.Cleanup(func() {
		if _, err := os.Stat(r.bpffs); err == nil {
			exec.Command(r.bin, "agent", "--cleanup", "--policy-bpffs", r.bpffs).Run()
		}
	})
	return r
}

func (r *policyRig) write(path, content string) { testbed.WriteFile(r.t, path, content) }

// agent starts `sextant agent` with the rig's policy, scoped to its
// cgroup, on a private socket; extra flags are appended.
func (r *policyRig) agent(name string, extra ...string) (*testbed.Daemon, string, string) {
	r.t.Helper()
	sock := filepath.Join(r.t.TempDir(), "observer.sock")
	metrics := testbed.FreeAddr(r.t)
	args := append([]string{"agent", "--node", name, "--cgroup", r.cg.Path, "--socket", sock, "--metrics-listen", metrics,
		"--policy-dir", r.dir, "--policy-endpoints", r.endpoints, "--policy-bpffs", r.bpffs}, extra...)
	d := testbed.StartDaemon(r.t, name, r.bin, args...)
	d.Await("agent serving /metrics", 90*time.Second, func() error {
		_, err := testbed.Scrape("http://" + metrics + "/metrics")
		return err
	})
	return d, sock, metrics
}

// probe runs a client in the endpoint's cgroup.
func (r *policyRig) probe(proto, addr string) string {
	r.t.Helper()
	p := startInCgroup(r.t, r.cg, "policy-probe", "probe "+proto+" "+addr, policyProbeArgs{Proto: proto, Addr: addr})
	var res struct{ Result string }
	p.expectJSON(&res, 30*time.Second)
	p.waitExit(10 * time.Second)
	return res.Result
}

// policyList is `sextant policy list -o json` of the agent at sock.
func (r *policyRig) policyList(sock string) policy.Status {
	r.t.Helper()
	var st policy.Status
	if err := json.Unmarshal(run(r.t, r.bin, "policy", "list", "-o", "json", "--server", "unix://"+sock), &st); err != nil {
		r.t.Fatal(err)
	}
	return st
}

func identityOf(t *testing.T, st policy.Status, endpoint string) uint32 {
	t.Helper()
	for _, e := range st.Endpoints {
		if e.Name == endpoint {
			return e.Identity
		}
	}
	t.Fatalf("no endpoint %s in %+v", endpoint, st)
	return 0
}

// observe runs `hubble observe --all -o json` with filters and returns
// the flows.
func observe(t *testing.T, sock string, filters ...string) []*flowpb.Flow {
	t.Helper()
	args := append([]string{"observe", "--server", "unix://" + sock, "--all", "-o", "json"}, filters...)
	var out []*flowpb.Flow
	for _, e := range parseEvents(t, run(t, testbed.Hubble(t), args...)) {
		if f := e.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
	return out
}

func hasRef(ps []*flowpb.Policy, name string) bool {
	for _, p := range ps {
		if p.GetName() == name && p.GetKind() != "" && p.GetRevision() != 0 {
			return true
		}
	}
	return false
}

func TestPolicyThroughHubble(t *testing.T) {
	r := newPolicyRig(t)
	ns := r.ns
	const (
		allowedPort = 18701 // from the clients, TCP and UDP
		denyPort    = 18702 // an ingressDeny rule: POLICY_DENY
		closedPort  = 18703 // no rule: default deny, POLICY_DENIED
		httpPort    = 18780 // h2c, with an egress L7 rule: GET /allowed…
	)
	srvArgs := policyServerArgs{HTTP: net.JoinHostPort(ns.Addr, strconv.Itoa(httpPort))}
	for _, p := range []int{allowedPort, denyPort, closedPort} {
		srvArgs.Addrs = append(srvArgs.Addrs, net.JoinHostPort(ns.Addr, strconv.Itoa(p)))
	}
	exe, _ := os.Executable()
	raw, _ := json.Marshal(srvArgs)
	cmd := ns.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"=policy-server", peerArgsEnv+"="+string(raw))
	srv := startProc(t, "servers in "+ns.Name, cmd)
	srv.expect("READY", 30*time.Second)
	defer srv.stop(10 * time.Second)

	r.write(r.endpoints, fmt.Sprintf(`endpoints:
- {name: client, cgroup: %s, labels: {app: client}}
- {name: server, netns: %s, labels: {app: server}}
`, r.cg.Path, ns.Name))
	r.write(filepath.Join(r.dir, "server.yaml"), fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-ingress}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "%d", protocol: ANY}, {port: "%d", protocol: TCP}, {port: "%d", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "%d", protocol: TCP}]}]
`, allowedPort, denyPort, httpPort, denyPort))
	r.write(filepath.Join(r.dir, "client.yaml"), fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts: [{ports: [{port: "%d", protocol: ANY}, {port: "%d", protocol: TCP}, {port: "%d", protocol: ANY}]}]
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts:
    - ports: [{port: "%d", protocol: TCP}]
      rules: {http: [{method: GET, path: "/allowed.*"}]}
`, allowedPort, denyPort, closedPort, httpPort))

	agent, sock, metrics := r.agent("policy-node")
	if st := r.policyList(sock); st.Revision == 0 || len(st.Policies) != 2 || len(st.Endpoints) != 2 {
		t.Fatalf("policy list: %+v", st)
	}

	addr := func(port int) string { return net.JoinHostPort(ns.Addr, strconv.Itoa(port)) }
	for _, c := range []struct {
		proto, addr, want string
	}{
		{"tcp", addr(allowedPort), testbed.ProbeOK},
		{"udp", addr(allowedPort), testbed.ProbeOK},
		{"tcp", addr(denyPort), testbed.ProbeTimeout},   // SYN dropped by the deny rule at the server's TCX ingress
		{"udp", addr(closedPort), testbed.ProbeTimeout}, // allowed out, default deny in
		{"tcp", addr(closedPort), testbed.ProbeTimeout}, // likewise
		{"tcp", "192.0.2.1:9", testbed.ProbeEPERM},      // egress to the world: refused at connect()
		{"udp", "192.0.2.1:53", testbed.ProbeEPERM},     // refused at sendto()
		{"udp", addr(denyPort), testbed.ProbeEPERM},     // the client's egress allows TCP only there
	} {
		if got := r.probe(c.proto, c.addr); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.proto, c.addr, got, c.want)
		}
	}
	// h2c through the egress L7 rule: the client's flows carry the
	// policies of both directions; /denied is AUDIT (L7 audit, no proxy).
	for _, path := range []string{"/allowed/1", "/denied/1"} {
		out, err := r.cg.Command("curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "http://"+addr(httpPort)+path).CombinedOutput()
		if err != nil || string(out) != "200" {
			t.Fatalf("curl %s: %v %s", path, err, out)
		}
	}

	// Identities after the workload ran: the client's cgroup gained its
	// automatic sextant.io/exe label with its first process (a new label
	// set, a new identity: verdicts before it carry the old one).
	st := r.policyList(sock)
	clientID, serverID := identityOf(t, st, "client"), identityOf(t, st, "server")

	// Every decision on the agent, through the stock hubble CLI.
	var dropped []*flowpb.Flow
	agent.Await("verdicts in hubble observe --verdict DROPPED", 30*time.Second, func() error {
		dropped = observe(t, sock, "--verdict", "DROPPED")
		if len(dropped) < 5 {
			return fmt.Errorf("%d dropped", len(dropped))
		}
		return nil
	})
	var denyRule, defaultEgress, defaultIngressUDP bool
	for _, f := range dropped {
		if f.GetVerdict() != flowpb.Verdict_DROPPED || f.GetEventType().GetType() != 5 {
			t.Errorf("--verdict DROPPED gave %v", f)
		}
		dport := f.GetL4().GetTCP().GetDestinationPort() + f.GetL4().GetUDP().GetDestinationPort()
		switch {
		case f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENY && dport == denyPort && f.GetL4().GetTCP() != nil:
			denyRule = f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && hasRef(f.GetIngressDeniedBy(), "server-ingress") &&
				f.GetSource().GetPodName() == "client" && f.GetDestination().GetIdentity() == serverID && f.GetDestination().GetPodName() == "server"
		case f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENIED && f.GetIP().GetDestination() == "192.0.2.1" && f.GetL4().GetTCP() != nil:
			defaultEgress = f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && len(f.GetEgressDeniedBy()) == 0 &&
				f.GetSource().GetIdentity() == clientID && f.GetDestination().GetIdentity() == 9 // world-ipv4 (after the first probes)
		case f.GetDropReasonDesc() == flowpb.DropReason_POLICY_DENIED && dport == closedPort && f.GetL4().GetUDP() != nil:
			defaultIngressUDP = f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS
		}
	}
	if !denyRule || !defaultEgress || !defaultIngressUDP {
		t.Errorf("dropped verdicts: deny rule %v, default-deny egress %v, default-deny UDP ingress %v:\n%v", denyRule, defaultEgress, defaultIngressUDP, dropped)
	}
	pv := observe(t, sock, "-t", "policy-verdict")
	var fwdTCP, fwdUDP bool
	for _, f := range pv {
		if f.GetEventType().GetType() != 5 {
			t.Errorf("-t policy-verdict gave event type %d", f.GetEventType().GetType())
		}
		if f.GetVerdict() == flowpb.Verdict_FORWARDED && f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS && hasRef(f.GetIngressAllowedBy(), "server-ingress") {
			fwdTCP = fwdTCP || f.GetL4().GetTCP().GetDestinationPort() == allowedPort
			fwdUDP = fwdUDP || f.GetL4().GetUDP().GetDestinationPort() == allowedPort
		}
	}
	if !fwdTCP || !fwdUDP {
		t.Errorf("-t policy-verdict: forwarded TCP %v, UDP %v", fwdTCP, fwdUDP)
	}
	for _, f := range observe(t, sock, "--drop-reason-desc", "POLICY_DENIED") {
		if f.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED || f.GetVerdict() != flowpb.Verdict_DROPPED {
			t.Errorf("--drop-reason-desc POLICY_DENIED gave %v", f)
		}
	}
	from := observe(t, sock, "--from-identity", fmt.Sprint(clientID))
	to := observe(t, sock, "--to-identity", fmt.Sprint(serverID))
	if len(from) == 0 || len(to) == 0 {
		t.Errorf("identity filters: %d from %d, %d to %d", len(from), clientID, len(to), serverID)
	}
	for _, f := range from {
		if f.GetSource().GetIdentity() != clientID {
			t.Errorf("--from-identity %d gave source %v", clientID, f.GetSource())
		}
	}
	for _, f := range to {
		if f.GetDestination().GetIdentity() != serverID {
			t.Errorf("--to-identity %d gave destination %v", serverID, f.GetDestination())
		}
	}
	compact := string(run(t, testbed.Hubble(t), "observe", "--server", "unix://"+sock, "--all", "-o", "compact", "--print-policy-names", "-t", "policy-verdict"))
	for _, want := range []string{
		"EGRESS ALLOWED BY client-egress (CiliumNetworkPolicy)",
		"INGRESS ALLOWED BY server-ingress (CiliumNetworkPolicy)",
		"INGRESS DENIED BY server-ingress (CiliumNetworkPolicy)",
		"EGRESS DENIED",
	} {
		if !strings.Contains(compact, want) {
			t.Errorf("compact --print-policy-names lacks %q:\n%s", want, compact)
		}
	}

	// The L7 flows: what allowed their connection, and the L7 audit.
	var allowedL7, auditL7 *flowpb.Flow
	agent.Await("h2c flows with their policies", 30*time.Second, func() error {
		for _, f := range observe(t, sock, "--protocol", "http", "--type", "l7") {
			switch u := f.GetL7().GetHttp().GetUrl(); {
			case f.GetL7().GetType() != flowpb.L7FlowType_REQUEST:
			case strings.HasSuffix(u, "/allowed/1"):
				allowedL7 = f
			case strings.HasSuffix(u, "/denied/1"):
				auditL7 = f
			}
		}
		if allowedL7 == nil || auditL7 == nil {
			return fmt.Errorf("allowed %v, audited %v", allowedL7 != nil, auditL7 != nil)
		}
		return nil
	})
	if allowedL7.GetVerdict() != flowpb.Verdict_FORWARDED || !hasRef(allowedL7.GetEgressAllowedBy(), "client-egress") ||
		!hasRef(allowedL7.GetIngressAllowedBy(), "server-ingress") || allowedL7.GetSource().GetIdentity() != clientID ||
		allowedL7.GetDestination().GetIdentity() != serverID {
		t.Errorf("allowed h2c request (client %d, server %d): %v", clientID, serverID, allowedL7)
	}
	if auditL7.GetVerdict() != flowpb.Verdict_AUDIT || !hasRef(auditL7.GetEgressDeniedBy(), "client-egress") {
		t.Errorf("audited h2c request: %v", auditL7)
	}
	if got := observe(t, sock, "--verdict", "AUDIT", "--protocol", "http"); len(got) == 0 {
		t.Error("--verdict AUDIT shows no L7 flow")
	}

	// `sextant policy trace` against the running agent.
	trace := string(run(t, r.bin, "policy", "trace", "--server", "unix://"+sock, "--from", "app=client", "--to", "app=server", "--dport", fmt.Sprint(denyPort)))
	if !strings.Contains(trace, "Final verdict: DENIED") || !strings.Contains(trace, "server-ingress") || !strings.Contains(trace, "deny rule") {
		t.Errorf("policy trace to the deny port:\n%s", trace)
	}
	trace = string(run(t, r.bin, "policy", "trace", "--server", "unix://"+sock, "--from", "app=client", "--to", "app=server", "--dport", fmt.Sprint(allowedPort), "--proto", "udp"))
	if !strings.Contains(trace, "Final verdict: ALLOWED") {
		t.Errorf("policy trace to the allowed port:\n%s", trace)
	}

	// Through a relay: the same filters on the merged stream, and the
	// flow history (the embedded engine) with the verdict columns.
	relayDir := t.TempDir()
	relaySock, querySock := filepath.Join(relayDir, "relay.sock"), filepath.Join(relayDir, "query.sock")
	relay := testbed.StartDaemon(t, "relay", r.bin, "relay", "--agent", "unix://"+sock, "--socket", relaySock, "--metrics-listen", "",
		"--history", "1h", "--data-dir", filepath.Join(relayDir, "data"), "--query-socket", querySock)
	relay.Await("policy verdicts through the relay", 90*time.Second, func() error {
		if _, err := os.Stat(relaySock); err != nil {
			return err // the relay opens its flow store first
		}
		dropped := observe(t, relaySock, "--verdict", "DROPPED", "--drop-reason-desc", "POLICY_DENY", "--to-identity", fmt.Sprint(serverID))
		if len(dropped) == 0 {
			return errors.New("no POLICY_DENY verdict yet")
		}
		for _, f := range dropped {
			if !hasRef(f.GetIngressDeniedBy(), "server-ingress") || f.GetEventType().GetType() != 5 || f.GetNodeName() != "policy-node" {
				t.Fatalf("through the relay: %v", f)
			}
		}
		if n := len(observe(t, relaySock, "-t", "policy-verdict", "--from-identity", fmt.Sprint(clientID), "--verdict", "FORWARDED")); n == 0 {
			return errors.New("no forwarded verdict of the client yet")
		}
		return nil
	})
	relay.Await("policy rows in the flow history", 90*time.Second, func() error {
		res, err := historyRows(r.bin, querySock, `SELECT kind, verdict, drop_reason, traffic_direction, destination_endpoint, ingress_denied_by, decisions
FROM flows WHERE kind = 'policy-verdict' AND drop_reason = 'POLICY_DENY' LIMIT 1`)
		if err != nil || len(res) == 0 {
			return fmt.Errorf("no POLICY_DENY row: %v", err)
		}
		if got := fmt.Sprint(res[0]); got != "[policy-verdict DROPPED POLICY_DENY ingress default/server [CiliumNetworkPolicy/default/server-ingress] 1]" {
			t.Fatalf("POLICY_DENY row: %s", got)
		}
		res, err = historyRows(r.bin, querySock, `SELECT verdict, policy_hook, egress_denied_by FROM flows WHERE kind = '' AND path = '/denied/1' AND observer = 'client'`)
		if err != nil || len(res) == 0 {
			return fmt.Errorf("no audited exchange row: %v", err)
		}
		if got := fmt.Sprint(res[0]); got != "[AUDIT l7 [CiliumNetworkPolicy/default/client-egress]]" {
			t.Fatalf("audited exchange row: %s", got)
		}
		return nil
	})

	// A rejected document: the revision in force stays (and enforces),
	// the rejection is in the log, on /metrics and in `sextant policy list`.
	rev := r.policyList(sock).Revision
	clientPolicy, err := os.ReadFile(filepath.Join(r.dir, "client.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r.write(filepath.Join(r.dir, "client.yaml"), `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toFQDNs: [{matchName: example.com}]
`)
	agent.Await("rejection reported", 20*time.Second, func() error {
		st := r.policyList(sock)
		if len(st.Rejections) == 0 {
			return errors.New("no rejection listed yet")
		}
		if st.Revision != rev || !strings.Contains(st.Rejections[0].Errors[0], "client.yaml:7") || !strings.Contains(st.Rejections[0].Errors[0], "toFQDNs") {
			t.Fatalf("after a rejected document: revision %d (was %d), rejections %+v", st.Revision, rev, st.Rejections)
		}
		return nil
	})
	if f, err := testbed.Scrape("http://" + metrics + "/metrics"); err != nil || f.Sum("sextant_policy_rejected_files", nil) != 1 {
		t.Errorf("sextant_policy_rejected_files: %v (%v)", f.Sum("sextant_policy_rejected_files", nil), err)
	}
	if !strings.Contains(agent.Logs(), "policy rejected, the last good version stays in force") || !strings.Contains(agent.Logs(), "toFQDNs") {
		t.Error("the rejection is not in the agent's log")
	}
	text := string(run(t, r.bin, "policy", "list", "--server", "unix://"+sock))
	if !strings.Contains(text, "REJECTED") || !strings.Contains(text, "client.yaml:7") {
		t.Errorf("policy list:\n%s", text)
	}
	if got := r.probe("tcp", "192.0.2.1:9"); got != testbed.ProbeEPERM {
		t.Errorf("after the rejection, egress to the world: %s, want %s (the last good policy in force)", got, testbed.ProbeEPERM)
	}
	if got := r.probe("tcp", addr(allowedPort)); got != testbed.ProbeOK {
		t.Errorf("after the rejection, the allowed port: %s", got)
	}
	if f, err := testbed.Scrape("http://" + metrics + "/metrics"); err != nil ||
		f.Sum("sextant_policy_verdicts_total", map[string]string{"verdict": "DROPPED", "direction": "egress", "policy": ""}) < 3 {
		t.Errorf("sextant_policy_verdicts_total{DROPPED,egress,default deny}: %v (%v)",
			f.Sum("sextant_policy_verdicts_total", map[string]string{"verdict": "DROPPED", "direction": "egress", "policy": ""}), err)
	}

	// The good version back (a new agent knows no last good version of a
	// file it never read whole).
	r.write(filepath.Join(r.dir, "client.yaml"), string(clientPolicy))
	agent.Await("the rejection cleared", 20*time.Second, func() error {
		if n := len(r.policyList(sock).Rejections); n != 0 {
			return fmt.Errorf("%d rejections", n)
		}
		return nil
	})
	rev = r.policyList(sock).Revision

	// Restart: no agent runs, the pinned revision keeps enforcing; a
	// metrics-only agent re-adopts it, enforces, counts and answers
	// `sextant policy list` on its socket.
	relay.Stop()
	agent.Stop()
	if got := r.probe("tcp", "192.0.2.1:9"); got != testbed.ProbeEPERM {
		t.Errorf("without an agent: %s, want %s (pinned enforcement)", got, testbed.ProbeEPERM)
	}
	if got := r.probe("tcp", addr(denyPort)); got != testbed.ProbeTimeout {
		t.Errorf("without an agent, the deny port: %s", got)
	}
	agent2, sock2, metrics2 := r.agent("policy-node-2", "--metrics-only")
	st2 := r.policyList(sock2)
	if st2.Revision <= rev || len(st2.Rejections) != 0 || len(st2.Policies) != 2 {
		t.Errorf("after the restart: revision %d (was %d), rejections %d", st2.Revision, rev, len(st2.Rejections))
	}
	if got := r.probe("tcp", "192.0.2.1:9"); got != testbed.ProbeEPERM {
		t.Errorf("after the restart: %s", got)
	}
	agent2.Await("the metrics-only agent counts the refusal", 20*time.Second, func() error {
		f, err := testbed.Scrape("http://" + metrics2 + "/metrics")
		if err != nil {
			return err
		}
		if n := f.Sum("sextant_policy_verdicts_total", map[string]string{"verdict": "DROPPED", "direction": "egress"}); n < 1 {
			return fmt.Errorf("%v dropped egress decisions", n)
		}
		return nil
	})
	agent2.Stop()

	// --cleanup: enforcement stops, the pins are gone.
	if out, err := exec.Command(r.bin, "agent", "--cleanup", "--policy-bpffs", r.bpffs).CombinedOutput(); err != nil {
		t.Fatalf("agent --cleanup: %v\n%s", err, out)
	}
	if _, err := os.Stat(r.bpffs); !os.IsNotExist(err) {
		t.Errorf("%s after --cleanup: %v", r.bpffs, err)
	}
	if got := r.probe("tcp", addr(denyPort)); got != testbed.ProbeOK {
		t.Errorf("after --cleanup, the deny port: %s, want ok", got)
	}
}

// historyRows runs SQL through `sextant query -o json` against a relay's
// query socket.
func historyRows(bin, sock, sql string) ([][]any, error) {
	out, err := exec.Command(bin, "query", "--relay", "unix://"+sock, "--timeout", "20s", "-o", "json", sql).Output()
	if err != nil {
		return nil, fmt.Errorf("sextant query: %w (%s)", err, out)
	}
	var res struct{ Rows [][]any }
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("decode %s: %w", out, err)
	}
	return res.Rows, nil
}
