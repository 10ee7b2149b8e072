package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/policy"
	"github.com/sextant/sextant/proxy"
	"github.com/sextant/sextant/proxy/access"
	"github.com/sextant/sextant/proxy/config"
	"github.com/sextant/sextant/stage"
)

// Defaults of ProxyConfig.
const (
	DefaultProxyStateDir = "/var/run/sextant/proxy"
	DefaultForwarder     = "127.0.0.1:15002"
)

// ProxyConfig configures the node proxy (docs/proxy.md). The stage runs
// when Config names input files.
type ProxyConfig struct {
	// Config are the input files and directories (--proxy-config,
	// repeatable): Gateway API routes, sextant's schema, raw Envoy
	// resources.
	Config []string `yaml:"config"`
	// Envoy is the Envoy binary (--envoy; default: envoy on PATH).
	Envoy string `yaml:"envoy"`
	// FailOpen sends traffic the forwarder cannot route to its original
	// destination instead of failing it (--proxy-fail-open).
	FailOpen bool `yaml:"failOpen"`
	// Cgroup is the cgroup v2 subtree whose connections are redirected
	// (--proxy-cgroup, relative to the cgroup2 mount like --cgroup;
	// default: the agent's --cgroup, else every process).
	Cgroup string `yaml:"cgroup"`
	// StateDir holds the xDS, ALS and Envoy admin sockets and the Envoy
	// bootstrap (default DefaultProxyStateDir; mode 0700).
	StateDir string `yaml:"stateDir"`
	// Forwarder is the gRPC forwarder's listener (default
	// DefaultForwarder).
	Forwarder string `yaml:"forwarder"`
	// XDSListen also serves xDS on this TCP address, for proxyless gRPC
	// applications of the node (plaintext: routes and policies are
	// readable by whoever reaches it; off by default).
	XDSListen string `yaml:"xdsListen"`
}

// proxyStage runs the node proxy: the xDS control plane fed by the input
// files and by the policy stage's L7 rules, the gRPC forwarder, the
// connect-time redirect and, when some input needs it, Envoy. Every
// request a proxy reports becomes a flow with its L7 verdict.
type proxyStage struct {
	log       *slog.Logger
	p         *proxy.Proxy
	forwarder netip.AddrPort
	policy    *policyStage // nil: no L7 rules to feed
	sinks     *exporters.Fanout
	running   atomic.Pointer[proxy.Proxy] // for the status service

	mu   sync.Mutex
	refs map[string]flow.PolicyRef // L7 policy name → the policy it came from
}

func newProxyStage(cfg Config, pol *policyStage, sinks *exporters.Fanout) (*proxyStage, error) {
	pc := cfg.Proxy
	if len(pc.Config) == 0 {
		return nil, nil
	}
	s := &proxyStage{log: cfg.Logger, policy: pol, sinks: sinks, refs: map[string]flow.PolicyRef{}}
	fwd := pc.Forwarder
	if fwd == "" {
		fwd = DefaultForwarder
	}
	var err error
	if s.forwarder, err = netip.ParseAddrPort(fwd); err != nil {
		return nil, fmt.Errorf("proxy: forwarder address %q: %w", fwd, err)
	}
	stateDir := pc.StateDir
	if stateDir == "" {
		stateDir = DefaultProxyStateDir
	}
	cg := pc.Cgroup
	if cg == "" {
		cg = cfg.Cgroup
	}
	root := identity.Cgroup2Mount("/proc/self/mountinfo")
	if root == "" {
		return nil, fmt.Errorf("proxy: no cgroup v2 hierarchy mounted (the redirect attaches to a cgroup)")
	}
	s.p, err = proxy.New(proxy.Config{
		Files: pc.Config, StateDir: stateDir, XDSAddr: pc.XDSListen, Cgroup: filepath.Join(root, cg),
		ForwarderAddr: s.forwarder, FailOpen: pc.FailOpen, EnvoyBinary: pc.Envoy, Node: cfg.Node, Log: cfg.Logger,
	}, s.record)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *proxyStage) proxy() *proxy.Proxy {
	if s == nil {
		return nil
	}
	return s.running.Load()
}

func (s *proxyStage) stage() stage.Stage {
	return stage.Stage{
		Name: "proxy",
		Run: func(ctx context.Context) error {
			s.running.Store(s.p)
			defer s.running.Store(nil)
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var wg sync.WaitGroup
			if s.policy != nil {
				wg.Go(func() { s.feedL7(ctx) })
			}
			err := s.p.Run(ctx)
			cancel()
			wg.Wait()
			return err
		},
	}
}

