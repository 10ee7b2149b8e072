package http2

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"github.com/sextant/sextant/flow"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// This file records real HTTP/2 connections (golang.org/x/net/http2 client
// and server over loopback TCP) and turns each direction's bytes into the
// records the kernel emits, so the decoder is tested on what real peers send.

const maxPiece = 4096 // MAX_DATA in probes/bpf/events.h

// tap records what one side of a connection wrote and read, in order.
type tap struct {
	net.Conn
	server string // address the client dials
	mu     sync.Mutex
	chunks []chunk
}

type chunk struct {
	dir  flow.Direction
	data []byte
	at   time.Time
}

func (t *tap) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.add(flow.Ingress, p[:n])
	return n, err
}

// Write stamps egress bytes with the time the write began, as the probes do:
// that is when the request left the process.
func (t *tap) Write(p []byte) (int, error) {
	began := time.Now()
	n, err := t.Conn.Write(p)
	t.addAt(flow.Egress, p[:n], began)
	return n, err
}

func (t *tap) add(d flow.Direction, p []byte) { t.addAt(d, p, time.Now()) }

func (t *tap) addAt(d flow.Direction, p []byte, at time.Time) {
	if len(p) == 0 {
		return
	}
	t.mu.Lock()
	t.chunks = append(t.chunks, chunk{d, bytes.Clone(p), at})
	t.mu.Unlock()
}

// frameSplitter turns one direction's byte stream into records, with the
// kernel's rules: frame state spans chunks, header payloads are shipped in
// pieces, DATA is reported after its payload, the preface is skipped.
type frameSplitter struct {
	dir     flow.Direction
	pending []byte
	preface bool
}

func (s *frameSplitter) feed(c chunk, out func(*Record)) {
	s.pending = append(s.pending, c.data...)
	if s.preface {
		if len(s.pending) < len(http2.ClientPreface) {
			return
		}
		s.pending, s.preface = s.pending[len(http2.ClientPreface):], false
	}
	for len(s.pending) >= 9 {
		n := uint32(s.pending[0])<<16 | uint32(s.pending[1])<<8 | uint32(s.pending[2])
		if uint32(len(s.pending)) < 9+n {
			return
		}
		typ, flags := http2.FrameType(s.pending[3]), http2.Flags(s.pending[4])
		id := binary.BigEndian.Uint32(s.pending[5:9]) & 0x7fffffff
		p := s.pending[9 : 9+n]
		base := Record{Dir: s.dir, Time: c.at, Type: typ, Flags: flags, StreamID: id, Len: n}
		switch typ {
		case http2.FrameHeaders, http2.FrameContinuation, http2.FramePushPromise:
			for off := 0; off == 0 || off < len(p); off += maxPiece {
				r := base
				r.Offset = uint32(off)
				r.Data = bytes.Clone(p[off:min(off+maxPiece, len(p))])
				out(&r)
			}
		case http2.FrameData:
			r := base
			if flags&http2.FlagDataPadded != 0 && n > 0 {
				r.Value = uint32(p[0])
			}
			r.GRPCMessages = grpcPrefixes(p)
			out(&r)
		case http2.FrameRSTStream:
			r := base
			r.Value = binary.BigEndian.Uint32(p)
			out(&r)
		case http2.FrameGoAway:
			r := base
			r.Value2, r.Value = binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
			out(&r)
		}
		s.pending = s.pending[9+n:]
	}
}

// grpcPrefixes counts messages that begin in one DATA payload, assuming
// (as in these tests) every message fits in one frame.
func grpcPrefixes(p []byte) uint32 {
	var n uint32
	for len(p) >= 5 {
		l := binary.BigEndian.Uint32(p[1:5])
		n++
		if uint64(len(p)) < 5+uint64(l) {
			break
		}
		p = p[5+l:]
	}
	return n
}

// records turns a tapped client connection into kernel-style records.
func (t *tap) records() []*Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	sp := [2]*frameSplitter{{dir: flow.Egress, preface: true}, {dir: flow.Ingress}}
	var out []*Record
	for _, c := range t.chunks {
		sp[c.dir].feed(c, func(r *Record) { out = append(out, r) })
	}
	return out
}

// h2cPair serves handler over h2c on loopback and returns a client whose
// single connection is tapped.
func h2cPair(t testing.TB, handler http.Handler) (*http.Client, *tap) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http2.Server{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(c, &http2.ServeConnOpts{Handler: handler})
		}
	}()
	tp := &tap{server: ln.Addr().String()}
	var once sync.Once
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			once.Do(func() { tp.Conn = c })
			if tp.Conn != c {
				t.Error("second connection: test expects one")
			}
			return tp, nil
		},
	}
	t.Cleanup(func() { tr.CloseIdleConnections(); ln.Close() })
	return &http.Client{Transport: tr}, tp
}

func drain(t testing.TB, resp *http.Response, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func (t *tap) addr() string { return t.server }
