package http1

import (
	"testing"
)

// BenchmarkExchange decodes one recorded keep-alive GET exchange (server
// view: request read, response write) per iteration on one connection.
func BenchmarkExchange(b *testing.B) {
	srv := startServer(b, apiMux())
	client, _ := recordingClient(0)
	c := &call{method: "GET", path: "/api/users/42", header: secretHeader()}
	c.do(b, client, "http://"+srv.addr)
	client.CloseIdleConnections()
	recs := srv.ln.recorders()[0].records()

	d := NewDecoder(Config{})
	emitted := 0
	conn := d.NewConn(func(*Exchange) { emitted++ })
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range recs {
			feedRecord(conn, r)
		}
	}
	if emitted == 0 || d.Stats().Malformed != 0 {
		b.Fatalf("emitted %d, stats %+v", emitted, d.Stats())
	}
}