// feedL7 installs the policy stage's L7 rules (rules.http) as RBAC on the
// proxies' path: after every revision, and when the redirected
// destinations change (a server redirected to the forwarder is protected
// there, so the proxy's own reloads move rules too).
func (s *proxyStage) feedL7(ctx context.Context) {
	eng := s.policy.engine()
	if eng == nil {
		return
	}
	tick := time.NewTicker(l7Resync)
	defer tick.Stop()
	var last []config.Doc[*config.L7Policy]
	for {
		docs := s.l7Docs(eng.L7Rules())
		if last == nil || !sameL7(docs, last) {
			if err := s.p.SetL7(docs); err != nil {
				s.log.Warn("proxy: L7 rules of the policy in force rejected, the last good ones stay", "err", err)
			}
			last = docs
			if last == nil {
				last = []config.Doc[*config.L7Policy]{}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-eng.Revisions():
		case <-tick.C:
		}
	}
}

// l7Resync: how often the L7 rules are checked against the redirected
// destinations.
const l7Resync = time.Second

func sameL7(a, b []config.Doc[*config.L7Policy]) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !reflect.DeepEqual(a[i].Obj, b[i].Obj) {
			return false
		}
	}
	return true
}

// l7Docs converts the policy's L7 rules to the proxy's input, field by
// field (docs/proxy.md: config.HTTPRule mirrors api.PortRuleHTTP). A
// server the redirect sends to the forwarder is protected there too:
// the forwarder's listener gets the rules (its RBAC applies to all it
// forwards, docs/proxy.md limits).
func (s *proxyStage) l7Docs(rules []policy.L7Rules) []config.Doc[*config.L7Policy] {
	redirected := s.p.Status().Redirected
	refs := map[string]flow.PolicyRef{}
	var docs []config.Doc[*config.L7Policy]
	for _, r := range rules {
		p := &config.L7Policy{}
		p.APIVersion, p.Kind = "proxy.sextant.io/v1alpha1", "L7Policy"
		p.Name, p.Namespace = r.Policy.Name, r.Policy.Namespace
		viaForwarder := false
		for _, a := range r.Servers {
			p.Spec.Servers = append(p.Spec.Servers, a.String())
			if redirected[a.String()] == s.forwarder.String() {
				viaForwarder = true
			}
		}
		if viaForwarder && !slices.Contains(p.Spec.Servers, s.forwarder.String()) {
			p.Spec.Servers = append(p.Spec.Servers, s.forwarder.String())
		}
		for _, h := range r.HTTP {
			rule := config.HTTPRule{Method: h.Method, Path: h.Path, Host: h.Host, Headers: h.Headers}
			for _, m := range h.HeaderMatches {
				rule.HeaderMatches = append(rule.HeaderMatches, config.HeaderMatch{Name: m.Name, Value: m.Value})
			}
			p.Spec.HTTP = append(p.Spec.HTTP, rule)
		}
		docs = append(docs, config.Doc[*config.L7Policy]{Origin: config.Origin{File: "policy revision " + fmt.Sprint(r.Policy.Revision)}, Obj: p})
		refs[config.Name(p.Namespace, p.Name)] = r.Policy
	}
	s.mu.Lock()
	s.refs = refs
	s.mu.Unlock()
	return docs
}

// record turns a proxy's access record into a flow with its L7 verdict
// and hands it to the sinks: Hook "proxy", DROPPED with POLICY_DENIED
// and the denying policies, or FORWARDED with the allowing one.
func (s *proxyStage) record(rec access.Record) {
	f := rec.Flow
	d := rec.Decision
	p := &flow.Policy{Direction: flow.Ingress, Proto: 6, Count: 1, Hook: flow.HookProxy}
	switch d.Verdict {
	case access.VerdictDropped:
		p.Verdict = flow.VerdictDropped
		p.DropReason = flow.PolicyDenied
	case access.VerdictForwarded:
		p.Verdict = flow.VerdictForwarded
	default:
		p.Verdict = flow.VerdictUnknown
	}
	p.IngressAllowedBy, p.IngressDeniedBy = s.policyRefs(d.AllowedBy), s.policyRefs(d.DeniedBy)
	if len(p.IngressAllowedBy) > 0 {
		p.Revision = p.IngressAllowedBy[0].Revision
	} else if len(p.IngressDeniedBy) > 0 {
		p.Revision = p.IngressDeniedBy[0].Revision
	}
	f.Policy = p
	s.sinks.Export(&f)
}

// policyRefs names the proxy's L7 policies ("namespace/name") as the
// policies they came from; an input file's own L7Policy keeps its name.
func (s *proxyStage) policyRefs(names []string) []flow.PolicyRef {
	if len(names) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]flow.PolicyRef, 0, len(names))
	for _, n := range names {
		if r, ok := s.refs[n]; ok {
			out = append(out, r)
			continue
		}
		ns, name, ok := strings.Cut(n, "/")
		if !ok {
			ns, name = "", n
		}
		out = append(out, flow.PolicyRef{Kind: "L7Policy", Name: name, Namespace: ns})
	}
	return out
}

// originalDst puts the destination a redirected client connected to on
// the flows the probes observed of its connection (whose destination is
// the forwarder's listener).
func (s *proxyStage) originalDst(f *flow.Flow) {
	dst := netip.AddrPortFrom(f.Destination.Addr().Unmap(), f.Destination.Port())
	if f.Kind != flow.KindExchange || f.Observer != flow.SideClient || dst != s.forwarder {
		return
	}
	if p := s.running.Load(); p != nil {
		if orig, ok := p.OriginalDst(f.Source); ok {
			f.Destination = orig
		}
	}
}
