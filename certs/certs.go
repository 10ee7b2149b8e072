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
	"path/filepath"

	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/spf13/pflag"
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

// DefaultDir is where `sextant certs` writes and where the agent and the
// relay look for their certificates when no --tls-* flag names them.
const DefaultDir = "/etc/sextant/tls"

// Files names the three PEM files one end of an mTLS connection needs.
type Files struct {
	Cert string `yaml:"cert"` // own certificate (PEM)
	Key  string `yaml:"key"`  // its private key (PEM)
	CA   string `yaml:"ca"`   // CA that signed the peer's certificate (PEM)
}

// Empty reports whether no file is named (TLS off).
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

// ServerFiles are the server certificate, its key and the CA in dir, as
// Generate names them.
func ServerFiles(dir string) Files {
	return Files{Cert: filepath.Join(dir, ServerCertFile), Key: filepath.Join(dir, ServerKeyFile), CA: filepath.Join(dir, CAFile)}
}

// ClientFiles are the client certificate, its key and the CA in dir.
func ClientFiles(dir string) Files {
	return Files{Cert: filepath.Join(dir, ClientCertFile), Key: filepath.Join(dir, ClientKeyFile), CA: filepath.Join(dir, CAFile)}
}

// Exist reports whether every named file is there.
func (f Files) Exist() bool {
	for _, p := range []string{f.Cert, f.Key, f.CA} {
		if _, err := os.Stat(p); p == "" || err != nil {
			return false
		}
	}
	return true
}

// Flags registers --<prefix>tls-cert, --<prefix>tls-key and
// --<prefix>tls-ca on fs for f; peer says whose certificates the CA signs
// ("clients", "agents").
func Flags(fs *pflag.FlagSet, prefix string, f *Files, peer string) {
	fs.StringVar(&f.Cert, prefix+"tls-cert", f.Cert, "certificate (PEM) presented to "+peer+" for mTLS")
	fs.StringVar(&f.Key, prefix+"tls-key", f.Key, "private key (PEM) of --"+prefix+"tls-cert")
	fs.StringVar(&f.CA, prefix+"tls-ca", f.CA, "CA (PEM) that signs the certificates of "+peer)
}

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
