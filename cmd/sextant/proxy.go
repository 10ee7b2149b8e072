package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent/statusapi"
	"github.com/sextant/sextant/proxy"
)

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "The node proxy: status of a running agent's, validation of input files",
		Long: `The agent runs the node proxy with --proxy-config (docs/proxy.md): an xDS control
plane, a gRPC forwarder, the connect-time redirect and Envoy when needed.
'status' asks the running agent over its socket; 'validate' needs no agent.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newProxyStatusCmd(), newProxyValidateCmd())
	return cmd
}

func newProxyStatusCmd() *cobra.Command {
	var a agentFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Snapshot versions per node, connected xDS clients, NACKs, Envoy state, forwarder and redirect counters",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.check(); err != nil {
				return err
			}
			return a.call(cmd.Context(), func(ctx context.Context, c *statusapi.Client) error {
				st, err := c.Proxy(ctx)
				if err != nil {
					return err
				}
				return a.print(cmd.OutOrStdout(), st, st.String())
			})
		},
	}
	a.register(cmd)
	return cmd
}

func newProxyValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|DIR…",
		Short: "Check proxy inputs as the agent would serve them: errors with file:line and field, each profile's resources, warnings",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := proxy.Validate(args...)
			if err != nil {
				return err
			}
			r.Write(cmd.OutOrStdout())
			return nil
		},
	}
}
