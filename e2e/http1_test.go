package e2e

import "testing"

// Test 6: HTTP/1.1 with keep-alive (Go net/http, HTTP/2 disabled): several
// requests on one connection, bodies smaller and larger than the 1024-byte
// head the probes ship, so sizes must come from Content-Length.
func TestHTTP1KeepAlive(t *testing.T) {
	pl := startPipeline(t)
	specs := []reqSpec{
		{Method: "GET", Path: "/s/200/10/h1/a"},
		{Method: "GET", Path: "/s/404/0/h1/missing"},
		{Method: "POST", Path: "/s/200/2048/h1/upload", Body: 3000},
		{Method: "GET", Path: "/s/500/19/h1/broken?why=test"},
		{Method: "PUT", Path: "/s/201/0/h1/thing", Body: 12},
		{Method: "GET", Path: "/s/200/10/h1/a"},
		{Method: "DELETE", Path: "/s/200/4/h1/thing"},
		{Method: "GET", Path: "/s/200/100000/h1/large"},
	}
	runHTTPWorkload(t, pl, false, specs, 1)
}
