package probes

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/net/http2"
)

// connsTo returns every traced connection with addr as local or remote end.
func connsTo(g *byConn, addr string) (clients, servers []uint64) {
	ap := netip.MustParseAddrPort(addr)
	for id, c := range g.conns {
		switch {
		case c.Remote == ap:
			clients = append(clients, id)
		case c.Local == ap:
			servers = append(servers, id)
		}
	}
	return clients, servers
}

// curl (libcurl + nghttp2) as the client of a Go h2c server: the traced
// curl process and the traced server must agree with what curl sent.
// One curl per request: curl 7.88 fails to reuse an h2c connection
// ("Error in the HTTP2 framing layer", with or without the probes).
func TestCurlPriorKnowledge(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		curl := needTool(t, "curl")
		rec := startRecorder(t, capture)
		addr := h2cServer(t)
		var ex []exchange
		for i := 0; i < 3; i++ {
			p := fmt.Sprintf("/echo/curl%d", i)
			body := bytes.Repeat([]byte{'x'}, 30000*i) // 0, 30000 and 60000 bytes
			cmd := exec.Command(curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "--data-binary", "@-", "http://"+addr+p)
			cmd.Stdin = bytes.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("curl: %v %s", err, out)
			}
			ex = append(ex, exchange{path: p, reqBody: body, respBody: append([]byte("echo:"+p+":"), body...)})
		}
		g := group(rec.stop(t))
		clients, servers := connsTo(g, addr)
		if len(clients) != len(ex) || len(servers) != len(ex) {
			t.Fatalf("clients %v servers %v (%s)", clients, servers, describe(g))
		}
		// Connection ids grow in the order connections were recognised.
		slices.Sort(clients)
		slices.Sort(servers)
		for i := range ex {
			if c := g.conns[clients[i]]; c.Comm != "curl" || c.Proto != ProtoH2 {
				t.Errorf("client conn %+v", c)
			}
			checkSide(t, g, clients[i], ex[i:i+1], true)
			checkSide(t, g, servers[i], ex[i:i+1], false)
		}
	})
}

// h2load drives many concurrent streams over a few connections: no record
// may be lost or misparsed on the Go server side.
func TestH2LoadConcurrentStreams(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		h2load := needTool(t, "h2load")
		rec := startRecorder(t, capture)
		addr := h2cServer(t)
		const requests, clients = 2000, 4
		data := filepath.Join(t.TempDir(), "body")
		if err := os.WriteFile(data, bytes.Repeat([]byte("b"), 3000), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(h2load, "-n", fmt.Sprint(requests), "-c", fmt.Sprint(clients), "-m", "10",
			"-d", data, "http://"+addr+"/echo/load")
		if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte(fmt.Sprintf("%d succeeded", requests))) {
			t.Fatalf("h2load: %v\n%s", err, out)
		}
		g := group(rec.stop(t))
		_, servers := connsTo(g, addr)
		if len(servers) != clients {
			t.Fatalf("%d server conns, want %d", len(servers), clients)
		}
		paths, statuses := 0, 0
		for _, id := range servers {
			for _, k := range []connKey{{id, Ingress}, {id, Egress}} {
				d := g.dirs[k]
				if d == nil {
					t.Fatalf("%v missing", k)
				}
				for _, e := range append(d.errs, d.hpackErrs...) {
					t.Errorf("%v: %s", k, e)
				}
				for _, f := range d.frames {
					if f.typ != http2.FrameHeaders {
						continue
					}
					if field(f.fields, ":path") == "/echo/load" {
						paths++
					}
					if field(f.fields, ":status") == "200" {
						statuses++
					}
				}
			}
		}
		if paths != requests || statuses != requests {
			t.Errorf("server saw %d requests and sent %d responses, want %d each", paths, statuses, requests)
		}
		for i, d := range rec.stats.Drops {
			if d != 0 {
				t.Errorf("drops[%s] = %d", DropReason(i), d)
			}
		}
	})
}

// nghttpd (nghttp2's server) as the peer of a Go h2c client.
func TestNghttpdServer(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		nghttpd := needTool(t, "nghttpd")
		dir := t.TempDir()
		file := bytes.Repeat([]byte("nghttpd-"), 10000) // 80000 bytes: several DATA frames
		if err := os.WriteFile(filepath.Join(dir, "f.txt"), file, 0o644); err != nil {
			t.Fatal(err)
		}
		addr := startNghttpd(t, nghttpd, dir)

		rec := startRecorder(t, capture)
		client := h2cClient()
		const n = 5
		for i := 0; i < n; i++ {
			resp, err := client.Get("http://" + addr + "/f.txt")
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(b.Bytes(), file) {
				t.Fatalf("body mismatch")
			}
		}
		client.CloseIdleConnections()
		g := group(rec.stop(t))
		clients, servers := connsTo(g, addr)
		if len(clients) != 1 || len(servers) != 1 {
			t.Fatalf("clients %v servers %v (%s)", clients, servers, describe(g))
		}
		if c := g.conns[servers[0]]; c.Comm != "nghttpd" {
			t.Errorf("server conn comm %q", c.Comm)
		}
		for _, id := range []uint64{clients[0], servers[0]} {
			isClient := id == clients[0]
			respDir := Ingress
			if !isClient {
				respDir = Egress
			}
			d := g.dirs[connKey{id, respDir}]
			if d == nil {
				t.Fatalf("conn %d: no responses", id)
			}
			for _, e := range append(d.errs, d.hpackErrs...) {
				t.Errorf("conn %d: %s", id, e)
			}
			ss := streamsOf(d)
			for i := 0; i < n; i++ {
				s := ss[uint32(2*i+1)]
				if s == nil || len(s.headers) == 0 || s.headers[0] != "200" || s.dataBytes != len(file) || !s.endStream {
					t.Errorf("conn %d stream %d: %+v, want :status 200 and %d DATA bytes", id, 2*i+1, s, len(file))
				}
			}
		}
	})
}
