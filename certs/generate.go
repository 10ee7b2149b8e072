package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// GenerateOptions configures Generate.
type GenerateOptions struct {
	// Hosts are added to the server certificate's names, next to
	// localhost, 127.0.0.1 and ::1: DNS names or IP addresses the agents
	// and the relay are reached at.
	Hosts []string
	// Validity of every certificate (365 days when 0).
	Validity time.Duration
	// Force overwrites existing files.
	Force bool
}

// Generate writes a development CA and a server and a client certificate
// signed by it (ECDSA P-256) into dir, keys with mode 0600. It refuses to
// overwrite existing files unless opts.Force. It returns the paths written.
func Generate(dir string, opts GenerateOptions) ([]string, error) {
	if opts.Validity <= 0 {
		opts.Validity = 365 * 24 * time.Hour
	}
	names := []string{CAFile, CAKeyFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile}
	if !opts.Force {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if _, err := os.Stat(p); err == nil {
				return nil, fmt.Errorf("%s exists: refusing to overwrite (use --force)", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("stat %s: %w", p, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}

	now := time.Now().Add(-5 * time.Minute) // tolerate small clock skew between hosts
	notAfter := now.Add(opts.Validity)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "sextant dev CA"},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, opts.Hosts...)
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "sextant server"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(server.IPAddresses, ip.Equal) {
				server.IPAddresses = append(server.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(server.DNSNames, h) {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "sextant client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}

	var written []string
	write := func(name string, block *pem.Block, mode os.FileMode) error {
		p := filepath.Join(dir, name)
		// Remove first so that a forced rewrite gets the right mode.
		_ = os.Remove(p)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), mode); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		written = append(written, p)
		return nil
	}
	if err := write(CAFile, &pem.Block{Type: "CERTIFICATE", Bytes: caDER}, 0o644); err != nil {
		return written, err
	}
	if err := writeKey(write, CAKeyFile, caKey); err != nil {
		return written, err
	}
	for _, leaf := range []struct {
		tmpl            *x509.Certificate
		certFile, keyFn string
	}{{server, ServerCertFile, ServerKeyFile}, {client, ClientCertFile, ClientKeyFile}} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return written, fmt.Errorf("%s key: %w", leaf.tmpl.Subject.CommonName, err)
		}
		leaf.tmpl.SerialNumber = serial()
		leaf.tmpl.NotBefore, leaf.tmpl.NotAfter = now, notAfter
		leaf.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, leaf.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return written, fmt.Errorf("%s certificate: %w", leaf.tmpl.Subject.CommonName, err)
		}
		if err := write(leaf.certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}, 0o644); err != nil {
			return written, err
		}
		if err := writeKey(write, leaf.keyFn, key); err != nil {
			return written, err
		}
	}
	return written, nil
}

func writeKey(write func(string, *pem.Block, os.FileMode) error, name string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return write(name, &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the system's randomness source is broken
	}
	return n
}
