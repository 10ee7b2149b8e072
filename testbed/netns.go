package testbed

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// Netns is a network namespace of a test, joined to the host by a veth
// pair: HostAddr on the host's side, Addr inside, and an IPv6 pair on the
// same link. Addresses are a /30 and a /64 of the test process's own
// (from its pid: 10.128.0.0/9 and fd00:5e7a::/32, on no other host).
type Netns struct {
	Name     string // under /run/netns
	Path     string // /run/netns/<Name>
	Addr     string // inside
	HostAddr string
	HostIf   string // the host's side of the pair
	// Addr6, HostAddr6: unique local addresses on the same pair.
	Addr6, HostAddr6 string
}

var netnsSeq atomic.Int32

// NewNetns makes a network namespace and its veth pair, removed when the
// test ends. It needs root and iproute2.
func NewNetns(tb testing.TB) *Netns {
	tb.Helper()
	RequireRoot(tb)
	if _, err := exec.LookPath("ip"); err != nil {
		Missing(tb, "ip (iproute2) not installed")
	}
	n := int(netnsSeq.Add(1))
	pid := os.Getpid()
	// 64 pairs per process, 32768 processes: /30 number pid%32768*64 + n%64.
	slot := uint32(pid%32768)*64 + uint32(n%64)
	v := uint32(10)<<24 | 1<<23 | slot*4 // 10.128.0.0/9
	v4 := func(off uint32) string {
		a := v + off
		return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}).String()
	}
	ns := &Netns{
		Name:      fmt.Sprintf("sxt%d-%d", pid, n),
		Addr:      v4(2),
		HostAddr:  v4(1),
		HostIf:    fmt.Sprintf("sxh%d-%d", pid%100000, n),
		Addr6:     fmt.Sprintf("fd00:5e7a:%x:%x::2", pid%65536, n),
		HostAddr6: fmt.Sprintf("fd00:5e7a:%x:%x::1", pid%65536, n),
	}
	ns.Path = "/run/netns/" + ns.Name
	peer := fmt.Sprintf("sxn%d-%d", pid%100000, n)
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns.Name)
	tb.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", ns.HostIf).Run()
		_ = exec.Command("ip", "netns", "del", ns.Name).Run()
	})
	run("link", "add", ns.HostIf, "type", "veth", "peer", "name", peer, "netns", ns.Name)
	run("addr", "add", ns.HostAddr+"/30", "dev", ns.HostIf)
	run("link", "set", ns.HostIf, "up")
	run("-n", ns.Name, "addr", "add", ns.Addr+"/30", "dev", peer)
	run("-n", ns.Name, "link", "set", peer, "up")
	run("-n", ns.Name, "link", "set", "lo", "up")
	run("-6", "addr", "add", ns.HostAddr6+"/64", "dev", ns.HostIf, "nodad")
	run("-6", "-n", ns.Name, "addr", "add", ns.Addr6+"/64", "dev", peer, "nodad")
	return ns
}

// Command runs name inside the namespace.
func (ns *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}
