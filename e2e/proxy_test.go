package e2e

// The node proxy through the real agent binary: an unmodified grpc-go
// client dialing a backend's address is redirected (eBPF, connect time)
// to the agent's gRPC forwarder, routed by xDS to the backend; the
// policy stage's L7 rule (CiliumNetworkPolicy rules.http on the backend)
// is RBAC on the forwarder, and each denial is a flow the stock hubble CLI
// shows with `--verdict DROPPED`, POLICY_DENIED and the policy's name.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/policy/datapath"
	"github.com/sextant/sextant/proxy"
	"github.com/sextant/sextant/testbed"
)

func init() { peerRoles["proxy-grpc-client"] = runProxyGRPCClient }

type proxyClientArgs struct {
	Addr         string
	Unary, Empty int
}

// proxyClientResult counts the status codes of each method's calls.
type proxyClientResult struct {
	Unary map[string]int `json:"unary"`
	Empty map[string]int `json:"empty"`
}

func runProxyGRPCClient(raw []byte) error {
	var a proxyClientArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	cc, err := grpc.NewClient("passthrough:///"+a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	res := proxyClientResult{Unary: map[string]int{}, Empty: map[string]int{}}
	for range a.Unary {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancel()
		res.Unary[status.Code(err).String()]++
	}
	for range a.Empty {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
		cancel()
		res.Empty[status.Code(err).String()]++
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
	return nil
}

func TestProxyRBACDenialInHubble(t *testing.T) {
	testbed.RequireRoot(t)
	if err := datapath.CheckKernel(); err != nil {
		testbed.Missing(t, "policy datapath: %v", err)
	}
	bin := testbed.Sextant(t)
	node := testbed.NewCgroup(t, "proxy")
	// The node's two workloads: the backend (a policy endpoint) and the
	// client (whose connections are redirected).
	sub := func(name string) *testbed.Cgroup {
		cg := &testbed.Cgroup{Path: node.Path + "/" + name, Dir: filepath.Join(node.Dir, name)}
		if err := os.Mkdir(cg.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			deadline := time.Now().Add(10 * time.Second)
			for os.Remove(cg.Dir) != nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
		})
		return cg
	}
	backendCg, clientCg := sub("backend"), sub("client")

	backend := startInCgroup(t, backendCg, "grpc-server", "backend", nil)
	backendAddr := backend.expect("ADDR ", 30*time.Second)
	defer backend.stop(10 * time.Second)
	_, portStr, _ := strings.Cut(backendAddr, ":")
	port, _ := strconv.Atoi(portStr)

	tmp := t.TempDir()
	proxyDir, policyDir := filepath.Join(tmp, "proxy"), filepath.Join(tmp, "policies")
	for _, d := range []string{proxyDir, policyDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testbed.WriteFile(t, filepath.Join(proxyDir, "routes.yaml"), fmt.Sprintf(`apiVersion: proxy.sextant.io/v1alpha1
kind: Backend
metadata: {name: backend}
spec:
  endpoints: [{address: 127.0.0.1, port: %d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: backend}
spec:
  parentRefs: [{group: proxy.sextant.io, kind: Backend, name: backend}]
  rules:
  - backendRefs: [{group: proxy.sextant.io, kind: Backend, name: backend}]
`, port))
	endpoints := filepath.Join(tmp, "endpoints.yaml")
	testbed.WriteFile(t, endpoints, fmt.Sprintf("endpoints:\n- {name: backend, cgroup: %s, labels: {app: backend}}\n", backendCg.Path))
	testbed.WriteFile(t, filepath.Join(policyDir, "backend.yaml"), fmt.Sprintf(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-l7}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEntities: [host]
    toPorts:
    - ports: [{port: "%d", protocol: TCP}]
      rules: {http: [{method: POST, path: /grpc.testing.TestService/UnaryCall}]}
`, port))
	if out, err := combined(bin, "proxy", "validate", proxyDir); err != nil || !strings.Contains(out, "valid: 1 GRPCRoute, 1 Backend") {
		t.Fatalf("proxy validate: %v\n%s", err, out)
	}

	bpffs := filepath.Join("/sys/fs/bpf", fmt.Sprintf("sextant-e2e-proxy-%d", os.Getpid()))
	t.Cleanup(func() { combined(bin, "agent", "--cleanup", "--policy-bpffs", bpffs) })
	sock := filepath.Join(tmp, "observer.sock")
	forwarder := testbed.FreeAddr(t)
	agent := testbed.StartDaemon(t, "agent", bin, "agent", "--node", "proxy-node", "--cgroup", node.Path, "--socket", sock, "--metrics-listen", "",
		"--policy-dir", policyDir, "--policy-endpoints", endpoints, "--policy-bpffs", bpffs,
		"--proxy-config", proxyDir, "--proxy-cgroup", clientCg.Path, "--proxy-state-dir", filepath.Join(tmp, "proxy-state"),
		"--proxy-forwarder", forwarder, "--envoy", "/nonexistent/envoy")
	agent.Await("agent answering", 90*time.Second, func() error {
		out, err := combined(testbed.Hubble(t), "status", "--server", "unix://"+sock)
		if err != nil || !strings.Contains(out, "Ok") {
			return fmt.Errorf("hubble status: %v: %s", err, out)
		}
		return nil
	})

	// Until the route and the RBAC are served, calls fail or pass: wait
	// for the steady state the policy says (UnaryCall allowed, EmptyCall
	// PERMISSION_DENIED), then count.
	var res proxyClientResult
	agent.Await("redirected calls routed and judged by RBAC", 90*time.Second, func() error {
		p := startInCgroup(t, clientCg, "proxy-grpc-client", "client", proxyClientArgs{Addr: backendAddr, Unary: 3, Empty: 3})
		p.expectJSON(&res, 60*time.Second)
		p.waitExit(10 * time.Second)
		if res.Unary["OK"] != 3 || res.Empty["PermissionDenied"] != 3 {
			return fmt.Errorf("unary %v, empty %v", res.Unary, res.Empty)
		}
		return nil
	})

	// The denials, as the stock hubble CLI shows them.
	var denied []*flowpb.Flow
	agent.Await("RBAC denials in hubble observe --verdict DROPPED", 30*time.Second, func() error {
		denied = observe(t, sock, "--verdict", "DROPPED", "--http-path", "/grpc.testing.TestService/EmptyCall")
		if len(denied) < 3 {
			return fmt.Errorf("%d denials", len(denied))
		}
		return nil
	})
	for _, f := range denied {
		if f.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED || !hasRef(f.GetIngressDeniedBy(), "backend-l7") ||
			f.GetIngressDeniedBy()[0].GetKind() != "CiliumNetworkPolicy" || f.GetL7() == nil {
			t.Errorf("denial: %v", f)
		}
	}
	compact := string(run(t, testbed.Hubble(t), "observe", "--server", "unix://"+sock, "--all", "-o", "compact", "--verdict", "DROPPED"))
	if !strings.Contains(compact, "/grpc.testing.TestService/EmptyCall") || !strings.Contains(compact, "DROPPED") {
		t.Errorf("compact:\n%s", compact)
	}
	// The allowed calls are FORWARDED by the proxy with the policy in
	// allowed_by; the client's own flows show the backend's address (the
	// original destination), not the forwarder's.
	// The two come by different paths (the proxy's access records, the
	// client's captured socket): wait for both.
	var forwarded []*flowpb.Flow
	agent.Await("forwarded UnaryCall flows by the proxy and from the client", 30*time.Second, func() error {
		forwarded = observe(t, sock, "--verdict", "FORWARDED", "--http-path", "/grpc.testing.TestService/UnaryCall")
		var byProxy, clientSide bool
		for _, f := range forwarded {
			if hasRef(f.GetIngressAllowedBy(), "backend-l7") && f.GetDestination().GetPodName() == "" && f.GetL4() == nil {
				byProxy = true // the access record: no connection of its own
			}
			if f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && f.GetL4().GetTCP().GetDestinationPort() == uint32(port) {
				clientSide = true
			}
		}
		if !byProxy || !clientSide {
			return fmt.Errorf("by the proxy %v, client side to the backend's port %v (%d flows)", byProxy, clientSide, len(forwarded))
		}
		return nil
	})
	for _, f := range forwarded {
		if f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS && f.GetL4().GetTCP() != nil &&
			f.GetIP().GetDestination()+":"+fmt.Sprint(f.GetL4().GetTCP().GetDestinationPort()) == forwarder {
			t.Errorf("a client-side flow shows the forwarder, not the original destination: %v", f)
		}
	}

	// `sextant proxy status` from the running agent.
	var st proxy.Status
	if err := json.Unmarshal(run(t, bin, "proxy", "status", "-o", "json", "--server", "unix://"+sock), &st); err != nil {
		t.Fatal(err)
	}
	if st.Redirected[backendAddr] != forwarder || st.Forwarder.Calls == 0 || st.Redirect == nil || st.Redirect.Redirected == 0 || st.Envoy.State != "stopped" && st.Envoy.State != "missing" {
		t.Errorf("proxy status: %+v", st)
	}
	text := string(run(t, bin, "proxy", "status", "--server", "unix://"+sock))
	if !strings.Contains(text, backendAddr+" -> "+forwarder) || !strings.Contains(text, "sextant-forwarder-proxy-node") {
		t.Errorf("proxy status:\n%s", text)
	}
}

// combined runs a command and returns its combined output.
func combined(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = ctx.Err()
	}
	return string(out), err
}
