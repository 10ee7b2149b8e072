package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/config"
	"github.com/sextant/sextant/serve"
)

// withConfigFile applies the file named by --config under the flags: flag
// defaults, then what the file says, then the flags given on the command
// line. The flags are bound to the fields of file's sections, so the file
// is decoded over them and the given flags set again.
func withConfigFile(cmd *cobra.Command, path string, file *config.File) error {
	if path == "" {
		return nil
	}
	type given struct {
		f    *pflag.Flag
		vals []string
	}
	var set []given
	cmd.Flags().Visit(func(f *pflag.Flag) {
		g := given{f: f}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			g.vals = sv.GetSlice()
		} else {
			g.vals = []string{f.Value.String()}
		}
		set = append(set, g)
	})
	file.APIVersion, file.Kind = "", ""
	if err := config.Decode(path, file); err != nil {
		return usageErrorf("--config: %v", err)
	}
	for _, g := range set {
		if sv, ok := g.f.Value.(pflag.SliceValue); ok {
			if err := sv.Replace(g.vals); err != nil {
				return usageErrorf("--%s: %v", g.f.Name, err)
			}
			continue
		}
		if err := g.f.Value.Set(g.vals[0]); err != nil {
			return usageErrorf("--%s: %v", g.f.Name, err)
		}
	}
	return nil
}

// listenFlags registers the flags of one API endpoint: its socket, its TCP
// address and mTLS.
func listenFlags(f *pflag.FlagSet, c *serve.Config, what, socket string) {
	f.StringVar(&c.Socket, "socket", socket, "unix socket of the "+what+" (mode 0600; '' for none)")
	f.StringVar(&c.SocketGroup, "socket-group", "", "group (name or gid) that may also use the sockets (mode 0660)")
	f.StringVar(&c.Listen, "listen", "", "also serve the "+what+" on this TCP address, with mTLS (default: the usual port on loopback when certificates are in "+certs.DefaultDir+"; 'off' for none)")
	f.BoolVar(&c.AllowInsecureTCP, "allow-insecure-tcp", false, "allow plaintext TCP (listening and dialing): anyone who reaches the address, local users included, reads every flow")
	certs.Flags(f, "", &c.TLS, "clients (mTLS)")
}

// defaultTLS finishes an endpoint's TCP side: certificates from
// certs.DefaultDir when none are named, and the usual address when none is
// given but certificates are at hand. Without either, TCP stays off:
// loopback is not authentication.
func defaultTLS(c *serve.Config, usual string) {
	if c.TLS.Empty() && !c.AllowInsecureTCP {
		if def := certs.ServerFiles(certs.DefaultDir); def.Exist() {
			c.TLS = def
		}
	}
	switch c.Listen {
	case "off":
		c.Listen = ""
	case "":
		if !c.TLS.Empty() {
			c.Listen = usual
		}
	}
}
