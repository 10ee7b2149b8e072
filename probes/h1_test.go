package probes

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestHTTP1Records(t *testing.T) {
	rec := startRecorder(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 500) // 5000 bytes: head + tail
	big = append(big, []byte("THE-END!")...)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big))) // not chunked: the tail is the body's end
		w.Write(big)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/h1/path?q=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, big) {
		t.Fatalf("body mismatch")
	}
	client.CloseIdleConnections()
	g := group(rec.stop(t))

	cl, sv := findConns(t, g, ln.Addr().String())
	for _, id := range []uint64{cl, sv} {
		if p := g.conns[id].Proto; p != ProtoH1 {
			t.Errorf("conn %d proto %s, want http/1", id, p)
		}
	}
	if c := g.conns[sv]; c.Local != netip.MustParseAddrPort(ln.Addr().String()) || c.Comm == "" || c.FD == 0 {
		t.Errorf("server conn info %+v", c)
	}
	for _, k := range []connKey{{cl, Egress}, {sv, Ingress}} {
		evs := g.h1[k]
		if len(evs) == 0 || !strings.HasPrefix(string(evs[0].Data), "GET /h1/path?q=1 HTTP/1.1\r\n") {
			t.Errorf("%v: request records %d, first %q", k, len(evs), first(evs))
		}
	}
	// The response: status line first; the whole stream's bytes add up;
	// records longer than the head carry the tail.
	for _, k := range []connKey{{sv, Egress}, {cl, Ingress}} {
		evs := g.h1[k]
		if len(evs) == 0 || !strings.HasPrefix(string(evs[0].Data), "HTTP/1.1 200 OK\r\n") {
			t.Errorf("%v: response records %d, first %q", k, len(evs), first(evs))
			continue
		}
		total := 0
		var last *Event
		for i, ev := range evs {
			total += int(ev.Len)
			if ev.Seq != uint32(i) {
				t.Errorf("%v: record %d has seq %d", k, i, ev.Seq)
			}
			want := min(int(ev.Len), H1HeadBytes)
			if len(ev.Data) != want {
				t.Errorf("%v: record of %d bytes carries %d head bytes, want %d", k, ev.Len, len(ev.Data), want)
			}
			if ev.Len > H1HeadBytes && len(ev.Tail) != 8 {
				t.Errorf("%v: record of %d bytes has %d tail bytes", k, ev.Len, len(ev.Tail))
			}
			last = ev
		}
		if total < len(big) {
			t.Errorf("%v: %d bytes in records, body alone is %d", k, total, len(big))
		}
		if last.Len > H1HeadBytes && string(last.Tail) != "THE-END!" {
			t.Errorf("%v: last tail %q", k, last.Tail)
		}
	}
}

func first(evs []*Event) string {
	if len(evs) == 0 {
		return ""
	}
	return string(evs[0].Data)
}
