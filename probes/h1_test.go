package probes

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// h1Messages splits what one direction shipped into messages: events
// whose bytes begin with a start line begin one; body bytes never ship.
func h1Messages(t *testing.T, k connKey, evs []*Event, body []byte) (heads []string, total int) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != uint32(i) {
			t.Errorf("%v: event %d has seq %d", k, i, ev.Seq)
		}
		if len(ev.Data) > int(ev.Len) {
			t.Errorf("%v: event ships %d bytes of %d", k, len(ev.Data), ev.Len)
		}
		if len(body) > 0 && bytes.Contains(ev.Data, body) {
			t.Errorf("%v: body bytes shipped: %q", k, ev.Data)
		}
		total += int(ev.Len)
		if s := string(ev.Data); strings.HasPrefix(s, "HTTP/1.") || strings.Contains(s, " HTTP/1.1\r\n") {
			heads = append(heads, s)
		}
	}
	return heads, total
}

func TestHTTP1Records(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("0123456789"), 500) // several reads on the client
		big = append(big, []byte("THE-END!")...)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("chunked") != "" {
				w.Write(big[:3000]) // no Content-Length: chunked
				w.(http.Flusher).Flush()
				w.Write(big[3000:])
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.Write(big)
		})}
		go srv.Serve(ln)
		defer srv.Close()

		client := &http.Client{Transport: &http.Transport{}}
		paths := []string{"/h1/path?q=1", "/h1/again", "/h1/chunked?chunked=1"}
		for _, p := range paths {
			getAll(t, client, big, "http://"+ln.Addr().String()+p)
		}
		client.CloseIdleConnections()
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, ln.Addr().String())
		for _, id := range []uint64{cl, sv} {
			if p := g.conns[id].Proto; p != ProtoH1 {
				t.Errorf("conn %d proto %s, want http/1", id, p)
			}
		}
		if c := g.conns[sv]; c.Local != netip.MustParseAddrPort(ln.Addr().String()) || c.Comm == "" {
			t.Errorf("server conn info %+v", c)
		}
		// Requests (no bodies): every byte shipped, in order. A head may
		// come in two records: Go's server reads one byte ahead while a
		// handler runs (its background read), and the next request's
		// first byte lands there.
		for _, k := range []connKey{{cl, Egress}, {sv, Ingress}} {
			h1Messages(t, k, g.h1[k], nil)
			var stream strings.Builder
			for _, ev := range g.h1[k] {
				if len(ev.Data) != int(ev.Len) {
					t.Errorf("%v: request bytes not shipped: %d of %d", k, len(ev.Data), ev.Len)
				}
				stream.Write(ev.Data)
			}
			heads := strings.SplitAfter(stream.String(), "\r\n\r\n")
			if len(heads) != len(paths)+1 || heads[len(paths)] != "" {
				t.Fatalf("%v: %d request heads, want %d: %q", k, len(heads)-1, len(paths), heads)
			}
			for i, p := range paths {
				if !strings.HasPrefix(heads[i], "GET "+p+" HTTP/1.1\r\n") {
					t.Errorf("%v: request %d: %q, want the whole head of GET %s", k, i, heads[i], p)
				}
			}
		}
		// Responses: a whole head each, body bytes counted and never
		// shipped; chunked framing lines are shipped.
		for _, k := range []connKey{{sv, Egress}, {cl, Ingress}} {
			heads, total := h1Messages(t, k, g.h1[k], []byte("0123456789"))
			if len(heads) != len(paths) {
				t.Fatalf("%v: %d response heads, want %d: %q", k, len(heads), len(paths), heads)
			}
			min := 0
			for _, h := range heads {
				if !strings.HasPrefix(h, "HTTP/1.1 200 OK\r\n") {
					t.Errorf("%v: response head %q", k, h)
				}
				min += len(h) + len(big)
			}
			if total < min {
				t.Errorf("%v: %d bytes in events, heads and bodies alone are %d", k, total, min)
			}
			var framing bool
			for _, ev := range g.h1[k] {
				framing = framing || bytes.Contains(ev.Data, []byte(strconv.FormatInt(int64(len(big)-3000), 16)+"\r\n"))
			}
			if !framing {
				t.Errorf("%v: the second chunk-size line was not shipped", k)
			}
		}
	})
}

