package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent/statusapi"
	"github.com/sextant/sextant/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate policy files, list the policy in force, trace a decision",
		Long: `Policies are CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes
NetworkPolicy documents the agent enforces from --policy-dir (docs/policy.md).
'list' and 'trace' ask the running agent over its socket (the same access rules
as the Observer API); 'validate' and 'trace --file' need no agent.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newPolicyValidateCmd(), newPolicyListCmd(), newPolicyTraceCmd())
	return cmd
}

func newPolicyValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|DIR…",
		Short: "Check policy files without applying them: every error with file:line and field",
		Example: `  sextant policy validate /etc/sextant/policies
  sextant policy validate web.yaml db.yaml`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var failed int
			for _, f := range args {
				if err := policy.Validate(f); err != nil {
					failed++
					for _, line := range strings.Split(err.Error(), "\n") {
						fmt.Fprintln(cmd.OutOrStdout(), line)
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n", f)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d rejected", failed, len(args))
			}
			return nil
		},
	}
}

// agentFlags reach a running agent's status service.
type agentFlags struct {
	serverFlags
	output  string
	timeout time.Duration
}

func (a *agentFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	a.serverFlags.register(f)
	f.StringVarP(&a.output, "output", "o", "text", "output: text or json")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for the agent")
}

func (a *agentFlags) check() error {
	if a.output != "text" && a.output != "json" {
		return usageErrorf("--output %q: want text or json", a.output)
	}
	return nil
}

// call runs fn against the agent's status service.
func (a *agentFlags) call(ctx context.Context, fn func(context.Context, *statusapi.Client) error) error {
	conn, err := a.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if err := fn(ctx, statusapi.NewClient(conn)); err != nil {
		return a.explain(err)
	}
	return nil
}

func (a *agentFlags) print(w io.Writer, v any, text string) error {
	if a.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(w, text)
	return err
}

func newPolicyListCmd() *cobra.Command {
	var a agentFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "The policy in force on a running agent: revision, policies and the endpoints they select, rejected files",
		Example: `  sudo sextant policy list
  sudo sextant policy list -o json --server unix:///run/sextant/node1.sock`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.check(); err != nil {
				return err
			}
			return a.call(cmd.Context(), func(ctx context.Context, c *statusapi.Client) error {
				st, err := c.Policy(ctx)
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

func newPolicyTraceCmd() *cobra.Command {
	var (
		a        agentFlags
		from, to []string
		dport    uint16
		proto    string
		files    []string
	)
	cmd := &cobra.Command{
		Use:   "trace --from LABELS --to LABELS --dport N",
		Short: "Which rule decides a connection, as `cilium policy trace` shows it",
		Long: `Explain what the policy decides for a connection from one label set to another
on a port: for the source's egress and the destination's ingress, which policies
select the endpoint, whether the direction is default deny, and which rule
decides. Labels are key=value (a Cilium source prefix allowed: k8s:app=web,
reserved:world); an IP address names the peer that has it. Without --file the
running agent answers with the revision in force (its endpoints and
identities); with --file the policy files are traced on their own.`,
		Example: `  sudo sextant policy trace --from app=web --to app=db --dport 5432
  sextant policy trace --file policies/ --from reserved:world --to app=web --dport 443 --proto tcp`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.check(); err != nil {
				return err
			}
			if len(from) == 0 || len(to) == 0 || dport == 0 {
				return usageErrorf("--from, --to and --dport are required")
			}
			var p uint8
			switch strings.ToLower(proto) {
			case "tcp":
				p = 6
			case "udp":
				p = 17
			default:
				return usageErrorf("--proto %q: want tcp or udp", proto)
			}
			var ans statusapi.TraceAnswer
			if len(files) > 0 {
				tr, err := policy.TraceFiles(files, from, to, dport, p)
				if err != nil {
					return err
				}
				ans = statusapi.TraceAnswer{Text: tr.String(), Allowed: tr.Allowed}
			} else if err := a.call(cmd.Context(), func(ctx context.Context, c *statusapi.Client) error {
				var err error
				ans, err = c.PolicyTrace(ctx, statusapi.TraceRequest{From: from, To: to, DPort: dport, Proto: p})
				return err
			}); err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), ans, ans.Text)
		},
	}
	a.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&from, "from", nil, "labels of the source (key=value, repeatable or comma-separated), or its IP address")
	f.StringSliceVar(&to, "to", nil, "labels of the destination, or its IP address")
	f.Uint16Var(&dport, "dport", 0, "destination port")
	f.StringVar(&proto, "proto", "tcp", "protocol: tcp or udp")
	f.StringArrayVar(&files, "file", nil, "trace these policy files or directories instead of asking the agent (repeatable)")
	return cmd
}
