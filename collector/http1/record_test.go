package http1

import (
	"context"
	"github.com/sextant/sextant/flow"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// The tests feed the decoder with what the kernel would ship for a process:
// every read and write of a real net/http connection, cut into the 1 KiB
// head and 8-byte tail the probes send.

const (
	kernelHead = 1024
	kernelTail = 8
)

// record is one read or write of a connection.
type record struct {
	dir  flow.Direction
	t    time.Time
	data []byte
}

// recorder keeps the reads and writes of one connection in the order the
// process made them.
type recorder struct {
	mu   sync.Mutex
	recs []record
}

func (r *recorder) add(dir flow.Direction, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, record{dir: dir, t: time.Now(), data: append([]byte(nil), b...)})
}

func (r *recorder) records() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]record(nil), r.recs...)
}

// recordingConn records a net.Conn's reads and writes. With split > 0 every
// Write is issued as writes of at most split bytes, like a writer that
// emits a message piecemeal.
type recordingConn struct {
	net.Conn
	rec   *recorder
	split int
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.rec.add(flow.Ingress, b[:n])
	}
	return n, err
}

func (c *recordingConn) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		piece := b
		if c.split > 0 && len(piece) > c.split {
			piece = piece[:c.split]
		}
		// Recorded before the bytes leave: the peer may answer (and we
		// may read the answer) before Write returns.
		c.rec.add(flow.Egress, piece)
		n, err := c.Conn.Write(piece)
		written += n
		if err != nil {
			return written, err
		}
		b = b[len(piece):]
	}
	return written, nil
}

// recordingListener records every accepted connection (the server's view).
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recorder
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rec := &recorder{}
	l.mu.Lock()
	l.conns = append(l.conns, rec)
	l.mu.Unlock()
	return &recordingConn{Conn: c, rec: rec}, nil
}

func (l *recordingListener) recorders() []*recorder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*recorder(nil), l.conns...)
}

// testServer is a real net/http server on 127.0.0.1 whose connections are
// recorded.
type testServer struct {
	addr string
	ln   *recordingListener
	srv  *http.Server
}

func startServer(t testing.TB, h http.Handler) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), ln: &recordingListener{Listener: ln}, srv: &http.Server{Handler: h}}
	go s.srv.Serve(s.ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// serverRecords returns the records of the server's only connection. Once
// the client has read its last response they are complete: writes are
// recorded before they leave.
func (s *testServer) serverRecords(t *testing.T) []record {
	t.Helper()
	recs := s.ln.recorders()
	if len(recs) != 1 {
		t.Fatalf("server accepted %d connections, want 1", len(recs))
	}
	return recs[0].records()
}

// recordingClient is an HTTP/1.1 client over one recorded connection.
func recordingClient(split int) (*http.Client, *recorder) {
	rec := &recorder{}
	tr := &http.Transport{
		MaxConnsPerHost:       1,
		ExpectContinueTimeout: 5 * time.Second, // wait for "100 Continue"
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &recordingConn{Conn: c, rec: rec, split: split}, nil
		},
	}
	return &http.Client{Transport: tr}, rec
}

// decode feeds recs to a new connection the way the kernel ships them,
// then closes it, and returns what came out.
func decode(cfg Config, recs []record) ([]*Exchange, Stats) {
	d := NewDecoder(cfg)
	var out []*Exchange
	c := d.NewConn(func(e *Exchange) { out = append(out, e) })
	var last time.Time
	for _, r := range recs {
		feedRecord(c, r)
		last = r.t
	}
	c.Close(last.Add(time.Millisecond))
	return out, d.Stats()
}

func feedRecord(c *Conn, r record) {
	head, tail := r.data, []byte(nil)
	if len(head) > kernelHead {
		head = r.data[:kernelHead]
		tail = r.data[len(r.data)-kernelTail:]
	}
	c.Feed(r.dir, r.t, head, uint32(len(r.data)), tail)
}
