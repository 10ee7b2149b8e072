package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sextant/sextant/certs"
)

func newCertsCmd() *cobra.Command {
	var (
		out  string
		opts certs.GenerateOptions
		days int
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a development CA and certificates for mTLS between agents, relay and clients",
		Long: `Write a development certificate authority and two certificates it signs
(ECDSA P-256) into --out:

  ca.crt, ca.key          the CA (keep ca.key private, or delete it)
  server.crt, server.key  for agents and the relay (names: localhost, 127.0.0.1,
                          ::1 and every --host)
  client.crt, client.key  for the relay towards agents, and for sextant observe
                          or the hubble CLI towards the relay

Keys are written with mode 0600. Existing files are not overwritten without
--force. For production, use certificates from your own PKI.`,
		Example: `  sextant certs --out ./tls --host relay.example --host 10.0.0.7
  sextant relay --agent 10.0.0.8:4244 --listen 10.0.0.7:4245 \
    --tls-cert tls/server.crt --tls-key tls/server.key --tls-ca tls/ca.crt \
    --agent-tls-cert tls/client.crt --agent-tls-key tls/client.key --agent-tls-ca tls/ca.crt
  sextant observe --server tls://10.0.0.7:4245 --tls-ca-cert-files tls/ca.crt \
    --tls-client-cert-file tls/client.crt --tls-client-key-file tls/client.key`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf("--out: name the directory to write the certificates to")
			}
			if days <= 0 {
				return usageErrorf("--days %d: want a number of days > 0", days)
			}
			opts.Validity = time.Duration(days) * 24 * time.Hour
			written, err := certs.Generate(out, opts)
			if err != nil {
				return err
			}
			for _, p := range written {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "valid for %d days; server names: localhost, 127.0.0.1, ::1%s\n", days, hostList(opts.Hosts))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "directory to write the certificates to (created when missing)")
	f.StringArrayVar(&opts.Hosts, "host", nil, "extra DNS name or IP address for the server certificate (repeat for more)")
	f.IntVar(&days, "days", 365, "validity of the certificates in days")
	f.BoolVar(&opts.Force, "force", false, "overwrite existing files")
	return cmd
}

func hostList(hosts []string) string {
	s := ""
	for _, h := range hosts {
		s += ", " + h
	}
	return s
}
