package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/demo"
)

func newDemoCmd() *cobra.Command {
	var (
		opts    demo.Options
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Serve and call a small HTTP/1.1, h2c and gRPC workload until interrupted",
		Long: `Run a demo workload on loopback for an agent to observe: an HTTP service that
speaks HTTP/1.1 and h2c on one port, the gRPC interop test service, and
clients that call both at a steady rate.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Rate <= 0 {
				return usageErrorf("--rate %v: want calls per second > 0", opts.Rate)
			}
			if verbose {
				opts.Log = cmd.OutOrStdout()
			}
			opts.Listening = func(httpAddr, grpcAddr string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "demo: HTTP/1.1 + h2c on %s, gRPC on %s, %g calls/s per client (Ctrl-C stops)\n",
					httpAddr, grpcAddr, opts.Rate)
			}
			if err := demo.Run(cmd.Context(), opts); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.HTTPAddr, "http-addr", "127.0.0.1:0", "address of the HTTP/1.1 + h2c service (default: a free loopback port)")
	f.StringVar(&opts.GRPCAddr, "grpc-addr", "127.0.0.1:0", "address of the gRPC service (default: a free loopback port)")
	f.Float64Var(&opts.Rate, "rate", 5, "calls per second per client")
	f.BoolVarP(&verbose, "verbose", "v", false, "print one line per call the clients make")
	return cmd
}
