package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
)

func httpEvent(code uint32, method, url string, headers ...*flowpb.HTTPHeader) *flowpb.Flow {
	return &flowpb.Flow{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
		Code: code, Method: method, Url: url, Headers: headers}}}}
}

func TestHTTPStatusCode(t *testing.T) {
	tests := []struct {
		codes []string
		code  uint32
		want  bool
	}{
		{[]string{"200"}, 200, true},
		{[]string{"200"}, 201, false},
		{[]string{"5+"}, 500, true},
		{[]string{"5+"}, 599, true},
		{[]string{"5+"}, 499, false},
		{[]string{"4+"}, 404, true},
		{[]string{"40+"}, 404, true},
		{[]string{"40+"}, 410, false},
		{[]string{"404", "5+"}, 503, true},
		{[]string{"1+"}, 0, false}, // requests carry no code
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{HttpStatusCode: tt.codes}, httpEvent(tt.code, "GET", "/")); got != tt.want {
			t.Errorf("%v on %d: got %v, want %v", tt.codes, tt.code, got, tt.want)
		}
	}
	if match(t, &flowpb.FlowFilter{HttpStatusCode: []string{"2+"}}, &flowpb.Flow{}) {
		t.Error("non-HTTP event matched")
	}
}

func TestHTTPMethod(t *testing.T) {
	ff := &flowpb.FlowFilter{HttpMethod: []string{"get", "POST"}}
	for method, want := range map[string]bool{"GET": true, "post": true, "PUT": false, "": false} {
		if got := match(t, ff, httpEvent(0, method, "/")); got != want {
			t.Errorf("%q: got %v, want %v", method, got, want)
		}
	}
}

func TestHTTPPath(t *testing.T) {
	tests := []struct {
		expr, url string
		want      bool
	}{
		{"/users", "http://a/users/1?q=/x", true},
		{"/users", "/v1/users", true}, // unanchored, as in Hubble
		{"^/users", "/v1/users", false},
		{"^/users/[0-9]+$", "http://a:80/users/42?page=2", true}, // query is not part of the path
		{"page", "/users?page=2", false},
		{"/", "*", false}, // not a request URI
		{"/", "", false},
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{HttpPath: []string{tt.expr}}, httpEvent(0, "GET", tt.url)); got != tt.want {
			t.Errorf("%q on %q: got %v, want %v", tt.expr, tt.url, got, tt.want)
		}
	}
}

func TestHTTPURL(t *testing.T) {
	tests := []struct {
		expr, url string
		want      bool
	}{
		{`^http://api:8080/`, "http://api:8080/x", true},
		{`page=2`, "/users?page=2", true},
		{`^https://`, "http://a/x", false},
		{`.*`, "", false},
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{HttpUrl: []string{tt.expr}}, httpEvent(0, "GET", tt.url)); got != tt.want {
			t.Errorf("%q on %q: got %v, want %v", tt.expr, tt.url, got, tt.want)
		}
	}
}

func TestHTTPHeader(t *testing.T) {
	ev := httpEvent(200, "GET", "/", &flowpb.HTTPHeader{Key: "grpc-status", Value: "5"}, &flowpb.HTTPHeader{Key: "content-type", Value: "application/grpc"})
	tests := []struct {
		h    *flowpb.HTTPHeader
		want bool
	}{
		{&flowpb.HTTPHeader{Key: "grpc-status", Value: "5"}, true},
		{&flowpb.HTTPHeader{Key: "Grpc-Status", Value: "5"}, true},
		{&flowpb.HTTPHeader{Key: "grpc-status", Value: "0"}, false},
		{&flowpb.HTTPHeader{Key: "x", Value: "5"}, false},
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{HttpHeader: []*flowpb.HTTPHeader{tt.h}}, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.h, got, tt.want)
		}
	}
}

// What `hubble observe --http-status 200 --http-path /x` sends, against
// real conversion output: only the response of a matching exchange passes.
func TestHTTPAsHubbleCLISends(t *testing.T) {
	req, resp := exchange(t, "GET", "/x", 200, flow.SideServer)
	_, other := exchange(t, "GET", "/y", 200, flow.SideServer)
	m := mustBuild(t, []*flowpb.FlowFilter{{HttpStatusCode: []string{"200"}, HttpPath: []string{"/x"}}}, nil)
	if m(req) || !m(resp) || m(other) {
		t.Errorf("req %v resp %v other %v, want false true false", m(req), m(resp), m(other))
	}
	// With the L7 event type (what --type l7 adds) HTTP filters are valid.
	if _, err := Build([]*flowpb.FlowFilter{{HttpStatusCode: []string{"200"}, EventType: []*flowpb.EventTypeFilter{{Type: 129}}}}, nil); err != nil {
		t.Error(err)
	}
}
