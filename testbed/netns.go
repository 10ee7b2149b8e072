package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// Netns is a network namespace of a test, joined to the host by a veth
// pair: HostAddr on the host's side, Addr inside (a /30 of the test's
// own in 10.214.0.0/16, on no other host).
type Netns struct {
	Name     string // under /run/netns
	Addr     string // inside
	HostAddr string
	HostIf   string // the host's side of the pair
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
	third, base := pid%250, (n%60)*4
	ns := &Netns{
		Name:     fmt.Sprintf("sxt%d-%d", pid, n),
		Addr:     fmt.Sprintf("10.214.%d.%d", third, base+2),
		HostAddr: fmt.Sprintf("10.214.%d.%d", third, base+1),
		HostIf:   fmt.Sprintf("sxh%d-%d", pid%100000, n),
	}
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
	return ns
}

// Command runs name inside the namespace.
func (ns *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}
