package main

import (
	"bufio"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/agent/api"
	"github.com/sextant/sextant/cmd/sextant/printer"
	"github.com/sextant/sextant/collector/flow"
)

func newObserveCmd() *cobra.Command {
	var (
		socket string
		last   int
		follow bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Print flows from a running agent",
		Long: `Print the most recent flows a running agent has seen, and with --follow every
new one as it happens.

Compact output, one flow per line:

  TIME  NODE  comm(pid) SOURCE -> DESTINATION  PROTOCOL  METHOD URL  STATUS  [gRPC service/method STATUS]  [OUTCOME]  LATENCY

comm(pid) is the observed process, written on its side of the arrow: before
the source when it was the client, after the destination when it was the
server.

"?" marks what was on the wire but could not be decoded exactly (for example
a header the agent saw compressed against state from before it started); "-"
marks what was absent (no response, no gRPC status).`,
		Example: `  sextant observe                 # the last 20 flows
  sextant observe --last 100 -o json
  sextant observe -f              # follow new flows until Ctrl-C`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if last < 0 {
				return usageErrorf("--last %d: want a number >= 0", last)
			}
			format, err := printer.ParseFormat(output)
			if err != nil {
				return usageErrorf("-o: %v", err)
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			p := printer.New(out, format)
			client := api.NewClient(socket)
			return client.Flows(cmd.Context(), last, follow, func(f *flow.Flow) error {
				if err := p.Print(f); err != nil {
					return err
				}
				// Following is interactive: show each flow as it arrives.
				if follow {
					return out.Flush()
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", api.DefaultSocket, "unix socket of the agent's flow API")
	f.IntVar(&last, "last", api.DefaultLast, "print this many recent flows first")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new flows until interrupted")
	f.StringVarP(&output, "output", "o", string(printer.Compact), "output format: compact or json")
	return cmd
}
