package http1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// call is one request a test makes and what the client saw of it.
type call struct {
	method, path, body string
	header             http.Header

	status   int
	respBody int
}

func (c *call) do(t testing.TB, client *http.Client, base string) {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body == "" {
		req.Body = nil
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read body: %v", c.method, c.path, err)
	}
	c.status, c.respBody = resp.StatusCode, len(b)
}

// views returns the server's and the client's records of one connection,
// with the direction that carries requests in each.
func views(srv *testServer, t *testing.T, client *recorder) map[string]struct {
	recs   []record
	reqDir flow.Direction
} {
	return map[string]struct {
		recs   []record
		reqDir flow.Direction
	}{
		"server": {srv.serverRecords(t), flow.Ingress},
		"client": {client.records(), flow.Egress},
	}
}

// checkExchange compares an exchange with the call that made it.
func checkExchange(t *testing.T, e *Exchange, c *call, host string, reqDir flow.Direction) {
	t.Helper()
	if e.Method != c.method || e.Path != c.path || e.Target != c.path || e.Host != host ||
		e.Protocol != "HTTP/1.1" || e.RequestDir != reqDir {
		t.Errorf("request = %s %s (target %s) host %q %s dir %d, want %s %s host %q HTTP/1.1 dir %d",
			e.Method, e.Path, e.Target, e.Host, e.Protocol, e.RequestDir, c.method, c.path, host, reqDir)
	}
	if int(e.Status) != c.status {
		t.Errorf("%s %s: status %d, want %d", c.method, c.path, e.Status, c.status)
	}
	if e.RequestBytes != uint64(len(c.body)) || e.ResponseBytes != uint64(c.respBody) {
		t.Errorf("%s %s: body bytes %d/%d, want %d/%d", c.method, c.path,
			e.RequestBytes, e.ResponseBytes, len(c.body), c.respBody)
	}
	if len(e.Unknown) != 0 || e.Outcome != flow.OutcomeComplete {
		t.Errorf("%s %s: unknown %v outcome %v, want none and complete", c.method, c.path, e.Unknown, e.Outcome)
	}
	if e.RequestStart.IsZero() || e.ResponseStart.Before(e.RequestStart) || e.ResponseEnd.Before(e.ResponseStart) {
		t.Errorf("%s %s: times request %v response %v end %v out of order", c.method, c.path,
			e.RequestStart, e.ResponseStart, e.ResponseEnd)
	}
	checkNoSecrets(t, e)
}

var secretNames = []string{"authorization", "proxy-authorization", "cookie", "set-cookie"}

func checkNoSecrets(t *testing.T, e *Exchange) {
	t.Helper()
	for _, h := range slices.Concat(e.RequestHeaders, e.ResponseHeaders) {
		if slices.Contains(secretNames, h.Name) || strings.Contains(h.Value, "s3cr3t") {
			t.Errorf("secret exported: %s: %s", h.Name, h.Value)
		}
	}
}

