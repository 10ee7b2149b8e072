package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sextant/sextant/agent"
)

// serverFlags says where the Observer API is and how to reach it; the flag
// names are those of the hubble CLI.
type serverFlags struct {
	server     string
	tls        bool
	serverName string
	caFiles    []string
	certFile   string
	keyFile    string
}

func (s *serverFlags) register(cmd interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
	StringSliceVar(*[]string, string, []string, string)
}) {
	cmd.StringVar(&s.server, "server", "unix://"+agent.DefaultSocket, "Observer API of an agent or relay: unix:///path, host:port, or tls://host:port")
	cmd.BoolVar(&s.tls, "tls", false, "use TLS (implied by tls://)")
	cmd.StringVar(&s.serverName, "tls-server-name", "", "server name to verify (default: the host of --server)")
	cmd.StringSliceVar(&s.caFiles, "tls-ca-cert-files", nil, "CA certificates (PEM) that sign the server's certificate (default: the system's)")
	cmd.StringVar(&s.certFile, "tls-client-cert-file", "", "client certificate (PEM) for mTLS")
	cmd.StringVar(&s.keyFile, "tls-client-key-file", "", "client key (PEM) for mTLS")
}

// target returns the gRPC target and whether TLS is on.
func (s *serverFlags) target() (string, bool) {
	addr, useTLS := s.server, s.tls
	if rest, ok := strings.CutPrefix(addr, "tls://"); ok {
		addr, useTLS = rest, true
	}
	if strings.HasPrefix(addr, "/") {
		addr = "unix://" + addr
	}
	return addr, useTLS
}

func (s *serverFlags) dial() (*grpc.ClientConn, error) {
	target, useTLS := s.target()
	creds := insecure.NewCredentials()
	if useTLS {
		cfg := &tls.Config{ServerName: s.serverName, MinVersion: tls.VersionTLS13}
		if len(s.caFiles) > 0 {
			pool := x509.NewCertPool()
			for _, f := range s.caFiles {
				pem, err := os.ReadFile(f)
				if err != nil {
					return nil, fmt.Errorf("read CA certificates: %w", err)
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("read CA certificates %s: no PEM certificate in it", f)
				}
			}
			cfg.RootCAs = pool
		}
		if s.certFile != "" || s.keyFile != "" {
			cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, usageErrorf("--server %q: %v", s.server, err)
	}
	return conn, nil
}

// explain turns the errors of a failed call into what to do about them.
func (s *serverFlags) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	target, useTLS := s.target()
	msg := st.Message()
	unix := strings.HasPrefix(target, "unix://")
	switch {
	case st.Code() == codes.Unavailable && unix && (strings.Contains(msg, "no such file") || strings.Contains(msg, "connection refused")):
		return fmt.Errorf("no agent running at %s (start one with `sextant agent`)", s.server)
	case st.Code() == codes.Unavailable && strings.Contains(msg, "permission denied"):
		return fmt.Errorf("permission denied: %s belongs to the agent's user (run as root, or start the agent with --socket-group)", strings.TrimPrefix(target, "unix://"))
	case st.Code() == codes.Unavailable && strings.Contains(msg, "connection refused"):
		return fmt.Errorf("nothing listens at %s (is the agent or relay running, and on that address?)", s.server)
	case st.Code() == codes.Unavailable && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Errorf("%s does not speak TLS: drop --tls / tls://", s.server)
	case st.Code() == codes.Unavailable && !useTLS && (strings.Contains(msg, "server preface") || strings.Contains(msg, "EOF")):
		return fmt.Errorf("%s closed the connection: it probably expects TLS (use tls://host:port with --tls-ca-cert-files, and client certificates for mTLS): %s", s.server, msg)
	case st.Code() == codes.Unavailable && useTLS && (strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:")):
		return fmt.Errorf("TLS handshake with %s failed (check --tls-ca-cert-files, --tls-client-cert-file/--tls-client-key-file and --tls-server-name): %s", s.server, msg)
	case st.Code() == codes.InvalidArgument:
		return &usageError{errors.New(msg)}
	}
	return fmt.Errorf("%s: %s: %s", s.server, st.Code(), msg)
}
