package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/relay"
)

// defaultRelayListen is Hubble relay's usual port, on loopback.
const defaultRelayListen = "127.0.0.1:4245"

func newRelayCmd() *cobra.Command {
	var (
		agents        []string
		listen        = defaultRelayListen
		serverFiles   certs.Files
		agentFiles    certs.Files
		agentName     string
		allowInsecure bool
		history       time.Duration
		opts          relay.Options
		exps          relayExporters
		logLevel      = "info"
	)
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Merge the flows of many agents and serve them as one Observer API",
		Long: `Run the sextant relay: follow the Observer API of every agent, merge their
flows in time order and serve the merged stream as the same Hubble Observer API,
so that 'sextant observe' and the hubble CLI see all nodes at once.

An agent address that is a DNS name may resolve to several agents; it is
resolved again periodically. Agents that go away are reported unavailable
('hubble list nodes', 'hubble status') and redialed with backoff; when they
come back their flows resume without duplicates.

Plaintext TCP is allowed on loopback only: beyond it, use mTLS (--tls-* for
clients of the relay, --agent-tls-* towards agents; 'sextant certs' makes a
dev set) or accept the risk with --allow-insecure-tcp.`,
		Example: `  sextant relay --agent 127.0.0.1:4301 --agent 127.0.0.1:4302
  sextant certs --out /etc/sextant/tls --host relay.example
  sextant relay --agent agents.example:4244 --listen 0.0.0.0:4245 \
    --tls-cert /etc/sextant/tls/server.crt --tls-key /etc/sextant/tls/server.key --tls-ca /etc/sextant/tls/ca.crt \
    --agent-tls-cert /etc/sextant/tls/client.crt --agent-tls-key /etc/sextant/tls/client.key --agent-tls-ca /etc/sextant/tls/ca.crt`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(agents) == 0 {
				return usageErrorf("no agent: give at least one --agent host:port")
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			var serverTLS *tls.Config
			if !serverFiles.Empty() {
				if serverTLS, err = certs.ServerConfig(serverFiles); err != nil {
					return usageErrorf("--tls-cert/--tls-key/--tls-ca: %v", err)
				}
			} else if err := certs.CheckPlaintext(listen, allowInsecure); err != nil {
				return usageErrorf("--listen %v", err)
			}
			if !agentFiles.Empty() {
				if opts.AgentTLS, err = certs.ClientConfig(agentFiles, agentName); err != nil {
					return usageErrorf("--agent-tls-cert/--agent-tls-key/--agent-tls-ca: %v", err)
				}
			}
			opts.Agents, opts.AllowInsecure, opts.Log = agents, allowInsecure, log
			if history > 0 {
				opts.Since = time.Now().Add(-history)
			}
			r, err := relay.New(opts)
			if err != nil {
				return usageErrorf("%v", err)
			}
			stop, err := exps.start(cmd.Context(), r, log)
			if err != nil {
				return err
			}
			defer stop() // after the relay stopped: exporters drain the merged stream, then flush
			return serveRelay(cmd.Context(), r, listen, serverTLS)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&agents, "agent", nil, "Observer API of an agent, host:port (repeat for more; a DNS name may resolve to several agents)")
	f.StringVar(&listen, "listen", listen, "serve the merged Observer API on this TCP address")
	f.StringVar(&serverFiles.Cert, "tls-cert", "", "relay's server certificate (PEM); with --tls-key and --tls-ca turns on mTLS for clients")
	f.StringVar(&serverFiles.Key, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&serverFiles.CA, "tls-ca", "", "CA (PEM) that signs the clients' certificates")
	f.StringVar(&agentFiles.Cert, "agent-tls-cert", "", "client certificate (PEM) the relay presents to agents; with --agent-tls-key and --agent-tls-ca turns on mTLS towards agents")
	f.StringVar(&agentFiles.Key, "agent-tls-key", "", "key of --agent-tls-cert (PEM)")
	f.StringVar(&agentFiles.CA, "agent-tls-ca", "", "CA (PEM) that signs the agents' certificates")
	f.StringVar(&agentName, "agent-tls-server-name", "", "name the agents' certificates must carry (default: the host of each --agent)")
	f.BoolVar(&allowInsecure, "allow-insecure-tcp", false, "allow plaintext TCP beyond loopback (listening and to agents): unencrypted, unauthenticated")
	f.IntVar(&opts.RingSize, "ring-size", relay.DefaultRingSize, "number of merged events kept for clients")
	f.DurationVar(&opts.SortWindow, "sort-window", relay.DefaultSortWindow, "longest time an event waits for older events of other agents")
	f.IntVar(&opts.MaxHeld, "max-held", relay.DefaultMaxHeld, "events of one agent held in the sort window at most (then that agent is read slower)")
	f.DurationVar(&opts.ResolveInterval, "resolve-interval", relay.DefaultResolveInterval, "how often agent DNS names are resolved again")
	f.DurationVar(&history, "history", 0, "on first contact, also fetch each agent's flows of this long before the relay started")
	f.StringVar(&logLevel, "log-level", logLevel, "log level: debug, info, warn or error")
	exps.flags(f)
	return cmd
}

// serveRelay serves r on listen until ctx is done.
func serveRelay(ctx context.Context, r *relay.Relay, listen string, serverTLS *tls.Config) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	var gopts []grpc.ServerOption
	if serverTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	srv := grpc.NewServer(gopts...)
	r.Register(srv)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		cancel()
	}
	r.Shutdown()
	// Followers never end their streams by themselves: give unary calls in
	// flight a moment, then close everything.
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
		<-stopped
	}
	if err := <-ran; err != nil {
		return err
	}
	if serveErr != nil {
		return fmt.Errorf("serve %s: %w", listen, serveErr)
	}
	return nil
}