// pipelineServer answers every request it reads, and writes all the
// responses to what one read brought in with one write: a client read
// then holds several responses.
func pipelineServer(t *testing.T, bodies map[string]string) net.Listener {
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
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 64<<10)
				for {
					var out bytes.Buffer
					for {
						req, err := http.ReadRequest(r)
						if err != nil {
							return
						}
						io.Copy(io.Discard, req.Body)
						body := bodies[req.URL.Path]
						switch {
						case req.Method == http.MethodHead:
							fmt.Fprintf(&out, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
						case strings.HasPrefix(req.URL.Path, "/chunked"):
							fmt.Fprintf(&out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
						case req.URL.Path == "/204":
							fmt.Fprintf(&out, "HTTP/1.1 204 No Content\r\n\r\n")
						default:
							fmt.Fprintf(&out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
						}
						if r.Buffered() == 0 {
							break
						}
					}
					if _, err := c.Write(out.Bytes()); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Pipelined HTTP/1.1: one write holds several requests, one read several
// responses (with a HEAD, an informational response, a 204 and a chunked
// body among them). Each message is its own event on both sides.
func TestHTTP1Pipelined(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		body := strings.Repeat("pipelined-body-", 40) // 600 bytes
		bodies := map[string]string{"/a": body, "/chunked": body, "/head": body}
		ln := pipelineServer(t, bodies)
		reqs := []string{"GET /a?pipe=1", "HEAD /head", "GET /a?pipe=3", "GET /204", "GET /chunked", "POST /a?pipe=6", "GET /a?pipe=7"}
		var out bytes.Buffer
		for _, r := range reqs {
			out.WriteString(r + " HTTP/1.1\r\nHost: pipe\r\n")
			if strings.HasPrefix(r, "POST") {
				out.WriteString("Content-Length: 11\r\n\r\nhello world")
				continue
			}
			out.WriteString("\r\n")
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(out.Bytes()); err != nil {
			t.Fatal(err)
		}
		// Read every response with as few reads as the kernel allows.
		br := bufio.NewReaderSize(c, 64<<10)
		for _, r := range reqs {
			req := &http.Request{Method: strings.Fields(r)[0]}
			for {
				resp, err := http.ReadResponse(br, req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 200 {
					break
				}
			}
		}
		c.Close()
		g := group(rec.stop(t))

		cl, sv := findConns(t, g, ln.Addr().String())
		for _, k := range []connKey{{cl, Egress}, {sv, Ingress}} {
			heads, total := h1Messages(t, k, g.h1[k], []byte("hello world"))
			if len(heads) != len(reqs) {
				t.Errorf("%v: %d request heads, want %d: %q", k, len(heads), len(reqs), heads)
				continue
			}
			for i, h := range heads {
				if !strings.HasPrefix(h, reqs[i]+" HTTP/1.1\r\n") || !strings.HasSuffix(h, "\r\n\r\n") {
					t.Errorf("%v: request %d %q, want the head of %s", k, i, h, reqs[i])
				}
			}
			if total != out.Len() {
				t.Errorf("%v: events stand for %d bytes, %d were sent", k, total, out.Len())
			}
		}
		for _, k := range []connKey{{sv, Egress}, {cl, Ingress}} {
			heads, _ := h1Messages(t, k, g.h1[k], []byte(body))
			// 100 Continue before each of the 4 plain 200s.
			if want := len(reqs) + 4; len(heads) != want {
				t.Errorf("%v: %d response heads, want %d: %q", k, len(heads), want, heads)
			}
		}
	})
}

// A body sent with sendfile(2) (net/http serves files so) is bytes the
// probes cannot read: inside a Content-Length body they are counted, the
// next response's head is still found, and nothing is lost.
func TestHTTP1SendfileBody(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		rec := startRecorder(t, capture)
		dir := t.TempDir()
		file := bytes.Repeat([]byte("sendfile"), 20000) // 160000 bytes
		if err := os.WriteFile(filepath.Join(dir, "f.bin"), file, 0o644); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
		go srv.Serve(ln)
		defer srv.Close()
		client := &http.Client{Transport: &http.Transport{}}
		const n = 3
		for i := 0; i < n; i++ {
			getAll(t, client, file, "http://"+ln.Addr().String()+"/f.bin")
		}
		client.CloseIdleConnections()
		g := group(rec.stop(t))
		cl, sv := findConns(t, g, ln.Addr().String())
		for _, k := range []connKey{{sv, Egress}, {cl, Ingress}} {
			heads, total := h1Messages(t, k, g.h1[k], []byte("sendfilesendfile"))
			if len(heads) != n {
				t.Errorf("%v: %d response heads, want %d: %q", k, len(heads), n, heads)
			}
			want := 0
			for _, h := range heads {
				want += len(h) + len(file)
			}
			if total != want {
				t.Errorf("%v: events stand for %d bytes, heads and bodies are %d", k, total, want)
			}
		}
		if d := rec.stats.Drops[DropUnseen]; d != 0 {
			t.Logf("unseen bytes host-wide: %d", d)
		}
	})
}
