package probes

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/sextant/sextant/testbed"
)

// h2cServer serves POST /echo/*: the response body is "echo:" + path + request body.
func h2cServer(t testing.TB) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("content-type", "text/plain")
		fmt.Fprintf(w, "echo:%s:%s", r.URL.Path, body)
	})
	srv := &http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

type exchange struct {
	path     string
	reqBody  []byte
	respBody []byte
}

func doRequests(t testing.TB, c *http.Client, addr string, n int, prefix string) []exchange {
	t.Helper()
	var ex []exchange
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("/echo/%s%d", prefix, i)
		// Sizes vary from empty to several DATA frames (Go's max frame is 16 KiB).
		body := bytes.Repeat([]byte{'a' + byte(i%26)}, (i*7919)%40000)
		resp, err := c.Post("http://"+addr+path, "text/plain", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ex = append(ex, exchange{path: path, reqBody: body, respBody: got})
	}
	return ex
}

// streamView is what one side of a connection said on each stream.
type streamView struct {
	headers   []string // :path or :status of each header block, in order
	dataBytes int
	endStream bool
}

func streamsOf(d *h2Dir) map[uint32]*streamView {
	out := map[uint32]*streamView{}
	get := func(id uint32) *streamView {
		if out[id] == nil {
			out[id] = &streamView{}
		}
		return out[id]
	}
	for _, f := range d.frames {
		switch f.typ {
		case http2.FrameHeaders:
			s := get(f.stream)
			v := field(f.fields, ":path")
			if v == "" {
				v = field(f.fields, ":status")
			}
			s.headers = append(s.headers, v)
			if f.flags.Has(http2.FlagHeadersEndStream) {
				s.endStream = true
			}
		case http2.FrameData:
			s := get(f.stream)
			s.dataBytes += int(f.length)
			if f.value != 0 {
				s.dataBytes -= int(f.value) + 1 // pad length byte + padding
			}
			if f.flags.Has(http2.FlagDataEndStream) {
				s.endStream = true
			}
		}
	}
	return out
}

// checkSide verifies one traced end of an h2c connection against the exchanges.
func checkSide(t *testing.T, g *byConn, conn uint64, ex []exchange, client bool) {
	t.Helper()
	reqDir, respDir := Egress, Ingress
	if !client {
		reqDir, respDir = Ingress, Egress
	}
	req, resp := g.dirs[connKey{conn, reqDir}], g.dirs[connKey{conn, respDir}]
	if req == nil || resp == nil {
		t.Fatalf("conn %d: missing a direction (req %v resp %v)", conn, req != nil, resp != nil)
	}
	for _, d := range []*h2Dir{req, resp} {
		for _, e := range append(d.errs, d.hpackErrs...) {
			t.Errorf("conn %d: %s", conn, e)
		}
	}
	reqs, resps := streamsOf(req), streamsOf(resp)
	// Go's client numbers streams 1, 3, 5, ... in request order.
	for i, e := range ex {
		id := uint32(2*i + 1)
		rq, rs := reqs[id], resps[id]
		if rq == nil || rs == nil {
			t.Errorf("conn %d stream %d (%s): request seen %v, response seen %v", conn, id, e.path, rq != nil, rs != nil)
			continue
		}
		if len(rq.headers) != 1 || rq.headers[0] != e.path {
			t.Errorf("conn %d stream %d: request header blocks %q, want [%q]", conn, id, rq.headers, e.path)
		}
		if rq.dataBytes != len(e.reqBody) || !rq.endStream {
			t.Errorf("conn %d stream %d: request DATA %d bytes end_stream %v, want %d bytes and end_stream",
				conn, id, rq.dataBytes, rq.endStream, len(e.reqBody))
		}
		if len(rs.headers) < 1 || rs.headers[0] != "200" {
			t.Errorf("conn %d stream %d: response header blocks %q, want :status 200 first", conn, id, rs.headers)
		}
		if rs.dataBytes != len(e.respBody) || !rs.endStream {
			t.Errorf("conn %d stream %d: response DATA %d bytes end_stream %v, want %d bytes and end_stream",
				conn, id, rs.dataBytes, rs.endStream, len(e.respBody))
		}
	}
	if len(reqs) != len(ex) {
		t.Errorf("conn %d: %d request streams, want %d", conn, len(reqs), len(ex))
	}
}

// findConns returns the traced client and server ends of the connection to addr.
func findConns(t *testing.T, g *byConn, addr string) (client, server uint64) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	for id, c := range g.conns {
		switch {
		case c.Remote == ap:
			client = id
		case c.Local == ap:
			server = id
		}
	}
	if client == 0 || server == 0 {
		t.Fatalf("connections to %s: client %d server %d (conns %v)", addr, client, server, describe(g))
	}
	return client, server
}

