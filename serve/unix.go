// Package serve is where sextant's daemons answer: unix sockets readable by
// their owner (and a named group), TCP only with mutual TLS unless the
// operator explicitly accepts plaintext, and limits on every server (size,
// streams, connections, idle time) so that a local user or a remote peer
// can neither read what it may not nor exhaust the daemon. docs/security.md
// states the trust model these enforce.
package serve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Unix listens on a unix socket at path, readable and writable by the
// owner only (flows carry URLs and headers of every process on the host;
// history answers SQL), or
// by the owner and group when group is set (a group name or gid). The parent
// directory is created (0700, or 0750 with a group) when missing. A socket
// file left behind by an agent that died is replaced; one that still
// answers is not.
func Unix(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		var err error
		if gid, err = lookupGroup(group); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		mode := os.FileMode(0o700)
		if gid >= 0 {
			mode = 0o750
		}
		if err := os.MkdirAll(dir, mode); err != nil {
			return nil, fmt.Errorf("create socket directory %s: %w", dir, err)
		}
		if gid >= 0 {
			if err := os.Chown(dir, -1, gid); err != nil {
				return nil, fmt.Errorf("give socket directory %s to group %s: %w", dir, group, err)
			}
		}
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give %s to group %s: %w", path, group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s to mode %v: %w", path, mode, err)
	}
	return ln, nil
}

func lookupGroup(group string) (int, error) {
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return -1, fmt.Errorf("socket group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another socket path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another process is already listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}
