package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent"
	"github.com/sextant/sextant/config"
)

func newAgentCmd() *cobra.Command {
	var (
		file       config.File
		cfg        = &file.Agent
		configPath string
		logLevel   = "info"
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
	return cmd
}
