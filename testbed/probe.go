package testbed

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// What a connection attempt came to, as policy tests compare them.
const (
	ProbeOK      = "ok"
	ProbeEPERM   = "eperm"   // refused at connect()/sendto() (a cgroup hook said no): at once
	ProbeTimeout = "timeout" // dropped on the way (a SYN, a datagram)
)

// ProbeResult names a failed attempt; other errors keep their text.
func ProbeResult(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM):
		return ProbeEPERM
	case os.IsTimeout(err):
		return ProbeTimeout
	}
	return "error: " + err.Error()
}

// ProbeTCP connects to addr and returns the first line the server writes
// (the servers of policy tests write "ok"), or what the attempt came to.
func ProbeTCP(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ProbeResult(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ProbeResult(err)
	}
	return strings.TrimSpace(line)
}

// ProbeDial only connects (for servers that speak second).
func ProbeDial(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ProbeResult(err)
	}
	c.Close()
	return ProbeOK
}

// ProbeUDP sends up to three datagrams from an unconnected socket (so
// sendto goes through cgroup/sendmsg) and returns the first answer, or
// what the attempts came to.
func ProbeUDP(addr string) string {
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		return ProbeResult(err)
	}
	defer pc.Close()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return ProbeResult(err)
	}
	buf := make([]byte, 64)
	for range 3 {
		if _, err := pc.WriteTo([]byte("hi"), ua); err != nil {
			return ProbeResult(err)
		}
		pc.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		if n, _, err := pc.ReadFrom(buf); err == nil {
			return string(buf[:n])
		}
	}
	return ProbeTimeout
}

// ServeOK listens on each address with TCP and UDP, the peers the probes
// expect: a TCP connection is sent "ok\n" and closed, every datagram is
// answered "ok". It returns once every socket listens; they serve until
// the process ends.
func ServeOK(addrs []string) error {
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("ok\n"))
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte("ok"), from)
			}
		}()
	}
	return nil
}
