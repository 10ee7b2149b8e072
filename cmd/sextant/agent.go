package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent"
	"github.com/sextant/sextant/agent/api"
	"github.com/sextant/sextant/collector/ring"
)

func newAgentCmd() *cobra.Command {
	cfg := agent.Config{}
	hostname, _ := os.Hostname()
	logLevel := "info"

	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Attach the probes and serve flows on a local socket (needs root)",
		Long: `Run the sextant agent: load and attach the eBPF probes, decode the traffic of
every process on this host into flows, keep the most recent ones in memory and
serve them to 'sextant observe' on a unix socket until interrupted.

Needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.RingSize <= 0 {
				return usageErrorf("--ring-size %d: want a number of flows > 0", cfg.RingSize)
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
	f.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "unix socket of the local flow API (created with mode 0600)")
	f.StringVar(&cfg.ListenTCP, "listen-tcp", "", "also serve the flow API on this loopback TCP address, e.g. 127.0.0.1:4245 (default off)")
	f.StringVar(&cfg.Node, "node", hostname, "node name recorded in every flow")
	f.IntVar(&cfg.RingSize, "ring-size", ring.DefaultCapacity, "number of recent flows kept in memory")
	f.StringVar(&logLevel, "log-level", logLevel, "log level: debug, info, warn or error (debug adds a status line every 10s)")
	return cmd
}
