package probes

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
)

// scatter cuts b into n-byte slices; every other one is a copy, so the
// segments of one call are partly contiguous in memory (a writer slicing
// one buffer, as gRPC C-core does), partly not.
func scatter(b []byte, n int) net.Buffers {
	var out net.Buffers
	for i := 0; len(b) > 0; i++ {
		k := min(n, len(b))
		s := b[:k]
		if i%2 == 1 {
			s = bytes.Clone(s)
		}
		out = append(out, s)
		b = b[k:]
	}
	return out
}

// An HTTP/2 client whose writes are writev calls of hundreds of tiny
// segments and whose reads are recvmsg calls into many small buffers:
// frames cut anywhere, header blocks across segments.
func TestVectoredIO(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		addr := h2cServer(t)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()

		var wire bytes.Buffer
		fr := http2.NewFramer(&wire, nil)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		wire.WriteString(http2.ClientPreface)
		fr.WriteSettings()
		const streams = 5
		bodies := map[uint32][]byte{}
		for i := 0; i < streams; i++ {
			id := uint32(2*i + 1)
			block.Reset()
			for _, f := range []hpack.HeaderField{
				{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
				{Name: ":authority", Value: addr}, {Name: ":path", Value: fmt.Sprintf("/echo/vec%d", i)},
				{Name: "x-filler", Value: string(bytes.Repeat([]byte{'f'}, 100*i))},
			} {
				enc.WriteField(f)
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true})
			body := bytes.Repeat([]byte{'v'}, 1000*i+7)
			bodies[id] = body
			fr.WriteData(id, true, body)
		}
		// 3 bytes a segment: ~1900 segments, writev takes 1024 at most per
		// call (UIO_MAXIOV), so there are several calls.
		segs := scatter(wire.Bytes(), 3)
		sent, nsegs := wire.Len(), len(segs)
		if _, err := segs.WriteTo(conn); err != nil {
			t.Fatal(err)
		}

		// Read every response with recvmsg into 40 buffers of 13 bytes, on
		// the connection's own fd (a dup would be another connection to
		// syscall capture, which knows sockets by (process, fd)).
		rc, err := conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		var got bytes.Buffer
		ended := map[uint32]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(ended) < streams && time.Now().Before(deadline) {
			bufs := make([][]byte, 40)
			for i := range bufs {
				bufs[i] = make([]byte, 13)
			}
			var n int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, _, _, _, rerr = unix.RecvmsgBuffers(int(fd), bufs, nil, 0)
				return rerr != unix.EAGAIN
			})
			if err != nil || rerr != nil || n == 0 {
				t.Fatalf("recvmsg: %d %v %v", n, err, rerr)
			}
			for _, b := range bufs {
				k := min(n, len(b))
				got.Write(b[:k])
				n -= k
			}
			// Whole frames only: a framer reading a partial one would
			// consume it.
			for got.Len() >= 9 {
				b := got.Bytes()
				n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
				if len(b) < 9+n {
					break
				}
				typ, flags, id := http2.FrameType(b[3]), http2.Flags(b[4]), uint32(b[5]&0x7f)<<24|uint32(b[6])<<16|uint32(b[7])<<8|uint32(b[8])
				got.Next(9 + n)
				if typ == http2.FrameData && flags.Has(http2.FlagDataEndStream) {
					ended[id] = true
				}
				if typ == http2.FrameSettings && !flags.Has(http2.FlagSettingsAck) {
					var ack bytes.Buffer
					http2.NewFramer(&ack, nil).WriteSettingsAck()
					conn.Write(ack.Bytes())
				}
			}
		}
		if len(ended) < streams {
			t.Fatalf("%d of %d responses ended", len(ended), streams)
		}
		conn.(*net.TCPConn).CloseWrite()
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, addr)
		ex := make([]exchange, streams)
		for i := range ex {
			id := uint32(2*i + 1)
			p := fmt.Sprintf("/echo/vec%d", i)
			ex[i] = exchange{path: p, reqBody: bodies[id], respBody: append([]byte("echo:"+p+":"), bodies[id]...)}
		}
		checkSide(t, g, cl, ex, true)
		checkSide(t, g, sv, ex, false)
		if rec.stats.Drops[DropIOV] != 0 || rec.stats.Drops[DropUnseen] != 0 {
			t.Errorf("drops %v", rec.stats.Drops)
		}
		t.Logf("%d bytes in %d segments; %d user reads for %d chunks host-wide", sent, nsegs, rec.stats.UserReads, rec.stats.Chunks)
	})
}
