package http1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// A pipelining client (Python's http.client, curl --pipeline…) writes its
// requests one by one and reads the responses as they come: once the
// server has answered them all, one read returns every response. The tests
// build that client's view from the bytes a real net/http server wrote.

// pipeliningServer answers /a with 150 bytes and /big with a header block
// larger than the 1 KiB the kernel ships of a read.
func pipeliningServer(t *testing.T) *testServer {
	return startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/big") {
			w.Header().Set("X-Padding", strings.Repeat("p", 1500))
		}
		io.WriteString(w, strings.Repeat("b", 150))
	}))
}

// pipeline sends batches of requests on one connection, every request of
// a batch before reading the batch's responses, and returns the server's
// records and the bytes of each response in order.
func pipeline(t *testing.T, srv *testServer, batches ...[]string) ([]record, [][]byte) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	var resps [][]byte
	for _, paths := range batches {
		for _, p := range paths {
			if _, err := io.WriteString(conn, "GET "+p+" HTTP/1.1\r\nHost: pipelined\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		for range paths {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			n := raw.Len() - br.Buffered() // bytes of this response, read-ahead excluded
			resps = append(resps, append([]byte(nil), raw.Next(n)...))
		}
	}
	return srv.serverRecords(t), resps
}

// clientView is what the kernel sees of the pipelining client: one write
// per request, then one read per batch holding the batch's responses.
func clientView(batches [][]string, resps [][]byte) []record {
	now := time.Now()
	tick := func() time.Time { now = now.Add(time.Microsecond); return now }
	var recs []record
	for _, paths := range batches {
		var read []byte
		for _, p := range paths {
			recs = append(recs, record{dir: flow.Egress, t: tick(), data: []byte("GET " + p + " HTTP/1.1\r\nHost: pipelined\r\n\r\n")})
			read = append(read, resps[0]...)
			resps = resps[1:]
		}
		recs = append(recs, record{dir: flow.Ingress, t: tick(), data: read})
	}
	return recs
}

// responseFate says what the decoder can know of a response that begins
// at off in a read of which the kernel shipped the first kernelHead bytes.
func responseFate(resp []byte, off int) (statusKnown, exact bool) {
	lineEnd := bytes.Index(resp, []byte("\r\n")) + 2
	headEnd := bytes.Index(resp, []byte("\r\n\r\n")) + 4
	return off+lineEnd <= kernelHead, off+headEnd <= kernelHead
}

// TestPipelinedResponsesBeyondHead is issue 15's case: responses that begin
// beyond what the kernel shipped of a read are not followed, and the
// requests they answer must come out with their response unknown — not as
// requests the connection closed on before any answer.
func TestPipelinedResponsesBeyondHead(t *testing.T) {
	srv := pipeliningServer(t)
	batch := []string{"/a?pipe=1", "/a?pipe=2", "/a?pipe=3", "/a?pipe=4", "/a?pipe=5", "/a?pipe=6", "/a?pipe=7"}
	_, resps := pipeline(t, srv, batch)
	if total := len(bytes.Join(resps, nil)); total <= kernelHead+len(resps[0]) {
		t.Fatalf("responses take %d bytes: not enough to go beyond the shipped head", total)
	}
	out, stats := decode(Config{}, clientView([][]string{batch}, resps))
	if len(out) != len(batch) {
		t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(batch), stats)
	}
	off, hidden := 0, 0
	for i, e := range out {
		statusKnown, exact := responseFate(resps[i], off)
		off += len(resps[i])
		if e.Path != batch[i] || e.RequestDir != flow.Egress {
			t.Errorf("exchange %d is %s, want %s", i, e.Path, batch[i])
		}
		switch {
		case exact:
			if e.Status != 200 || e.ResponseBytes != 150 || len(e.Unknown) != 0 || e.Outcome != flow.OutcomeComplete {
				t.Errorf("exchange %d (shipped whole): status %d bytes %d unknown %v %v", i, e.Status, e.ResponseBytes, e.Unknown, e.Outcome)
			}
		case statusKnown:
			if e.Status != 200 || !slices.Contains(e.Unknown, UnknownResponseHeaders) {
				t.Errorf("exchange %d (status line shipped): status %d unknown %v", i, e.Status, e.Unknown)
			}
		default:
			hidden++
			if e.Status != 0 || !slices.Contains(e.Unknown, UnknownStatus) || !slices.Contains(e.Unknown, UnknownOutcome) {
				t.Errorf("exchange %d (not shipped): status %d unknown %v outcome %v, want its response unknown", i, e.Status, e.Unknown, e.Outcome)
			}
		}
	}
	if hidden == 0 {
		t.Fatalf("no response began beyond the shipped head: the test shows nothing")
	}
}

