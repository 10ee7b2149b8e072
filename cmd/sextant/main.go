// Command sextant observes HTTP/2, gRPC and HTTP/1.x exchanges of every
// process on a Linux host with eBPF.
//
//	sextant agent     attach the probes and serve flows as the Hubble Observer API
//	sextant observe   print flows from an agent or relay
//	sextant relay     merge the flows of many agents into one Observer API
//	sextant certs     make a dev CA and certificates for mTLS
//	sextant demo      run a small HTTP + gRPC workload to observe
//	sextant query     query the relay's flow history
//	sextant policy    validate policy files, list the policy in force, trace a decision
//	sextant proxy     status of the node proxy, validate its inputs
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first SIGINT/SIGTERM starts a graceful shutdown. Scripts that
	// stop their children on Ctrl-C add a SIGTERM to the terminal's SIGINT,
	// so only a third signal forces the exit of a shutdown that hangs.
	signals := make(chan os.Signal, 3)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		for n := 1; ; n++ {
			sig, ok := <-signals
			if !ok {
				return
			}
			switch {
			case n == 1:
				cancel()
			case n >= 3:
				fmt.Fprintf(stderr, "%v received 3 times: exiting without cleanup\n", sig)
				os.Exit(exitError)
			}
		}
	}()

	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	return exitError
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sextant",
		Short: "Observe HTTP/2, gRPC and HTTP/1.x traffic of every process with eBPF",
		Long: `sextant attaches eBPF probes that see the socket traffic of every process on
this host, decodes HTTP/2 (with full HPACK), gRPC and HTTP/1.x exchanges, and
prints them as flows.

Start an agent (as root), then watch what it sees:

  sudo sextant agent
  sudo sextant observe --follow`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		// Errors are printed once, by run, with the exit code they deserve.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newAgentCmd(), newObserveCmd(), newRelayCmd(), newCertsCmd(), newDemoCmd(), newQueryCmd(), newPolicyCmd(), newProxyCmd())
	return root
}

// usageError marks an error in how the command was called (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// newLogger returns a text logger on stderr at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
