package http2

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/flow"
)

// exchangeHandler answers /status/<code>/<anything> with that code and a
// body of ?size bytes, and echoes the request body length in a header.
func exchangeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("x-request-bytes", fmt.Sprint(n))
		code := 200
		fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/status/"), "%d", &code)
		size := 0
		fmt.Sscanf(r.URL.Query().Get("size"), "%d", &size)
		w.WriteHeader(code)
		w.Write([]byte(strings.Repeat("x", size)))
	})
}

type want struct {
	method, path       string
	status             uint32
	reqBytes, rspBytes uint64
}

func decodeAll(recs []*Record, joinedMidway bool) ([]*flow.Flow, *Stats) {
	var flows []*flow.Flow
	st := &Stats{}
	c := NewConn(Config{}, st, joinedMidway, flow.Egress, func(f *flow.Flow) { flows = append(flows, f) })
	for _, r := range recs {
		c.Handle(r)
	}
	return flows, st
}

func TestGoClientServer(t *testing.T) {
	client, tp := h2cPair(t, exchangeHandler())
	var wants []want
	for i := range 40 {
		code := []uint32{200, 404, 500, 201}[i%4]
		path := fmt.Sprintf("/status/%d/item/%d?size=%d", code, i%7, i*10)
		method, body := "GET", ""
		if i%3 == 0 {
			method, body = "POST", strings.Repeat("b", i)
		}
		req, _ := http.NewRequest(method, "http://"+tp.addr()+path, strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		req.Header.Set("authorization", "Bearer secret-token")
		req.Header.Set("x-tenant", "acme")
		resp, err := client.Do(req)
		drain(t, resp, err)
		wants = append(wants, want{method, path, code, uint64(len(body)), uint64(i * 10)})
	}
	flows, st := decodeAll(tp.records(), false)
	if len(flows) != len(wants) {
		t.Fatalf("got %d flows, want %d", len(flows), len(wants))
	}
	for i, f := range flows {
		w := wants[i]
		if f.Method != w.method || f.Path != w.path || f.Status != w.status ||
			f.RequestBytes != w.reqBytes || f.ResponseBytes != w.rspBytes ||
			f.Observer != flow.SideClient || f.Outcome != flow.OutcomeComplete || f.Unknown != nil {
			t.Errorf("flow %d = %s %s %d req=%d rsp=%d side=%v outcome=%v unknown=%v; want %+v",
				i, f.Method, f.Path, f.Status, f.RequestBytes, f.ResponseBytes, f.Observer, f.Outcome, f.Unknown, w)
		}
		if f.Authority != tp.addr() || f.Scheme != "http" {
			t.Errorf("flow %d authority=%q scheme=%q", i, f.Authority, f.Scheme)
		}
		if f.Latency <= 0 || f.TTFB <= 0 || f.TTFB > f.Latency {
			t.Errorf("flow %d latency=%v ttfb=%v", i, f.Latency, f.TTFB)
		}
		for _, h := range f.RequestHeaders {
			if h.Name == "authorization" || strings.Contains(h.Value, "secret") {
				t.Errorf("flow %d exported a secret header %q", i, h.Name)
			}
		}
		if !hasHeader(f.RequestHeaders, "x-tenant", "acme") {
			t.Errorf("flow %d lost header x-tenant: %v", i, f.RequestHeaders)
		}
	}
	if *st != (Stats{}) {
		t.Errorf("stats = %+v, want all zero", *st)
	}
}

// Without header lists (metrics only) the same records give the same flows
// minus the lists: every field built from a header is still there.
func TestNoHeaderLists(t *testing.T) {
	client, tp := h2cPair(t, exchangeHandler())
	for i := range 8 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/status/503/x/%d", tp.addr(), i), nil)
		req.Header.Set("x-tenant", "acme")
		req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		resp, err := client.Do(req)
		drain(t, resp, err)
	}
	recs := tp.records()
	full, _ := decodeAll(recs, false)
	var lean []*flow.Flow
	c := NewConn(Config{NoHeaderLists: true}, &Stats{}, false, flow.Egress, func(f *flow.Flow) { lean = append(lean, f) })
	for _, r := range recs {
		c.Handle(r)
	}
	if len(full) != 8 || len(lean) != 8 {
		t.Fatalf("flows: %d with lists, %d without; want 8 each", len(full), len(lean))
	}
	for i := range lean {
		if len(lean[i].RequestHeaders) != 0 || len(lean[i].ResponseHeaders) != 0 {
			t.Errorf("flow %d kept header lists: %v %v", i, lean[i].RequestHeaders, lean[i].ResponseHeaders)
		}
		if !hasHeader(full[i].RequestHeaders, "x-tenant", "acme") {
			t.Fatalf("flow %d with lists lost x-tenant: the comparison below would prove nothing", i)
		}
		f, l := *full[i], *lean[i]
		f.RequestHeaders, f.ResponseHeaders = nil, nil
		l.RequestHeaders, l.ResponseHeaders = nil, nil
		if fmt.Sprintf("%+v", f) != fmt.Sprintf("%+v", l) {
			t.Errorf("flow %d differs beyond the lists:\n with    %+v\n without %+v", i, f, l)
		}
		if l.Status != 503 || l.TraceParent == "" {
			t.Errorf("flow %d without lists: status %d traceparent %q", i, l.Status, l.TraceParent)
		}
	}
}

