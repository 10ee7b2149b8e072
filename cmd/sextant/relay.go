package main

import (
	"github.com/spf13/cobra"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/config"
	"github.com/sextant/sextant/relay"
)

func newRelayCmd() *cobra.Command {
	var (
		file       config.File
		cfg        = &file.Relay
		configPath string
		logLevel   = "info"
	)
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Merge the flows of many agents, serve them as one Observer API and export them",
		Long: `Run the sextant relay: follow the Observer API of every agent, merge their
flows in time order and serve the merged stream as the same Hubble Observer API,
so that 'sextant observe' and the hubble CLI see all nodes at once. The merged
flows feed the flow history (a ClickHouse server, or the embedded engine) that
'sextant query' reads, and OTLP when --otlp-endpoint is set.

Agents are reached on their unix socket (unix:///path) or over TCP with mTLS
(--agent-tls-*). An agent address that is a DNS name may resolve to several
agents; it is resolved again periodically. Agents that go away are reported
unavailable and redialed with backoff; their flows resume without duplicates.

The relay answers on its own sockets (mode 0600, or 0660 with --socket-group)
and, with mTLS, on TCP. Plaintext TCP, loopback included, needs
--allow-insecure-tcp: loopback is not authentication.`,
		Example: `  sextant relay --agent unix:///var/run/sextant/observer.sock
  sextant certs --out /etc/sextant/tls --host relay.example
  sextant relay --agent agents.example:4244 --listen 0.0.0.0:4245 \
    --agent-tls-cert /etc/sextant/tls/client.crt --agent-tls-key /etc/sextant/tls/client.key --agent-tls-ca /etc/sextant/tls/ca.crt`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := withConfigFile(cmd, configPath, &file); err != nil {
				return err
			}
			if len(cfg.Agents) == 0 {
				return usageErrorf("no agent: give at least one --agent (unix:///path or host:port)")
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			defaultTLS(&cfg.Observer, relay.DefaultListen)
			if cfg.AgentTLS.Empty() && !cfg.AllowInsecureTCP {
				if def := certs.ClientFiles(certs.DefaultDir); def.Exist() {
					cfg.AgentTLS = def
				}
			}
			// The query endpoint's TCP side shares the relay's certificates.
			if cfg.Store.Query.Listen != "" {
				cfg.Store.Query.Socket = ""
				if cfg.Store.Query.TLS.Empty() {
					cfg.Store.Query.TLS = cfg.Observer.TLS
				}
			}
			cfg.Store.Query.SocketGroup = cfg.Observer.SocketGroup
			cfg.Store.Query.AllowInsecureTCP = cfg.Observer.AllowInsecureTCP
			return relay.Run(cmd.Context(), *cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "configuration file (docs/configuration.md); flags override it")
	f.StringArrayVar(&cfg.Agents, "agent", nil, "Observer API of an agent: unix:///path or host:port (repeat for more; a DNS name may resolve to several agents)")
	listenFlags(f, &cfg.Observer, "merged Observer API", relay.DefaultSocket)
	certs.Flags(f, "agent-", &cfg.AgentTLS, "agents")
	f.StringVar(&cfg.AgentServerName, "agent-tls-server-name", "", "name the agents' certificates must carry (default: the host of each --agent)")
	f.IntVar(&cfg.RingSize, "ring-size", relay.DefaultRingSize, "number of merged events kept for clients")
	f.DurationVar(&cfg.SortWindow, "sort-window", relay.DefaultSortWindow, "longest time an event waits for older events of other agents")
	f.IntVar(&cfg.MaxHeld, "max-held", relay.DefaultMaxHeld, "events of one agent held in the sort window at most (then that agent is read slower)")
	f.DurationVar(&cfg.ResolveInterval, "resolve-interval", relay.DefaultResolveInterval, "how often agent DNS names are resolved again")
	f.DurationVar(&cfg.History, "history", 0, "on first contact, also fetch each agent's flows of this long before the relay started")

	f.StringVar(&cfg.Store.Kind, "store", relay.StoreAuto, "flow history: embedded (chDB in this process, fetched once, ~570 MB), clickhouse (a server, --clickhouse-addr) or none (default: clickhouse when --clickhouse-addr is set, else embedded)")
	f.StringVar(&cfg.Store.Addr, "clickhouse-addr", "", "ClickHouse server for flow history (native protocol, host:9000)")
	f.StringVar(&cfg.Store.Username, "clickhouse-user", "", "ClickHouse user that writes the flow history (default: default); its password comes from the configuration file")
	f.StringVar(&cfg.Store.QueryUsername, "clickhouse-query-user", "", "ClickHouse user that runs 'sextant query' statements, with the restricted profile of docs/clickhouse.md")
	f.StringVar(&cfg.Store.DataDir, "data-dir", relay.DefaultDataDir, "where the embedded store and the ClickHouse spool live")
	f.DurationVar(&cfg.Store.Retention, "retention", relay.DefaultRetention, "how long flow history is kept (TTL; modern ClickHouse and the embedded store)")
	f.StringVar(&cfg.Store.Query.Socket, "query-socket", relay.DefaultQuerySocket, "unix socket answering 'sextant query' (mode 0600, 0660 with --socket-group)")
	f.StringVar(&cfg.Store.Query.Listen, "query-listen", "", "answer 'sextant query' on this TCP address instead, with mTLS (the relay's certificates)")
	f.StringVar(&cfg.OTLP.Endpoint, "otlp-endpoint", "", "send spans and metrics over OTLP to this collector (host:port); off when empty")
	f.StringVar(&cfg.OTLP.Protocol, "otlp-protocol", "grpc", "OTLP protocol: grpc or http")
	f.BoolVar(&cfg.OTLP.Insecure, "otlp-insecure", false, "OTLP without TLS")
	f.StringVar(&cfg.Metrics.Listen, "metrics-listen", relay.DefaultMetricsListen, "serve the relay's Prometheus metrics on http://<this address>/metrics ('' for none)")
	f.StringVar(&logLevel, "log-level", logLevel, "log level: debug, info, warn or error")
	return cmd
}