func describe(g *byConn) string {
	var b strings.Builder
	for id, c := range g.conns {
		fmt.Fprintf(&b, "[%d %s %s->%s %s] ", id, c.Proto, c.Local, c.Remote, c.Comm)
	}
	return b.String()
}

func TestH2CRequestsAreFramed(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		addr := h2cServer(t)
		client := h2cClient()
		ex := doRequests(t, client, addr, 25, "")
		client.CloseIdleConnections()
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, addr)
		if p := g.conns[cl].Proto; p != ProtoH2 {
			t.Errorf("client conn proto %s, want h2", p)
		}
		if p := g.conns[sv].Proto; p != ProtoH2 {
			t.Errorf("server conn proto %s, want h2", p)
		}
		for _, k := range []connKey{{cl, Egress}, {cl, Ingress}, {sv, Egress}, {sv, Ingress}} {
			t.Logf("conn %d %s: %d frames rebuilt from %d records", k.conn, k.dir, len(g.dirs[k].frames), g.dirs[k].nextSeq)
		}
		checkSide(t, g, cl, ex, true)
		checkSide(t, g, sv, ex, false)
		if g.close[cl] != 1 {
			t.Errorf("client conn: %d close records, want 1", g.close[cl])
		}
		// The static-table hint: Go's server starts responses with ":status: 200"
		// (static index 8); its client starts requests with a literal
		// :authority (no hint).
		for _, f := range g.dirs[connKey{cl, Ingress}].frames {
			if f.typ == http2.FrameHeaders && field(f.fields, ":status") == "200" && f.static != 8 {
				t.Errorf("response HEADERS on stream %d: static index %d, want 8", f.stream, f.static)
			}
		}
		for _, f := range g.dirs[connKey{cl, Egress}].frames {
			if f.typ == http2.FrameHeaders && f.static != 0 {
				t.Errorf("request HEADERS on stream %d: static index %d, want 0 (starts with :authority literal)", f.stream, f.static)
			}
		}
		// Both sides start with SETTINGS.
		for _, k := range []connKey{{cl, Egress}, {cl, Ingress}, {sv, Egress}, {sv, Ingress}} {
			fs := g.dirs[k].frames
			if len(fs) == 0 || fs[0].typ != http2.FrameSettings {
				t.Errorf("%v: first frame is not SETTINGS", k)
			}
		}
	})
}

// A connection opened before Load is joined by frame-shape validation.
func TestH2CMidstream(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		testbed.RequireRoot(t)
		addr := h2cServer(t)
		client := h2cClient()
		defer client.CloseIdleConnections()
		doRequests(t, client, addr, 5, "before") // connection and HPACK state established unseen

		rec := startRecorder(t, capture)
		// Reads already blocked in the kernel when the probes attached are
		// not seen: the first exchange after Load may be partial.
		doRequests(t, client, addr, 1, "warmup")
		ex := doRequests(t, client, addr, 10, "after")
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, addr)
		for _, id := range []uint64{cl, sv} {
			if p := g.conns[id].Proto; p != ProtoH2Midstream {
				t.Errorf("conn %d proto %s, want h2-midstream", id, p)
			}
		}
		for _, c := range []struct {
			id     uint64
			client bool
		}{{cl, true}, {sv, false}} {
			reqDir, respDir := Egress, Ingress
			if !c.client {
				reqDir, respDir = Ingress, Egress
			}
			req, resp := g.dirs[connKey{c.id, reqDir}], g.dirs[connKey{c.id, respDir}]
			if req == nil || resp == nil {
				t.Fatalf("conn %d: a direction never aligned (req %v resp %v)", c.id, req != nil, resp != nil)
			}
			for _, e := range append(req.errs, resp.errs...) {
				t.Errorf("conn %d: %s", c.id, e)
			}
			reqs, resps := streamsOf(req), streamsOf(resp)
			for i, e := range ex {
				id := uint32(2*(6+i) + 1) // 5 before + 1 warmup
				rq, rs := reqs[id], resps[id]
				if rq == nil || rs == nil {
					t.Errorf("conn %d stream %d: request seen %v response seen %v", c.id, id, rq != nil, rs != nil)
					continue
				}
				if len(rq.headers) != 1 || rq.dataBytes != len(e.reqBody) || !rq.endStream {
					t.Errorf("conn %d stream %d: request %d header blocks, %d DATA bytes (want %d), end %v",
						c.id, id, len(rq.headers), rq.dataBytes, len(e.reqBody), rq.endStream)
				}
				if len(rs.headers) < 1 || rs.dataBytes != len(e.respBody) || !rs.endStream {
					t.Errorf("conn %d stream %d: response %d header blocks, %d DATA bytes (want %d), end %v",
						c.id, id, len(rs.headers), rs.dataBytes, len(e.respBody), rs.endStream)
				}
			}
		}
	})
}
