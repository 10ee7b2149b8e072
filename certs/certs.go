// Package certs makes and loads the certificates that secure TCP between
// sextant components with mutual TLS: agent ↔ relay and client ↔ relay or
// agent. Both ends present a certificate signed by the same CA and reject a
// peer that presents none or one from another CA.
//
// Generate writes a development CA plus one server and one client
// certificate, so that turning mTLS on is one command (`sextant certs`);
// production deployments bring their own PKI and only use the loaders.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// File names Generate writes into its directory.
const (
	CAFile         = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	ClientCertFile = "client.crt"
	ClientKeyFile  = "client.key"
)

// Files names the three PEM files one end of an mTLS connection needs.
type Files struct {
	Cert string // own certificate (PEM)
	Key  string // its private key (PEM)
	CA   string // CA that signed the peer's certificate (PEM)
}

// Empty reports whether no file is named (TLS off).
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

func (f Files) complete(side string) error {
	var missing []string
	for _, p := range []struct{ flag, v string }{{"cert", f.Cert}, {"key", f.Key}, {"ca", f.CA}} {
		if p.v == "" {
			missing = append(missing, p.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s TLS needs a certificate, its key and the CA; missing: %v (make a dev set with 'sextant certs --out DIR')", side, missing)
	}
	return nil
}

// ServerConfig returns the TLS configuration of a server that requires
// every client to present a certificate signed by f.CA.
func ServerConfig(f Files) (*tls.Config, error) {
	if err := f.complete("server"); err != nil {
		return nil, err
	}
	cert, pool, err := load(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientConfig returns the TLS configuration of a client that presents
// f.Cert and accepts only servers whose certificate f.CA signed for
// serverName (the host name or IP the client dials when empty: gRPC fills
// it in from the target).
func ClientConfig(f Files, serverName string) (*tls.Config, error) {
	if err := f.complete("client"); err != nil {
		return nil, err
	}
	cert, pool, err := load(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

func load(f Files) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load key pair %s, %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("CA %s: no PEM certificate in it", f.CA)
	}
	return cert, pool, nil
}

// ErrPlaintext is returned by CheckPlaintext for a non-loopback address.
var ErrPlaintext = errors.New("plaintext TCP beyond loopback")

// CheckPlaintext refuses plaintext TCP to or on addr ("host:port") unless
// host is a loopback IP or "localhost", or allowInsecure says the operator
// accepts unencrypted, unauthenticated traffic. A host name other than
// localhost is refused: what it resolves to can change.
func CheckPlaintext(addr string, allowInsecure bool) error {
	if allowInsecure || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%s: %w: turn on mTLS (certificate flags; 'sextant certs' makes a dev set) or allow it explicitly with --allow-insecure-tcp", addr, ErrPlaintext)
}

// IsLoopback reports whether addr ("host:port" or a bare host) names the
// loopback interface.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
