package printer

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/sextant/sextant/collector/flow"
)

func code(c uint32) *uint32 { return &c }

var at = time.Date(2026, 11, 25, 19, 34, 1, 123456789, time.UTC)

func base() *flow.Flow {
	return &flow.Flow{
		Time:        at,
		Latency:     12300 * time.Microsecond,
		Node:        "node-a",
		Observer:    flow.SideClient,
		Protocol:    "HTTP/2",
		Method:      "GET",
		Scheme:      "http",
		Authority:   "localhost:8080",
		Path:        "/hello?x=1",
		Status:      200,
		Source:      netip.MustParseAddrPort("127.0.0.1:54321"),
		Destination: netip.MustParseAddrPort("127.0.0.1:8080"),
		Process:     flow.Process{PID: 1234, Comm: "curl"},
	}
}

func TestCompactLine(t *testing.T) {
	const prefix = "Nov 25 19:34:01.123  node-a  curl(1234) 127.0.0.1:54321 -> 127.0.0.1:8080  "
	tests := []struct {
		name   string
		modify func(*flow.Flow)
		want   string
	}{
		{"http2", func(*flow.Flow) {},
			prefix + "HTTP/2  GET http://localhost:8080/hello?x=1  200  12.3ms"},
		{"http1 origin-form has no scheme", func(f *flow.Flow) {
			f.Protocol, f.Scheme, f.Latency = "HTTP/1.1", "", 850*time.Microsecond
		}, prefix + "HTTP/1.1  GET localhost:8080/hello?x=1  200  850µs"},
		{"grpc with status", func(f *flow.Flow) {
			f.Method, f.Path, f.Authority = "POST", "/demo.Echo/Say", "127.0.0.1:50051"
			f.GRPC = &flow.GRPC{Service: "demo.Echo", Method: "Say", Status: code(5), StatusSource: "trailers"}
			f.Latency = 1250 * time.Millisecond
		}, prefix + "HTTP/2  POST http://127.0.0.1:50051/demo.Echo/Say  200  gRPC demo.Echo/Say NotFound  1.25s"},
		{"grpc without status", func(f *flow.Flow) {
			f.Method, f.Path = "POST", "/demo.Echo/Say"
			f.GRPC = &flow.GRPC{Service: "demo.Echo", Method: "Say"}
			f.Status = 0
			f.Outcome, f.ResetCode, f.ResetBy = flow.OutcomeReset, 8, flow.SideClient
		}, prefix + "HTTP/2  POST http://localhost:8080/demo.Echo/Say  -  gRPC demo.Echo/Say -  reset CANCEL by client  12.3ms"},
		{"unknown fields are ?", func(f *flow.Flow) {
			f.Path, f.Authority, f.Status = "", "", 0
			f.GRPC = &flow.GRPC{}
			f.Unknown = []string{"authority", "grpc_status", "latency", "path", "status"}
		}, prefix + "HTTP/2  GET http://?/?  ?  gRPC ? ?  ?"},
		{"unknown method and scheme", func(f *flow.Flow) {
			f.Method, f.Scheme = "", ""
			f.Unknown = []string{"method", "scheme"}
		}, prefix + "HTTP/2  ? ?://localhost:8080/hello?x=1  200  12.3ms"},
		{"refused by goaway", func(f *flow.Flow) {
			f.Status = 0
			f.Outcome, f.ResetCode, f.ResetBy = flow.OutcomeRefused, 0, flow.SideServer
		}, prefix + "HTTP/2  GET http://localhost:8080/hello?x=1  -  refused NO_ERROR by server  12.3ms"},
		{"unnamed http2 error code", func(f *flow.Flow) {
			f.Outcome, f.ResetCode, f.ResetBy = flow.OutcomeReset, 0x99, flow.SideServer
		}, prefix + "HTTP/2  GET http://localhost:8080/hello?x=1  200  reset 0x99 by server  12.3ms"},
		{"server side puts the process after the destination", func(f *flow.Flow) {
			f.Observer, f.Process = flow.SideServer, flow.Process{PID: 99, Comm: "nghttpd"}
		}, "Nov 25 19:34:01.123  node-a  127.0.0.1:54321 -> 127.0.0.1:8080 nghttpd(99)  HTTP/2  GET http://localhost:8080/hello?x=1  200  12.3ms"},
		{"connection closed, http1", func(f *flow.Flow) {
			f.Protocol, f.Scheme, f.Status, f.Outcome = "HTTP/1.1", "", 0, flow.OutcomeClosed
			f.Latency = 5 * time.Millisecond
		}, prefix + "HTTP/1.1  GET localhost:8080/hello?x=1  -  closed  5ms"},
		{"unknown outcome", func(f *flow.Flow) {
			f.Unknown = []string{"outcome"}
		}, prefix + "HTTP/2  GET http://localhost:8080/hello?x=1  200  outcome ?  12.3ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := base()
			tt.modify(f)
			if got := CompactLine(f, time.UTC); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestCompactLineEmptyFlow(t *testing.T) {
	// Nothing known at all must still print, with every identity field "?".
	got := CompactLine(&flow.Flow{}, time.UTC)
	want := "?  ?  ?(?) ? -> ?  ?  - -  -  0ns"
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-1:                       "?",
		0:                        "0ns",
		999:                      "999ns",
		1500:                     "1.5µs",
		850 * time.Microsecond:   "850µs",
		time.Millisecond:         "1ms",
		12345 * time.Microsecond: "12.3ms",
		999 * time.Millisecond:   "999ms",
		1250 * time.Millisecond:  "1.25s",
		90 * time.Second:         "90s",
		1234 * time.Second:       "1234s",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestJSONRoundTrips(t *testing.T) {
	f := base()
	f.GRPC = &flow.GRPC{Service: "demo.Echo", Method: "Say", Status: code(0)}
	var buf bytes.Buffer
	p := New(&buf, JSON)
	if err := p.Print(f); err != nil {
		t.Fatal(err)
	}
	if err := p.Print(f); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&buf)
	for i := range 2 {
		var got flow.Flow
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if !reflect.DeepEqual(&got, f) {
			t.Fatalf("line %d:\n got %+v\nwant %+v", i, got, f)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"compact", "json"} {
		if f, err := ParseFormat(s); err != nil || string(f) != s {
			t.Errorf("ParseFormat(%q) = %q, %v", s, f, err)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error("ParseFormat(yaml) succeeded")
	}
}
