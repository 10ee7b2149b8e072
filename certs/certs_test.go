package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func generate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := Generate(dir, GenerateOptions{Hosts: []string{"relay.example", "10.0.0.7"}}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	return dir
}

// serve accepts TLS connections on loopback and writes "ok" after a
// completed handshake; handshake errors are reported on errs.
func serve(t *testing.T, cfg *tls.Config) (addr string, errs <-chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					ch <- err
					return
				}
				_, _ = c.Write([]byte("ok"))
				ch <- nil
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// exchange dials addr and reads the server's "ok": with TLS 1.3 a client
// certificate the server refuses only shows on the first read.
func exchange(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ok" {
		return errors.New("unexpected reply " + string(buf))
	}
	return nil
}

func TestMutualTLS(t *testing.T) {
	good, other := generate(t), generate(t)
	srvCfg, err := ServerConfig(ServerFiles(good))
	if err != nil {
		t.Fatal(err)
	}
	addr, serverErrs := serve(t, srvCfg)

	client := func(f Files, serverName string) *tls.Config {
		t.Helper()
		cfg, err := ClientConfig(f, serverName)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	serverSide := func() error {
		select {
		case err := <-serverErrs:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("server saw no handshake")
			return nil
		}
	}

	t.Run("accepted", func(t *testing.T) {
		for _, name := range []string{"localhost", "127.0.0.1", "relay.example", "10.0.0.7"} {
			if err := exchange(addr, client(ClientFiles(good), name)); err != nil {
				t.Errorf("server name %s: %v", name, err)
			}
			if err := serverSide(); err != nil {
				t.Errorf("server side, name %s: %v", name, err)
			}
		}
	})
	t.Run("client trusts another CA", func(t *testing.T) {
		err := exchange(addr, client(ClientFiles(other), "localhost"))
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("want unknown authority, got %v", err)
		}
		if serverSide() == nil {
			t.Error("server completed the handshake")
		}
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		f := ClientFiles(other)
		f.CA = filepath.Join(good, CAFile) // trusts the server, but its own cert is foreign
		if err := exchange(addr, client(f, "localhost")); err == nil {
			t.Error("server accepted a client certificate of another CA")
		}
		if err := serverSide(); err == nil {
			t.Error("server completed the handshake")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cfg := client(ClientFiles(good), "localhost")
		cfg.Certificates = nil
		if err := exchange(addr, cfg); err == nil {
			t.Error("server accepted a client without certificate")
		}
		if err := serverSide(); err == nil {
			t.Error("server completed the handshake")
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		if err := exchange(addr, client(ClientFiles(good), "elsewhere.example")); err == nil {
			t.Error("client accepted a certificate not made for the name it dialed")
		}
		_ = serverSide()
	})
}

func TestGenerateRefusesOverwriteAndProtectsKeys(t *testing.T) {
	dir := generate(t)
	if _, err := Generate(dir, GenerateOptions{}); err == nil {
		t.Error("second Generate overwrote the first set")
	}
	if _, err := Generate(dir, GenerateOptions{Force: true}); err != nil {
		t.Errorf("forced Generate: %v", err)
	}
	for _, k := range []string{CAKeyFile, ServerKeyFile, ClientKeyFile} {
		st, err := os.Stat(filepath.Join(dir, k))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", k, st.Mode().Perm())
		}
	}
}

func TestIncompleteFiles(t *testing.T) {
	if _, err := ServerConfig(Files{Cert: "a.crt"}); err == nil {
		t.Error("server config without key and CA")
	}
	if _, err := ClientConfig(Files{Cert: "a.crt", Key: "a.key"}, ""); err == nil {
		t.Error("client config without CA")
	}
}