func header(hs []flow.Header, name string) string {
	for _, h := range hs {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

func apiMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "s3cr3t"})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"name":"user %s"}`, r.PathValue("id"), r.PathValue("id"))
	})
	mux.HandleFunc("POST /api/orders", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "created order of %d bytes", len(b))
	})
	// Flushed pieces: each goes out as one chunk in its own write.
	mux.HandleFunc("GET /chunks", func(w http.ResponseWriter, r *http.Request) {
		for _, piece := range []string{"hello", strings.Repeat("a", 2000), "bye"} {
			io.WriteString(w, piece)
			w.(http.Flusher).Flush()
		}
	})
	// net/http cuts a 3000-byte write into chunks of 2048 and 952 bytes in
	// one write: the second size line is not shipped.
	mux.HandleFunc("GET /bigchunks", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		io.WriteString(w, strings.Repeat("a", 3000))
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		if r.Method != http.MethodHead {
			w.Write(make([]byte, 1234))
		}
	})
	mux.HandleFunc("DELETE /api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /early", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "after early hints")
	})
	return mux
}

// secretHeader is sent with every request: none of it may come out.
func secretHeader() http.Header {
	return http.Header{
		"Authorization": {"Bearer s3cr3t"},
		"Cookie":        {"session=s3cr3t"},
		"Traceparent":   {testTraceParent},
		"User-Agent":    {"sextant-test/1"},
	}
}

// runCalls makes calls over one keep-alive connection and returns the
// records of both ends.
func runCalls(t *testing.T, split int, calls []*call) (*testServer, *recorder) {
	t.Helper()
	srv := startServer(t, apiMux())
	client, rec := recordingClient(split)
	for _, c := range calls {
		c.do(t, client, "http://"+srv.addr)
	}
	client.CloseIdleConnections()
	return srv, rec
}

func TestKeepAlive(t *testing.T) {
	calls := []*call{
		{method: "GET", path: "/api/users/42", header: secretHeader()},
		{method: "POST", path: "/api/orders", body: `{"item":"book","qty":2}`, header: secretHeader()},
		{method: "GET", path: "/missing?x=1", header: http.Header{"User-Agent": {"sextant-test/1"}}},
	}
	srv, clientRec := runCalls(t, 0, calls)
	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			out, stats := decode(Config{}, v.recs)
			if len(out) != len(calls) {
				t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(calls), stats)
			}
			for i, c := range calls {
				checkExchange(t, out[i], c, srv.addr, v.reqDir)
			}
			first := out[0]
			if first.TraceParent != testTraceParent {
				t.Errorf("traceparent %q, want %q", first.TraceParent, testTraceParent)
			}
			if ua := header(first.RequestHeaders, "user-agent"); ua != "sextant-test/1" {
				t.Errorf("user-agent %q", ua)
			}
			if ct := header(first.ResponseHeaders, "content-type"); ct != "application/json" {
				t.Errorf("response content-type %q", ct)
			}
			if out[2].TraceParent != "" || out[2].Status != 404 {
				t.Errorf("third exchange: traceparent %q status %d", out[2].TraceParent, out[2].Status)
			}
			if stats.Exchanges != 3 || stats.Malformed != 0 || stats.OrphanResponses != 0 {
				t.Errorf("stats %+v", stats)
			}
		})
	}
}

func TestChunkedResponse(t *testing.T) {
	calls := []*call{
		{method: "GET", path: "/chunks"},
		{method: "GET", path: "/bigchunks"},
		{method: "GET", path: "/api/users/7"},
	}
	srv, clientRec := runCalls(t, 0, calls)
	if calls[0].respBody != 2008 || calls[1].respBody != 3005 {
		t.Fatalf("client read %d and %d body bytes", calls[0].respBody, calls[1].respBody)
	}

	out, stats := decode(Config{}, srv.serverRecords(t))
	if len(out) != 3 {
		t.Fatalf("%d exchanges, want 3 (stats %+v)", len(out), stats)
	}
	// Every chunk-size line starts a write: the count is exact.
	checkExchange(t, out[0], calls[0], srv.addr, flow.Ingress)
	if te := header(out[0].ResponseHeaders, "transfer-encoding"); te != "chunked" {
		t.Errorf("transfer-encoding %q", te)
	}
	// A size line in unshipped bytes: the size is unknown, the end is
	// still found, and the next exchange decodes exactly.
	if e := out[1]; e.Status != 200 || e.ResponseEnd.IsZero() || e.ResponseBytes != 0 ||
		!slices.Equal(e.Unknown, []string{UnknownResponseBytes}) {
		t.Errorf("/bigchunks: status %d bytes %d unknown %v end %v", e.Status, e.ResponseBytes, e.Unknown, e.ResponseEnd)
	}
	checkExchange(t, out[2], calls[2], srv.addr, flow.Ingress)

	// The client's reads merge writes as the network delivered them, so
	// either outcome is possible for the chunked bodies there.
	out, stats = decode(Config{}, clientRec.records())
	if len(out) != 3 {
		t.Fatalf("client view: %d exchanges, want 3 (stats %+v)", len(out), stats)
	}
	for i, e := range out[:2] {
		if e.Status != 200 || e.ResponseEnd.IsZero() ||
			!(e.ResponseBytes == uint64(calls[i].respBody) && len(e.Unknown) == 0 ||
				e.ResponseBytes == 0 && slices.Equal(e.Unknown, []string{UnknownResponseBytes})) {
			t.Errorf("client view: %s status %d bytes %d unknown %v end %v",
				e.Path, e.Status, e.ResponseBytes, e.Unknown, e.ResponseEnd)
		}
	}
	checkExchange(t, out[2], calls[2], srv.addr, flow.Egress)
}

func TestNoBodyResponses(t *testing.T) {
	calls := []*call{
		{method: "HEAD", path: "/head"},              // Content-Length: 1234, no body
		{method: "DELETE", path: "/api/users/3"},     // 204
		{method: "GET", path: "/early"},              // 103 then 200
		{method: "GET", path: "/head"},               // a body of 1234 follows
		{method: "GET", path: "/api/users/4?full=1"}, // still in sync
	}
	srv, clientRec := runCalls(t, 0, calls)
	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			out, stats := decode(Config{}, v.recs)
			if len(out) != len(calls) {
				t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(calls), stats)
			}
			for i, c := range calls {
				checkExchange(t, out[i], c, srv.addr, v.reqDir)
			}
			if cl := header(out[0].ResponseHeaders, "content-length"); cl != "1234" {
				t.Errorf("HEAD response content-length %q", cl)
			}
			if out[2].Status != 200 || header(out[2].ResponseHeaders, "link") == "" {
				t.Errorf("early hints exchange: status %d headers %v", out[2].Status, out[2].ResponseHeaders)
			}
		})
	}
}

// TestExpectContinue: the request body follows an interim 100 Continue.
func TestExpectContinue(t *testing.T) {
	calls := []*call{
		{method: "POST", path: "/api/orders", body: strings.Repeat("b", 500),
			header: http.Header{"Expect": {"100-continue"}}},
		{method: "GET", path: "/api/users/2"},
	}
	srv, clientRec := runCalls(t, 0, calls)
	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			if !bytes.Contains(v.recs[1].data, []byte("HTTP/1.1 100 Continue")) {
				t.Fatalf("second record is not the interim response: %q", v.recs[1].data)
			}
			out, stats := decode(Config{}, v.recs)
			if len(out) != len(calls) {
				t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(calls), stats)
			}
			for i, c := range calls {
				checkExchange(t, out[i], c, srv.addr, v.reqDir)
			}
		})
	}
}

// TestSplitWrites has the client write its requests in 100-byte pieces:
// header blocks are gathered across fully shipped reads and writes.
func TestSplitWrites(t *testing.T) {
	calls := []*call{
		{method: "POST", path: "/api/orders", body: strings.Repeat("x", 700), header: secretHeader()},
		{method: "GET", path: "/api/users/1", header: secretHeader()},
	}
	srv, clientRec := runCalls(t, 100, calls)
	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			out, stats := decode(Config{}, v.recs)
			if len(out) != len(calls) {
				t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(calls), stats)
			}
			for i, c := range calls {
				checkExchange(t, out[i], c, srv.addr, v.reqDir)
			}
		})
	}
}

// TestTruncatedHeaders sends a header block larger than the 1 KiB the
// kernel ships: what was shipped is reported, the rest named unknown.
func TestTruncatedHeaders(t *testing.T) {
	big := secretHeader()
	big.Set("X-Padding", strings.Repeat("p", 3000))
	calls := []*call{
		{method: "GET", path: "/api/users/9", header: big},
		{method: "GET", path: "/api/users/10"},
	}
	srv, clientRec := runCalls(t, 0, calls)
	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			out, stats := decode(Config{}, v.recs)
			if len(out) != 2 {
				t.Fatalf("%d exchanges, want 2 (stats %+v)", len(out), stats)
			}
			e := out[0]
			// Go writes Host and User-Agent first, then the rest sorted:
			// Traceparent is shipped, X-Padding is cut.
			if e.Method != "GET" || e.Path != "/api/users/9" || e.Host != srv.addr ||
				e.TraceParent != testTraceParent || e.Status != 200 || e.ResponseBytes != uint64(calls[0].respBody) {
				t.Errorf("truncated exchange: %+v", e)
			}
			if !slices.Equal(e.Unknown, []string{UnknownRequestHeaders, UnknownRequestBytes}) {
				t.Errorf("unknown %v", e.Unknown)
			}
			if header(e.RequestHeaders, "x-padding") != "" {
				t.Errorf("a cut header was exported")
			}
			checkNoSecrets(t, e)
			checkExchange(t, out[1], calls[1], srv.addr, v.reqDir)
			if stats.TruncatedHeaders != 1 {
				t.Errorf("stats %+v", stats)
			}
		})
	}
}

// rawExchange writes raw bytes to a real net/http server in one write and
// reads until the server closes, returning the server's records.
func rawExchange(t *testing.T, h http.Handler, request string) ([]record, string) {
	t.Helper()
	srv := startServer(t, h)
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return srv.serverRecords(t), string(resp)
}

func TestPipelined(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			io.WriteString(w, "a")
		case "/b":
			http.NotFound(w, r)
		case "/c":
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "ccc")
		}
	})
	reqs := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody" +
		"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	recs, resp := rawExchange(t, h, reqs)
	if n := strings.Count(resp, "HTTP/1.1 "); n != 3 {
		t.Fatalf("server sent %d responses: %q", n, resp)
	}
	out, stats := decode(Config{}, recs)
	want := []struct {
		path          string
		status        uint32
		reqBytes, rsp uint64
	}{{"/a", 200, 0, 1}, {"/b", 404, 4, 19}, {"/c", 201, 0, 3}}
	if len(out) != len(want) {
		t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(want), stats)
	}
	for i, w := range want {
		e := out[i]
		if e.Path != w.path || e.Status != w.status || e.RequestBytes != w.reqBytes ||
			e.ResponseBytes != w.rsp || len(e.Unknown) != 0 {
			t.Errorf("exchange %d: %s %d %d/%d unknown %v, want %s %d %d/%d", i,
				e.Path, e.Status, e.RequestBytes, e.ResponseBytes, e.Unknown, w.path, w.status, w.reqBytes, w.rsp)
		}
	}

	// With room for two pending requests the first is evicted as the third
	// arrives; FIFO says the first response is its, so it is skipped and
	// the others still pair right.
	out, stats = decode(Config{MaxPending: 2}, recs)
	if len(out) != 3 || out[0].Outcome != flow.OutcomeEvicted || out[0].Status != 0 ||
		out[1].Path != "/b" || out[1].Status != 404 || out[2].Path != "/c" || out[2].Status != 201 {
		t.Errorf("with MaxPending 2: %d exchanges %+v", len(out), out)
	}
	if stats.Evicted != 1 || stats.OrphanResponses != 0 {
		t.Errorf("stats %+v", stats)
	}
}

// TestReadUntilClose: an HTTP/1.0 response without Content-Length ends
// when the connection closes.
func TestReadUntilClose(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			io.WriteString(w, strings.Repeat("z", 1500))
			w.(http.Flusher).Flush()
		}
	})
	recs, resp := rawExchange(t, h, "GET /stream HTTP/1.0\r\nUser-Agent: raw\r\n\r\n")
	if strings.Contains(resp, "Content-Length") || !strings.HasSuffix(resp, strings.Repeat("z", 4500)) {
		t.Fatalf("server response is not close-delimited: %q...", resp[:min(200, len(resp))])
	}
	out, stats := decode(Config{}, recs)
	if len(out) != 1 {
		t.Fatalf("%d exchanges (stats %+v)", len(out), stats)
	}
	e := out[0]
	if e.Protocol != "HTTP/1.0" || e.Status != 200 || e.ResponseBytes != 4500 ||
		e.Outcome != flow.OutcomeComplete || len(e.Unknown) != 0 || !e.ResponseEnd.Equal(recs[len(recs)-1].t) {
		t.Errorf("exchange %+v", e)
	}
}

// TestUpgrade: after 101 Switching Protocols nothing is HTTP/1 any more,
// however much it looks like it.
func TestUpgrade(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: demo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(line), line)
	})
	srv := startServer(t, h)
	client, clientRec := recordingClient(0)
	req, _ := http.NewRequest("GET", "http://"+srv.addr+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "demo")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rw := resp.Body.(io.ReadWriteCloser)
	io.WriteString(rw, "GET /not-http HTTP/1.1\r\n\r\n")
	io.ReadAll(rw)
	rw.Close()

	for name, v := range views(srv, t, clientRec) {
		t.Run(name, func(t *testing.T) {
			out, stats := decode(Config{}, v.recs)
			if len(out) != 1 || out[0].Status != 101 || out[0].Path != "/ws" || out[0].Outcome != flow.OutcomeComplete {
				t.Fatalf("exchanges %+v (stats %+v)", out, stats)
			}
			if stats.Upgrades != 1 || stats.Malformed != 0 {
				t.Errorf("stats %+v", stats)
			}
		})
	}
}

// TestClosedBeforeResponse: the server hangs up without answering.
func TestClosedBeforeResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	recs, _ := rawExchange(t, h, "GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
	out, _ := decode(Config{}, recs)
	if len(out) != 1 || out[0].Path != "/gone" || out[0].Outcome != flow.OutcomeClosed ||
		out[0].Status != 0 || len(out[0].Unknown) != 0 || out[0].ResponseEnd.IsZero() {
		t.Errorf("exchanges %+v", out)
	}
}

// recordKeepAlive records n GETs over one connection from the server side.
func recordKeepAlive(t *testing.T, n int) ([]record, []*call) {
	t.Helper()
	var calls []*call
	for i := range n {
		calls = append(calls, &call{method: "GET", path: fmt.Sprintf("/api/users/%d", i+1)})
	}
	srv, _ := runCalls(t, 0, calls)
	return srv.serverRecords(t), calls
}

// nthRecord finds the index of the n-th (0-based) record of dir.
func nthRecord(t *testing.T, recs []record, dir flow.Direction, n int) int {
	t.Helper()
	for i, r := range recs {
		if r.dir == dir {
			if n == 0 {
				return i
			}
			n--
		}
	}
	t.Fatalf("no record %d in direction %d", n, dir)
	return -1
}

// recordIndex finds the record of dir holding s, and the next one of dir.
func recordIndex(t *testing.T, recs []record, dir flow.Direction, s string) (at, next int) {
	t.Helper()
	at, next = -1, -1
	for i, r := range recs {
		switch {
		case r.dir != dir:
		case at < 0 && bytes.Contains(r.data, []byte(s)):
			at = i
		case at >= 0 && next < 0:
			next = i
		}
	}
	if at < 0 || next < 0 {
		t.Fatalf("no record of direction %d holding %q and a next one", dir, s)
	}
	return at, next
}

// decodeLosing decodes recs without record lost and tells Lost at the next
// record of its direction, as the kernel's seq gap shows it.
func decodeLosing(recs []record, lost, next int) ([]*Exchange, Stats) {
	d := NewDecoder(Config{})
	var out []*Exchange
	c := d.NewConn(func(e *Exchange) { out = append(out, e) })
	for i, r := range recs {
		switch i {
		case lost:
			continue
		case next:
			c.Lost(r.dir)
		}
		feedRecord(c, r)
	}
	c.Close(time.Now())
	return out, d.Stats()
}

func TestLostResponse(t *testing.T) {
	recs, calls := recordKeepAlive(t, 5)
	lost, next := recordIndex(t, recs, flow.Egress, `"id":"2"`)
	out, stats := decodeLosing(recs, lost, next)
	if len(out) != 5 {
		t.Fatalf("%d exchanges, want 5 (stats %+v)", len(out), stats)
	}
	// The loss was seen when requests 2 and 3 were pending: their
	// responses cannot be paired by order any more.
	for i, e := range out {
		switch i {
		case 1, 2:
			if e.Path != calls[i].path || e.Status != 0 || !slices.Contains(e.Unknown, UnknownStatus) {
				t.Errorf("exchange %d: %+v, want path %s with unknown status", i, e, calls[i].path)
			}
		default:
			checkExchange(t, e, calls[i], e.Host, flow.Ingress)
		}
	}
	if stats.Lost != 1 || stats.OrphanResponses != 1 {
		t.Errorf("stats %+v", stats)
	}
}

func TestLostRequest(t *testing.T) {
	recs, calls := recordKeepAlive(t, 4)
	lost, next := recordIndex(t, recs, flow.Ingress, "/api/users/3 ")
	out, stats := decodeLosing(recs, lost, next)
	if len(out) != 3 {
		t.Fatalf("%d exchanges, want 3 (stats %+v)", len(out), stats)
	}
	for i, e := range out {
		want := calls[i]
		if i == 2 {
			want = calls[3]
		}
		checkExchange(t, e, want, e.Host, flow.Ingress)
	}
	// both sides resync: requests after the loss, responses after the orphan
	if stats.OrphanResponses != 1 || stats.Resyncs != 2 {
		t.Errorf("stats %+v", stats)
	}
}

// TestOneByteReads: Go's server reads the first byte of the next request
// by itself while it finishes a response, so keep-alive requests often
// arrive as "G" and "ET /... HTTP/1.1". That must decode whether the
// decoder is in step or has lost its place (where "ET /x HTTP/1.1" alone
// must not pass for a request).
func TestOneByteReads(t *testing.T) {
	req := "GET /api/users/5 HTTP/1.1\r\nHost: h\r\n\r\n"
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	now := time.Now()
	recs := []record{
		{dir: flow.Ingress, t: now, data: []byte(req)},
		{dir: flow.Egress, t: now, data: []byte(resp)},
		{dir: flow.Ingress, t: now, data: []byte("G")},
		{dir: flow.Ingress, t: now, data: []byte(req[1:])},
		{dir: flow.Egress, t: now, data: []byte(resp)},
	}
	out, stats := decode(Config{}, recs)
	if len(out) != 2 || out[1].Method != "GET" || out[1].Path != "/api/users/5" || out[1].Status != 200 {
		t.Fatalf("in step: %+v (stats %+v)", out, stats)
	}
	// joined mid-connection at the "G"
	out, stats = decode(Config{}, recs[2:])
	if len(out) != 1 || out[0].Method != "GET" || stats.Malformed != 0 {
		t.Fatalf("joined at G: %+v (stats %+v)", out, stats)
	}
	// joined after the "G": nothing is a request
	out, stats = decode(Config{}, recs[3:])
	if len(out) != 0 || stats.OrphanResponses != 1 {
		t.Fatalf("joined after G: %+v (stats %+v)", out, stats)
	}
}

func TestGarbage(t *testing.T) {
	recs, calls := recordKeepAlive(t, 2)
	garbage := []record{
		{dir: flow.Ingress, data: []byte("\x00\x01\x02 not http at all\r\n\r\n")},
		{dir: flow.Ingress, data: []byte("GET /broken HTTP/1.1\r\nBad Header Line\r\n\r\n")},
		{dir: flow.Ingress, data: []byte("GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")},
		{dir: flow.Egress, data: []byte("HTTP/1.1 2000 Nope\r\n\r\n")},
		{dir: flow.Ingress, data: bytes.Repeat([]byte("{json body}"), 200)},
	}
	// garbage before, between and after real exchanges
	var stream []record
	stream = append(stream, garbage...)
	stream = append(stream, recs[:2]...)
	stream = append(stream, garbage...)
	stream = append(stream, recs[2:]...)
	stream = append(stream, garbage...)
	for i := range stream {
		if stream[i].t.IsZero() {
			stream[i].t = time.Now()
		}
	}
	out, stats := decode(Config{}, stream)
	if len(out) != 2 {
		t.Fatalf("%d exchanges, want 2 (stats %+v)", len(out), stats)
	}
	for i, e := range out {
		checkExchange(t, e, calls[i], e.Host, flow.Ingress)
	}
	if stats.Malformed == 0 || stats.Resyncs == 0 {
		t.Errorf("stats %+v: garbage not counted", stats)
	}
}

func TestSecretHeadersConfig(t *testing.T) {
	raw := "GET /k HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cr3t\r\nAuthorization: Basic s3cr3t\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	recs, _ := rawExchange(t, http.NotFoundHandler(), raw)
	out, _ := decode(Config{SecretHeaders: []string{"X-API-KEY"}}, recs)
	if len(out) != 1 {
		t.Fatalf("%d exchanges", len(out))
	}
	checkNoSecrets(t, out[0])
	if header(out[0].RequestHeaders, "accept") != "*/*" || header(out[0].RequestHeaders, "host") != "h" {
		t.Errorf("headers %v", out[0].RequestHeaders)
	}
}

// TestChunkWalker cuts real chunked bytes into reads of every size and
// ships them as the kernel does (small head, 8-byte tail).
func TestChunkWalker(t *testing.T) {
	var body bytes.Buffer
	cw := newChunkedBody(&body, []int{5, 300, 1, 2000, 17})
	wire := body.Bytes()
	for _, headLen := range []int{16, 64, 1024} {
		for size := 1; size <= len(wire); size += 7 {
			var w chunkWalker
			var done bool
			end := -1
			for off := 0; off < len(wire) && !done; off += size {
				piece := wire[off:min(off+size, len(wire))]
				v := view{head: piece[:min(headLen, len(piece))], total: int64(len(piece))}
				if len(piece) > headLen {
					v.tail = piece[len(piece)-kernelTail:]
				}
				next, d, err := w.walk(&v, 0)
				if err != nil {
					t.Fatalf("head %d size %d: %v", headLen, size, err)
				}
				done = d
				end = off + int(next)
			}
			if !done || end != len(wire) {
				t.Fatalf("head %d size %d: done %v at %d, want end %d", headLen, size, done, end, len(wire))
			}
			if w.exact() && w.body != uint64(cw) {
				t.Fatalf("head %d size %d: exact body %d, want %d", headLen, size, w.body, cw)
			}
			if size <= headLen && !w.exact() {
				t.Fatalf("head %d size %d: fully shipped reads lost exactness", headLen, size)
			}
		}
	}
}

// newChunkedBody writes chunks of the given sizes with net/http's chunked
// writer and returns the body size.
func newChunkedBody(w io.Writer, sizes []int) int {
	bw := bufio.NewWriter(w)
	cw := httputil.NewChunkedWriter(bw)
	total := 0
	for _, n := range sizes {
		cw.Write(bytes.Repeat([]byte{'q'}, n))
		total += n
	}
	cw.Close()
	io.WriteString(bw, "\r\n") // end of the (empty) trailer section
	bw.Flush()
	return total
}