// TestPipelinedNoGuessAfterLostPlace: once the response side could not
// follow a read, the next status line must not be paired by order with a
// request whose response may have been in that read.
func TestPipelinedNoGuessAfterLostPlace(t *testing.T) {
	srv := pipeliningServer(t)
	// /big's header block is cut: the response after it is beyond reach.
	batches := [][]string{{"/a?first", "/big", "/a?after-big"}, {"/a?later"}}
	_, resps := pipeline(t, srv, batches...)
	out, stats := decode(Config{}, clientView(batches, resps))
	if len(out) != 4 {
		t.Fatalf("%d exchanges, want 4 (stats %+v)", len(out), stats)
	}
	check := func(i int, path string, status uint32, unknown ...string) {
		t.Helper()
		e := out[i]
		if e.Path != path || e.Status != status || !slices.Equal(e.Unknown, unknown) {
			t.Errorf("exchange %d: %s status %d unknown %v, want %s status %d unknown %v",
				i, e.Path, e.Status, e.Unknown, path, status, unknown)
		}
	}
	check(0, "/a?first", 200)
	check(1, "/big", 200, UnknownResponseHeaders, UnknownResponseBytes, UnknownLatency)
	check(2, "/a?after-big", 0, UnknownStatus, UnknownResponseHeaders, UnknownResponseBytes, UnknownTTFB, UnknownLatency, UnknownOutcome)
	check(3, "/a?later", 200)
	if out[3].ResponseBytes != 150 {
		t.Errorf("/a?later: %d response bytes, want 150", out[3].ResponseBytes)
	}
}

// splitMessages cuts a stream of responses into its messages: what a
// kernel that follows HTTP/1 framing ships as one entry each.
func splitMessages(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(stream) > 0 {
		br := bufio.NewReader(bytes.NewReader(stream))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		n := len(stream) - br.Buffered()
		out = append(out, stream[:n])
		stream = stream[n:]
	}
	return out
}

// TestPipelinedWholeMessages: a read cut at message boundaries, each part
// with its header block shipped and its body only counted (what the
// socket-level capture is to ship), decodes exactly — the same decoder,
// nothing guessed.
func TestPipelinedWholeMessages(t *testing.T) {
	srv := pipeliningServer(t)
	batches := [][]string{{"/a?pipe=1", "/big", "/a?pipe=3", "/a?pipe=4", "/a?pipe=5", "/a?pipe=6"}, {"/a?last"}}
	_, resps := pipeline(t, srv, batches...)
	d := NewDecoder(Config{})
	var out []*Exchange
	c := d.NewConn(func(e *Exchange) { out = append(out, e) })
	for _, r := range clientView(batches, resps) {
		if r.dir == flow.Egress {
			feedRecord(c, r)
			continue
		}
		for _, msg := range splitMessages(t, r.data) {
			head := msg[:bytes.Index(msg, []byte("\r\n\r\n"))+4]
			c.Feed(r.dir, r.t, head, uint32(len(msg)), nil)
		}
	}
	c.Close(time.Now())
	paths := slices.Concat(batches...)
	if len(out) != len(paths) {
		t.Fatalf("%d exchanges, want %d (stats %+v)", len(out), len(paths), d.Stats())
	}
	for i, e := range out {
		if e.Path != paths[i] || e.Status != 200 || e.ResponseBytes != 150 || len(e.Unknown) != 0 || e.Outcome != flow.OutcomeComplete {
			t.Errorf("exchange %d: %s status %d bytes %d unknown %v %v", i, e.Path, e.Status, e.ResponseBytes, e.Unknown, e.Outcome)
		}
	}
}

// TestBodyCountedNotShipped: nginx sends a file's bytes with sendfile(2),
// which no read of user memory sees; a record that only counts them (no
// bytes shipped) keeps the framing, so the next response still pairs.
func TestBodyCountedNotShipped(t *testing.T) {
	srv := pipeliningServer(t)
	recs, _ := pipeline(t, srv, []string{"/a?1"}, []string{"/a?2"}, []string{"/a?3"})
	var view []record
	for _, r := range recs {
		if r.dir == flow.Egress {
			// header block by write(2), the body by sendfile(2)
			end := bytes.Index(r.data, []byte("\r\n\r\n")) + 4
			view = append(view, record{dir: r.dir, t: r.t, data: r.data[:end]}, record{dir: r.dir, t: r.t, data: r.data[end:]})
			continue
		}
		view = append(view, r)
	}
	d := NewDecoder(Config{})
	var out []*Exchange
	c := d.NewConn(func(e *Exchange) { out = append(out, e) })
	bodies := 0
	for _, r := range view {
		if r.dir == flow.Egress && !bytes.HasPrefix(r.data, []byte("HTTP/1.1 ")) {
			c.Feed(r.dir, r.t, nil, uint32(len(r.data)), nil) // counted, not shipped
			bodies++
			continue
		}
		feedRecord(c, r)
	}
	c.Close(time.Now())
	if bodies != 3 || len(out) != 3 {
		t.Fatalf("%d bodies, %d exchanges, want 3 and 3 (stats %+v)", bodies, len(out), d.Stats())
	}
	for i, e := range out {
		if e.Status != 200 || e.ResponseBytes != 150 || len(e.Unknown) != 0 || e.Outcome != flow.OutcomeComplete {
			t.Errorf("exchange %d: %s status %d bytes %d unknown %v", i, e.Path, e.Status, e.ResponseBytes, e.Unknown)
		}
	}
}
