package redirect_test

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sextant/sextant/proxy/redirect"
	"github.com/sextant/sextant/proxy/xdstest"
)

func TestMain(m *testing.M) { os.Exit(xdstest.Main(m)) }

const mark = 0x5e7a

func listen(t *testing.T) (net.Listener, netip.AddrPort) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, netip.MustParseAddrPort(l.Addr().String())
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", l.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dial(t *testing.T, to netip.AddrPort, mark int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if mark != 0 {
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) })
		}
		return serr
	}}
	c, err := d.Dial("tcp", to.String())
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConnectRedirectKeepsOriginalDestination(t *testing.T) {
	cg := xdstest.Cgroup(t)
	r, err := redirect.Load(redirect.Options{Cgroup: cg, SkipMark: mark})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	proxyL, proxy := listen(t)
	dstL, dst := listen(t)
	if err := r.Set(map[netip.AddrPort]netip.AddrPort{dst: proxy}); err != nil {
		t.Fatal(err)
	}

	// An unmarked connect to dst lands on the proxy, which learns dst.
	c := dial(t, dst, 0)
	if got := c.RemoteAddr().String(); got != proxy.String() {
		t.Errorf("client's connection shows remote %s, want the proxy %s", got, proxy)
	}
	pc := accept(t, proxyL)
	orig, err := redirect.SockoptOriginalDst(pc)
	if err != nil || orig != dst {
		t.Errorf("SO_ORIGINAL_DST: %v %v, want %s", orig, err, dst)
	}
	if got, ok := r.OriginalDst(netip.MustParseAddrPort(pc.RemoteAddr().String())); !ok || got != dst {
		t.Errorf("OriginalDst map: %v %v, want %s", got, ok, dst)
	}
	// A socket the program did not redirect gets the kernel's answer.
	plain := dial(t, proxy, 0)
	if _, err := redirect.SockoptOriginalDst(accept(t, proxyL)); err == nil {
		t.Error("SO_ORIGINAL_DST answered for a connection nobody redirected")
	}
	plain.Close()

	// The proxy's own upstream (marked) goes where it dials.
	dial(t, dst, mark)
	accept(t, dstL)

	// Once dst is no longer named, connects go straight to it.
	if err := r.Set(nil); err != nil {
		t.Fatal(err)
	}
	dial(t, dst, 0)
	accept(t, dstL)
	if st, err := r.Stats(); err != nil || st.Redirected != 1 || st.Answered != 1 {
		t.Errorf("stats %+v %v, want 1 redirected, 1 answered", st, err)
	}
}
