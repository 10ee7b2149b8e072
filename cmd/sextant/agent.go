package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent"
	"github.com/sextant/sextant/config"
	"github.com/sextant/sextant/policy"
	"github.com/sextant/sextant/policy/datapath"
)

func newAgentCmd() *cobra.Command {
	var (
		file       config.File
		cfg        = &file.Agent
		configPath string
		logLevel   = "info"
		cleanup    bool
	)
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Attach the probes and serve flows as the Hubble Observer API (needs root)",
		Long: `Run the sextant agent: load and attach the eBPF probes, decode the traffic of
every process on this host into flows, keep the most recent ones in memory and
serve them as Cilium Hubble's Observer API (gRPC) until interrupted, on a unix
socket (mode 0600, or 0660 with --socket-group) and, with mTLS, on TCP.
'sextant observe' and the hubble CLI read it. Prometheus metrics are served on
--metrics-listen.

Needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN).`,
		Example: `  sudo sextant agent
  sudo sextant agent --config /etc/sextant/config.yaml
  sudo sextant agent --metrics-only --metrics-listen :9962
  sudo sextant certs --out /etc/sextant/tls && sudo sextant agent   # also serves 127.0.0.1:4244 with mTLS
  sudo sextant agent --cgroup /sextant/node1 --node node1 --socket /run/sextant/node1.sock`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := withConfigFile(cmd, configPath, &file); err != nil {
				return err
			}
			if cleanup {
				if err := agent.Cleanup(*cfg); err != nil {
					return fmt.Errorf("cleanup: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed the pinned policy programs and maps: nothing is enforced now\n")
				return nil
			}
			policyDir(cmd, cfg)
			if cfg.Observer.RingSize <= 0 {
				return usageErrorf("--ring-size %d: want a number of events > 0", cfg.Observer.RingSize)
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			defaultTLS(&cfg.Observer.Config, agent.DefaultListen)
			return agent.Run(cmd.Context(), *cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "configuration file (docs/configuration.md); flags override it")
	listenFlags(f, &cfg.Observer.Config, "Observer API", agent.DefaultSocket)
	f.StringVar(&cfg.Node, "node", hostname, "node name recorded in every flow")
	f.StringVar(&cfg.Cgroup, "cgroup", "", "observe only processes in this cgroup v2 subtree, e.g. /sextant/node1 (default: every process)")
	f.BoolVar(&cfg.MetricsOnly, "metrics-only", false, "decode traffic only into Prometheus metrics: no flows kept, no Observer API (cheapest mode)")
	f.StringVar(&cfg.Capture, "capture", "auto", "how the probes see socket traffic: auto (socket where the kernel has the socket tracepoints, ≥ 6.3), socket, or syscall (raw syscall tracepoints: the fallback, costs every process's syscalls)")
	f.IntVar(&cfg.KernelRingBytes, "kernel-ring-bytes", 0, "size of the kernel→agent ring buffer in bytes, a power of two (default 16 MiB); a full buffer drops records (counted)")
	f.IntVar(&cfg.Observer.RingSize, "ring-size", agent.DefaultRingSize, "number of recent events kept in memory (two per exchange)")
	f.StringArrayVar(&cfg.Routes, "route", nil, "route template tried before automatic collapsing, e.g. '/api/users/{id}': names http_route in metrics, spans and flow history (repeatable; see docs/metrics.md)")
	f.StringVar(&cfg.Metrics.Listen, "metrics-listen", agent.DefaultMetricsListen, "serve Prometheus metrics on http://<this address>/metrics ('' for none)")
	f.BoolVar(&cfg.Metrics.Exemplars, "metrics-exemplars", false, "attach traceparent trace ids to latency observations as exemplars (header values: readable by whoever reaches --metrics-listen)")
	f.BoolVar(&cfg.Metrics.Pprof, "pprof", false, "also serve Go profiles on --metrics-listen under /debug/pprof/ (readable by whoever reaches that address)")
	f.IntVar(&cfg.Metrics.MaxSeries, "metrics-max-series", 2000, "series limit per metric; beyond it observations go to an _overflow_ series")
	f.StringVar(&logLevel, "log-level", logLevel, "log level: debug, info, warn or error (debug adds a status line every 10s)")

	f.StringVar(&cfg.Policy.Dir, "policy-dir", policy.DefaultPolicyDir, "enforce the CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and NetworkPolicy documents of this directory (watched; the policy stage runs when this flag is given or the default directory exists; '' for none; docs/policy.md)")
	f.StringVar(&cfg.Policy.Endpoints, "policy-endpoints", policy.DefaultEndpointsFile, "endpoints file: names, cgroups or network namespaces, labels (watched)")
	f.BoolVar(&cfg.Policy.Audit, "policy-audit", false, "audit mode for every endpoint: decide and report, never drop")
	f.StringVar(&cfg.Policy.BPFFS, "policy-bpffs", datapath.DefaultPinPath, "bpffs directory where the policy programs and maps are pinned (enforcement survives the agent there)")
	f.BoolVar(&cleanup, "cleanup", false, "remove the pinned policy programs and maps (enforcement stops) and exit")
	f.StringArrayVar(&cfg.Proxy.Config, "proxy-config", nil, "run the node proxy with these input files or directories: Gateway API HTTPRoute/GRPCRoute, sextant's Backend/TrafficPolicy/L7Policy, CiliumEnvoyConfig (repeatable; watched; docs/proxy.md)")
	f.StringVar(&cfg.Proxy.Envoy, "envoy", "", "Envoy binary, started when some proxy input needs it (default: envoy on PATH)")
	f.BoolVar(&cfg.Proxy.FailOpen, "proxy-fail-open", false, "send redirected traffic the forwarder cannot route to its original destination (default: fail it with UNAVAILABLE)")
	f.StringVar(&cfg.Proxy.Cgroup, "proxy-cgroup", "", "redirect the connections of this cgroup v2 subtree to the proxies (default: --cgroup, else every process)")
	f.StringVar(&cfg.Proxy.StateDir, "proxy-state-dir", agent.DefaultProxyStateDir, "directory of the proxy's xDS, ALS and Envoy admin sockets (mode 0700)")
	f.StringVar(&cfg.Proxy.Forwarder, "proxy-forwarder", agent.DefaultForwarder, "listening address of the gRPC forwarder")
	f.StringVar(&cfg.Proxy.XDSListen, "xds-listen", "", "also serve xDS on this TCP address for proxyless gRPC applications (plaintext: routes and policies are readable by whoever reaches it)")
	return cmd
}

// policyDir turns the policy stage on when --policy-dir was given (or the
// configuration file named one) or the default directory exists.
func policyDir(cmd *cobra.Command, cfg *agent.Config) {
	if cmd.Flags().Changed("policy-dir") || cfg.Policy.Dir != policy.DefaultPolicyDir {
		return
	}
	if _, err := os.Stat(cfg.Policy.Dir); err != nil {
		cfg.Policy.Dir = ""
	}
}
