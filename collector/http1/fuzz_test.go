package http1

import (
	"encoding/binary"
	"github.com/sextant/sextant/flow"
	"slices"
	"testing"
	"time"
)

// FuzzFeed drives a connection with arbitrary reads, writes, losses and a
// close. Each op is: a control byte (bit 0 direction, bits 1-2 kind), then
// for Feed a 2-byte length and that many bytes; kind 2 also takes a 2-byte
// count of unshipped bytes and ships the last 8 as a tail.
func FuzzFeed(f *testing.F) {
	op := func(ctl byte, data string, hidden uint16) []byte {
		b := []byte{ctl}
		b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
		b = append(b, data...)
		if ctl>>1&3 == 2 {
			b = binary.BigEndian.AppendUint16(b, hidden)
		}
		return b
	}
	const ingress, egress = byte(flow.Ingress), byte(flow.Egress)
	req := "GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: x\r\n\r\n"
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	f.Add(slices.Concat(op(ingress, req, 0), op(egress, resp, 0)))
	f.Add(slices.Concat(op(ingress, req+req, 0), op(egress, chunked, 0), op(egress, resp, 0)))
	f.Add(slices.Concat(op(ingress, "G", 0), op(ingress, req[1:], 0), op(egress|4, resp, 2000), op(ingress|6, "", 0)))
	f.Add(slices.Concat(op(ingress, "POST /p HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 0),
		op(ingress|4, "xxxx", 4996), op(egress, "HTTP/1.0 200 OK\r\n\r\nbody", 0)))
	f.Add(slices.Concat(op(egress, "HEAD / HTTP/1.1\r\n\r\n", 0), op(ingress, "HTTP/1.1 101 Switching\r\n\r\n", 0)))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Config{MaxPending: 3, MaxHeaderBytes: 512}
		d := NewDecoder(cfg)
		emitted := 0
		c := d.NewConn(func(e *Exchange) {
			emitted++
			for _, h := range slices.Concat(e.RequestHeaders, e.ResponseHeaders) {
				if slices.Contains(secretNames, h.Name) {
					t.Fatalf("secret header %q exported", h.Name)
				}
			}
			if slices.Contains(e.Unknown, UnknownResponseBytes) && e.ResponseBytes != 0 ||
				slices.Contains(e.Unknown, UnknownRequestBytes) && e.RequestBytes != 0 {
				t.Fatalf("a byte count named unknown has a value: %+v", e)
			}
		})
		now := time.Unix(0, 0)
		for len(data) > 0 {
			ctl := data[0]
			data = data[1:]
			dir := flow.Direction(ctl & 1)
			now = now.Add(time.Millisecond)
			switch ctl >> 1 & 3 {
			case 3:
				if ctl&0x80 != 0 {
					c.Close(now)
				} else {
					c.Lost(dir)
				}
				continue
			}
			if len(data) < 2 {
				break
			}
			n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
			head := data[2 : 2+n]
			data = data[2+n:]
			total := uint32(n)
			var tail []byte
			if ctl>>1&3 == 2 && len(data) >= 2 {
				total += uint32(binary.BigEndian.Uint16(data))
				data = data[2:]
				tail = head[max(0, len(head)-8):]
			}
			c.Feed(dir, now, head, total, tail)
			if len(c.queue) > cfg.MaxPending {
				t.Fatalf("%d pending requests, limit %d", len(c.queue), cfg.MaxPending)
			}
			for _, ds := range c.dirs {
				if len(ds.hdr) > cfg.MaxHeaderBytes+n+maxStartLine {
					t.Fatalf("header buffer grew to %d", len(ds.hdr))
				}
			}
		}
		c.Close(now)
		if len(c.queue) != 0 {
			t.Fatalf("%d exchanges left after Close", len(c.queue))
		}
		if uint64(emitted) != d.Stats().Exchanges {
			t.Fatalf("emitted %d, stats say %d", emitted, d.Stats().Exchanges)
		}
	})
}
