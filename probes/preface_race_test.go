package probes

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A client that reads the server's SETTINGS on one thread while it writes
// its preface on another (grpc-go does) is still seen from its first byte:
// the read's program may run after the preface was written and before the
// write's own program decided. Before the fix about 2 % of these
// connections came out h2-midstream; the jitter makes the two meet.
func TestPrefaceWriteRacesFirstRead(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// SETTINGS with MAX_FRAME_SIZE 16384, as a grpc-go server writes
		// before it reads the preface.
		settings := []byte{0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0x40, 0}
		jitter := func(i int) time.Duration { return time.Duration(i*37%100) * time.Microsecond }
		go func() {
			for i := 0; ; i++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					time.Sleep(jitter(i))
					c.Write(settings)
					c.Read(make([]byte, 64))
				}()
			}
		}()
		const conns = 400
		clients := map[uint16]bool{}
		for i := 0; i < conns; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			clients[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = true
			read := make(chan struct{})
			go func() { c.Read(make([]byte, 64)); close(read) }()
			time.Sleep(jitter(i + 50))
			if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
				t.Fatal(err)
			}
			<-read
			c.Close()
		}
		ln.Close()
		g := group(rec.stop(t))
		byProto := map[Proto]int{}
		for _, ci := range g.conns {
			if clients[ci.Local.Port()] {
				byProto[ci.Proto]++
			}
		}
		// Both directions' first programs may race to create the socket's
		// state; the one that loses uses the winner's, so every
		// connection is named from its first byte.
		if byProto[ProtoH2] != conns {
			t.Errorf("client connections by protocol: %v, want all h2 (of %d)", byProto, conns)
		}
	})
}
