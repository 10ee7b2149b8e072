package probes

import (
	"context"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sextant/sextant/testbed"
)

// BenchmarkLoad measures Load (verification included) + Close and reports
// the instructions the verifier processed for the frame walker.
func BenchmarkLoad(b *testing.B) {
	testbed.RequireRoot(b)
	var insns uint32
	for b.Loop() {
		p, err := Load(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, ps := range p.Stats().Programs {
			insns += ps.Instructions
		}
		b.ReportMetric(float64(p.LoadTime().Milliseconds()), "load-ms")
		p.Close()
	}
	b.ReportMetric(float64(insns)/float64(b.N), "verified-insns")
}

// BenchmarkTracedH2C runs h2c requests with the probes attached and a
// reader consuming the records: the cost of being observed, end to end.
// Compare with BenchmarkUntracedH2C.
func BenchmarkTracedH2C(b *testing.B) {
	testbed.RequireRoot(b)
	p, err := Load(Options{TraceSelf: true, KernelStats: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Uint64
	done := make(chan struct{})
	go func() { p.Run(ctx, func(*Event) { n.Add(1) }); close(done) }()
	benchH2C(b)
	cancel()
	<-done
	st := p.Stats()
	b.ReportMetric(float64(n.Load())/float64(b.N), "records/op")
	for _, ps := range st.Programs {
		if ps.RunCount == 0 {
			continue
		}
		if ps.Name == sextantProgSysExit {
			b.ReportMetric(float64(ps.RunTimeNs)/float64(ps.RunCount), "exit-ns/run")
		}
		b.Logf("%-15s %8d runs %6.0f ns/run", ps.Name, ps.RunCount, float64(ps.RunTimeNs)/float64(ps.RunCount))
	}
	for i, d := range st.Drops {
		if d != 0 {
			b.Logf("drops[%s] = %d", DropReason(i), d)
		}
	}
}

func BenchmarkUntracedH2C(b *testing.B) { benchH2C(b) }

func benchH2C(b *testing.B) {
	addr := h2cServer(b)
	c := h2cClient()
	defer c.CloseIdleConnections()
	for b.Loop() {
		doRequests(b, c, addr, 1, "bench")
	}
}

// BenchmarkSyscall measures what the probes add to syscalls that are not
// HTTP: every read/write of the host runs the enter and exit programs, so
// their cost on files, pipes and non-HTTP sockets is paid by everyone.
// One op is one write + one read of 64 bytes (devzero: one read). Compare
// the untraced and traced variants; kernel-ns/op is bpf_stats run time.
func BenchmarkSyscall(b *testing.B) {
	testbed.RequireRoot(b)
	kinds := []struct {
		name string
		fds  func(b *testing.B) (w, r int)
	}{
		{"devzero", func(b *testing.B) (int, int) {
			f, err := unix.Open("/dev/zero", unix.O_RDONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { unix.Close(f) })
			return -1, f
		}},
		{"pipe", func(b *testing.B) (int, int) {
			var p [2]int
			if err := unix.Pipe(p[:]); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
			return p[1], p[0]
		}},
		{"tcp", func(b *testing.B) (int, int) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close(); s.Close() })
			return rawFD(b, c), rawFD(b, s)
		}},
	}
	for _, traced := range []bool{false, true} {
		for _, k := range kinds {
			name := "untraced/" + k.name
			if traced {
				name = "traced/" + k.name
			}
			b.Run(name, func(b *testing.B) {
				var p *Probes
				if traced {
					var err error
					if p, err = Load(Options{TraceSelf: true, KernelStats: true}); err != nil {
						b.Fatal(err)
					}
					defer p.Close()
				}
				w, r := k.fds(b)
				buf := make([]byte, 64)
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.ResetTimer()
				for b.Loop() {
					if w >= 0 {
						if _, err := unix.Write(w, buf); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := unix.Read(r, buf); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if p != nil {
					var ns uint64
					for _, ps := range p.Stats().Programs {
						ns += ps.RunTimeNs
						if ps.RunCount > 0 {
							b.Logf("%-15s %6.2f runs/op %6.0f ns/run", ps.Name, float64(ps.RunCount)/float64(b.N), float64(ps.RunTimeNs)/float64(ps.RunCount))
						}
					}
					b.ReportMetric(float64(ns)/float64(b.N), "kernel-ns/op")
				}
			})
		}
	}
}

// rawFD is the fd of a TCP connection, switched to blocking mode so the
// benchmark's reads wait for data instead of returning EAGAIN.
func rawFD(b *testing.B, c net.Conn) int {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	if err := unix.SetNonblock(fd, false); err != nil {
		b.Fatal(err)
	}
	return fd
}
