package probes

import (
	"bytes"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/http2"
)

// sink accepts TCP connections and reads them to the end.
func sink(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

func recordsOf(evs []*Event, port uint16) (conns []*Event, other int) {
	ids := map[uint64]bool{}
	for _, ev := range evs {
		if ev.Kind == KindConn && (ev.Conn.Local.Port() == port || ev.Conn.Remote.Port() == port) {
			ids[ev.ConnID] = true
			conns = append(conns, ev)
		}
	}
	for _, ev := range evs {
		if ev.Kind != KindConn && ids[ev.ConnID] {
			other++
		}
	}
	return conns, other
}

func TestGarbageIsIgnored(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		ln := sink(t)
		rnd := rand.New(rand.NewSource(1))
		for c := 0; c < 50; c++ {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 10; i++ {
				b := make([]byte, 1+rnd.Intn(20000))
				rnd.Read(b)
				if _, err := conn.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			conn.Close()
		}
		evs := rec.stop(t)
		port := netip.MustParseAddrPort(ln.Addr().String()).Port()
		if conns, other := recordsOf(evs, port); len(conns) != 0 || other != 0 {
			t.Errorf("random bytes were taken for HTTP: %d connections, %d records", len(conns), other)
			for _, c := range conns {
				t.Logf("%s %+v", c.Conn.Proto, c.Conn)
			}
		}
	})
}

// After a frame header that cannot be valid, that direction stops
// shipping and says so once.
func TestBadFrameStopsDirection(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		ln := sink(t)
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&b, nil)
		fr.WriteSettings()
		conn.Write(b.Bytes())
		bad := []byte{0, 0, 7, byte(http2.FramePing), 0, 0, 0, 0, 0} // PING must be 8 bytes long
		conn.Write(append(bad, make([]byte, 7)...))
		b.Reset()
		fr.WriteSettings() // valid, but after the error: must not be shipped
		conn.Write(b.Bytes())
		conn.Close()

		evs := rec.stop(t)
		port := netip.MustParseAddrPort(ln.Addr().String()).Port()
		conns, _ := recordsOf(evs, port)
		var client uint64
		for _, c := range conns {
			if c.Conn.Remote.Port() == port {
				client = c.ConnID
			}
		}
		if client == 0 {
			t.Fatalf("client connection not recognised")
		}
		var kinds []Kind
		for _, ev := range evs {
			if ev.ConnID != client || ev.Kind == KindConn || ev.Kind == KindClose || ev.Dir != Egress {
				continue
			}
			kinds = append(kinds, ev.Kind)
			if ev.Kind == KindParseError && (ev.Reason != ParseErrBadFrame || !bytes.Equal(ev.FrameHeader, bad)) {
				t.Errorf("parse error reason %d header %x", ev.Reason, ev.FrameHeader)
			}
		}
		if len(kinds) != 2 || kinds[0] != KindH2Frame || kinds[1] != KindParseError {
			t.Errorf("client egress records %v, want [h2_frame parse_error]", kinds)
		}
		if rec.stats.Drops[DropParseStopped] == 0 {
			t.Errorf("parse stop not counted")
		}
	})
}
