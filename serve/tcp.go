package serve

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// ErrPlaintext is returned for a plaintext TCP listener or dial that the
// operator did not explicitly allow.
var ErrPlaintext = errors.New("plaintext TCP is not allowed")

// TCP listens on addr. With tc set, every connection is TLS and, when tc
// requires client certificates (certs.ServerConfig does), only clients
// holding a certificate of its CA are served. Without tc the listener is
// refused unless allowInsecure: loopback is not authentication, any local
// user can connect to 127.0.0.1.
func TCP(addr string, tc *tls.Config, allowInsecure bool) (net.Listener, error) {
	if tc == nil && !allowInsecure {
		return nil, fmt.Errorf("listen on %s: %w: any local user could connect; turn on mTLS (--tls-cert, --tls-key, --tls-ca; 'sextant certs' makes a development set) or accept plaintext with --allow-insecure-tcp", addr, ErrPlaintext)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if tc != nil {
		tc = tc.Clone()
		if len(tc.NextProtos) == 0 {
			tc.NextProtos = []string{"h2"} // gRPC clients insist on ALPN
		}
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// CheckDial refuses a plaintext connection to addr that the operator did
// not explicitly allow; unix sockets are always fine (their mode decides).
func CheckDial(addr string, secure, allowInsecure bool) error {
	if secure || allowInsecure || isUnix(addr) {
		return nil
	}
	return fmt.Errorf("%s: %w: turn on mTLS (client certificate flags; 'sextant certs' makes a development set), use the agent's unix socket (unix:///path), or accept plaintext with --allow-insecure-tcp", addr, ErrPlaintext)
}

func isUnix(addr string) bool {
	return len(addr) > 7 && addr[:7] == "unix://"
}
