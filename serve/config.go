package serve

import (
	"fmt"
	"net"

	"github.com/sextant/sextant/certs"
)

// Config says where one API of a daemon answers: a unix socket, and
// optionally TCP with mTLS. The Observer APIs of agent and relay and the
// relay's query endpoint each have one.
type Config struct {
	// Socket is the unix socket, mode 0600, or 0660 for SocketGroup (a
	// group name or gid); "" for none.
	Socket      string `yaml:"socket"`
	SocketGroup string `yaml:"socketGroup"`
	// Listen is a TCP address ("" for none). It needs TLS, or
	// AllowInsecureTCP.
	Listen string `yaml:"listen"`
	// TLS names the server certificate, its key and the CA that signs
	// the clients' certificates: TCP clients must present one (mTLS).
	TLS certs.Files `yaml:"tls"`
	// AllowInsecureTCP serves Listen in plaintext: anyone who can reach
	// it, local users included, reads what it serves.
	AllowInsecureTCP bool `yaml:"allowInsecureTCP"`
	// MaxConns bounds each listener's connections (DefaultMaxConns).
	MaxConns int `yaml:"maxConns"`
}

// Bind binds the socket and the TCP address, each with its connection
// limit. Nothing is left bound on error.
func (c Config) Bind() ([]net.Listener, error) {
	var lns []net.Listener
	if c.Socket != "" {
		ln, err := Unix(c.Socket, c.SocketGroup)
		if err != nil {
			return nil, err
		}
		lns = append(lns, LimitConns(ln, c.MaxConns))
	}
	if c.Listen != "" {
		ln, err := c.listenTCP()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, LimitConns(ln, c.MaxConns))
	}
	if len(lns) == 0 {
		return nil, fmt.Errorf("neither a socket nor a TCP address to listen on")
	}
	return lns, nil
}

func (c Config) listenTCP() (net.Listener, error) {
	if c.TLS.Empty() {
		return TCP(c.Listen, nil, c.AllowInsecureTCP)
	}
	tc, err := certs.ServerConfig(c.TLS)
	if err != nil {
		return nil, fmt.Errorf("TLS for %s: %w", c.Listen, err)
	}
	return TCP(c.Listen, tc, false)
}

// URL writes a listener's address the way clients' --server takes it.
func URL(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix://" + a.String()
	}
	return a.String()
}
