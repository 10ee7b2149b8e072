package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent"
	"github.com/sextant/sextant/observer/ring"
)

func newAgentCmd() *cobra.Command {
	cfg := agent.Config{}
	hostname, _ := os.Hostname()
	logLevel := "info"

	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Attach the probes and serve flows as the Hubble Observer API (needs root)",
		Long: `Run the sextant agent: load and attach the eBPF probes, decode the traffic of
every process on this host into flows, keep the most recent ones in memory and
serve them as Cilium Hubble's Observer API (gRPC) until interrupted: on a unix
socket (mode 0600, or 0660 with --socket-group) and on a loopback TCP address.
'sextant observe' and the hubble CLI read it.

Needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN).`,
		Example: `  sudo sextant agent
  sudo sextant agent --listen '' --socket /tmp/observer.sock
  sudo sextant agent --metrics-only --metrics-listen :9962
  sudo sextant agent --cgroup /sextant/node1 --node node1 --listen 127.0.0.1:4301`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.RingSize <= 0 {
				return usageErrorf("--ring-size %d: want a number of events > 0", cfg.RingSize)
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", agent.DefaultSocket, "unix socket of the Observer API (mode 0600)")
	f.StringVar(&cfg.SocketGroup, "socket-group", "", "group (name or gid) that may also use the socket (mode 0660)")
	f.StringVar(&cfg.ListenTCP, "listen", agent.DefaultListen, "also serve the Observer API on this TCP address, loopback only unless --allow-insecure-tcp ('' for none)")
	f.BoolVar(&cfg.AllowInsecureTCP, "allow-insecure-tcp", false, "allow --listen on a non-loopback address without TLS: plaintext, unauthenticated")
	f.StringVar(&cfg.TLS.Cert, "tls-cert", "", "agent's server certificate (PEM); with --tls-key and --tls-ca serves --listen with mTLS")
	f.StringVar(&cfg.TLS.Key, "tls-key", "", "private key of --tls-cert (PEM)")
	f.StringVar(&cfg.TLS.CA, "tls-ca", "", "CA that signs client certificates (PEM)")
	f.StringVar(&cfg.Node, "node", hostname, "node name recorded in every flow")
	f.StringVar(&cfg.Collector.CgroupScope, "cgroup", "", "observe only processes in this cgroup v2 subtree, e.g. /sextant/node1 (default: every process)")
	f.BoolVar(&cfg.MetricsOnly, "metrics-only", false, "decode traffic only into Prometheus metrics: no flows kept, no Observer API (cheapest mode)")
	f.IntVar(&cfg.KernelRingBytes, "kernel-ring-bytes", 0, "size of the kernel→agent ring buffer in bytes, a power of two (default 16 MiB); a full buffer drops records (counted)")
	f.IntVar(&cfg.RingSize, "ring-size", ring.DefaultCapacity, "number of recent events kept in memory (two per exchange)")
	f.StringVar(&cfg.Metrics.Listen, "metrics-listen", agent.DefaultMetricsListen, "serve Prometheus metrics on http://<this address>/metrics ('' for none)")
	f.StringArrayVar(&cfg.Routes, "route", nil, "route template tried before automatic collapsing, e.g. '/api/users/{id}': names http_route in metrics, spans and flow history (repeatable; see docs/metrics.md)")
	f.BoolVar(&cfg.Metrics.Pprof, "pprof", false, "also serve Go profiles on --metrics-listen under /debug/pprof/")
	f.IntVar(&cfg.Metrics.MaxSeries, "metrics-max-series", 2000, "series limit per metric; beyond it observations go to an _overflow_ series")
	f.StringVar(&logLevel, "log-level", logLevel, "log level: debug, info, warn or error (debug adds a status line every 10s)")
	return cmd
}