func hasHeader(hs []flow.Header, name, value string) bool {
	for _, h := range hs {
		if h.Name == name && h.Value == value {
			return true
		}
	}
	return false
}

// A header too large for one frame arrives as HEADERS + CONTINUATION, and
// its pieces span several kernel records.
func TestContinuation(t *testing.T) {
	client, tp := h2cPair(t, exchangeHandler())
	big := strings.Repeat("v0123456789", 4000) // 44 KB, not Huffman-shrinkable below 16 KB
	for i := range 3 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/big/%d", tp.addr(), i), nil)
		req.Header.Set("x-big", big)
		resp, err := client.Do(req)
		drain(t, resp, err)
	}
	recs := tp.records()
	conts := 0
	for _, r := range recs {
		if r.Type == http2.FrameContinuation {
			conts++
		}
	}
	if conts == 0 {
		t.Fatal("no CONTINUATION frames on the wire: test does not test what it says")
	}
	flows, _ := decodeAll(recs, false)
	if len(flows) != 3 {
		t.Fatalf("got %d flows, want 3", len(flows))
	}
	for i, f := range flows {
		if f.Path != fmt.Sprintf("/big/%d", i) || f.Status != 200 || !hasHeader(f.RequestHeaders, "x-big", big[:maxHeaderValue]) {
			t.Errorf("flow %d: path=%q status=%d", i, f.Path, f.Status)
		}
	}
}

// Joining a connection mid-way: fields that reference HPACK entries from
// before the join are unknown, never wrong; new entries decode exactly.
func TestJoinMidway(t *testing.T) {
	client, tp := h2cPair(t, exchangeHandler())
	get := func(path string) {
		resp, err := client.Get("http://" + tp.addr() + path)
		drain(t, resp, err)
	}
	for i := range 5 {
		get(fmt.Sprintf("/status/200/before/%d", i%2)) // paths enter the dynamic table
	}
	joinAt := len(tp.records())
	paths := []string{"/status/200/before/0", "/status/404/after/new", "/status/200/before/1", "/status/404/after/new"}
	for _, p := range paths {
		get(p)
	}
	flows, st := decodeAll(tp.records()[joinAt:], true)
	if len(flows) != len(paths) {
		t.Fatalf("got %d flows, want %d", len(flows), len(paths))
	}
	exact := 0
	for i, f := range flows {
		if f.Path != "" && f.Path != paths[i] {
			t.Errorf("flow %d: wrong path %q, want %q or unknown", i, f.Path, paths[i])
		}
		if f.Path == "" && !contains(f.Unknown, "path") {
			t.Errorf("flow %d: path missing but not marked unknown: %v", i, f.Unknown)
		}
		wantStatus := uint32(200)
		if strings.Contains(paths[i], "404") {
			wantStatus = 404
		}
		if f.Status != 0 && f.Status != wantStatus {
			t.Errorf("flow %d: wrong status %d", i, f.Status)
		}
		if f.Path == paths[i] {
			exact++
		}
	}
	// The 4th request repeats the 2nd, whose path was inserted after the join.
	if flows[3].Path != paths[3] {
		t.Errorf("path inserted after the join not recovered: %+v", flows[3])
	}
	if st.UnknownFields == 0 {
		t.Error("no unknown fields counted: pre-join table references went unnoticed")
	}
	t.Logf("exact paths %d/%d, unknown fields %d", exact, len(flows), st.UnknownFields)
}

// Loss of records in one direction drops the open exchanges and the
// decoder recovers for later ones without reporting wrong fields.
func TestLostRecords(t *testing.T) {
	client, tp := h2cPair(t, exchangeHandler())
	for i := range 6 {
		resp, err := client.Get(fmt.Sprintf("http://%s/status/200/p/%d", tp.addr(), i%3))
		drain(t, resp, err)
	}
	recs := tp.records()
	var flows []*flow.Flow
	st := &Stats{}
	c := NewConn(Config{}, st, false, flow.Egress, func(f *flow.Flow) { flows = append(flows, f) })
	lostOne := false
	for _, r := range recs {
		if !lostOne && r.Type == http2.FrameHeaders && r.Dir == flow.Egress && r.StreamID == 5 {
			lostOne = true
			c.Lost(flow.Egress) // this record never arrived
			continue
		}
		c.Handle(r)
	}
	if len(flows) != 5 {
		t.Fatalf("got %d flows, want 5 (one request lost)", len(flows))
	}
	for _, f := range flows {
		if f.Path != "" && !strings.HasPrefix(f.Path, "/status/200/p/") {
			t.Errorf("wrong path after loss: %q", f.Path)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
