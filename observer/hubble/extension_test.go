package hubble

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// The flow a relay reconstructs from an agent's event equals what the
// agent's collector produced.
func TestFlowRoundTrip(t *testing.T) {
	st := uint32(5)
	f := &flow.Flow{
		Time: time.Unix(1700000000, 123456789).UTC(), Latency: 3 * time.Millisecond, TTFB: time.Millisecond,
		Node: "n1", Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Scheme: "http",
		Authority: "svc:8080", Path: "/pkg.Svc/Get", Status: 200,
		GRPC:         &flow.GRPC{Service: "pkg.Svc", Method: "Get", Status: &st, StatusSource: "trailers", Message: "gone", RequestMessages: 1},
		RequestBytes: 12, ResponseBytes: 0,
		RequestHeaders: []flow.Header{{Name: "x-big", Value: "v", Truncated: true}},
		Source:         netip.MustParseAddrPort("10.0.0.1:5555"), Destination: netip.MustParseAddrPort("[::1]:8080"),
		Process: flow.Process{PID: 7, Comm: "svc", Exe: "/bin/svc", CgroupID: 9, Cgroup: "/a", ContainerID: "c"},
		ConnID:  3, StreamID: 5, Outcome: flow.OutcomeReset, ResetCode: 8, ResetBy: flow.SideClient,
		Unknown: []string{"authority"},
	}
	evs := Events(f)
	if err := AttachFlow(evs[len(evs)-1], f); err != nil {
		t.Fatal(err)
	}
	if g, err := FlowOf(evs[0]); g != nil || err != nil || len(evs) != 2 {
		t.Fatalf("request event carries %v, %v; want nothing (2 events)", g, err)
	}
	got, err := FlowOf(evs[1])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, f)
	}
}

// BenchmarkEventsWithFlow is what the agent pays per exchange before its
// events reach the ring: conversion plus the attached flow.
func BenchmarkEventsWithFlow(b *testing.B) {
	f := &flow.Flow{
		Time: time.Unix(1700000000, 0), Latency: 3 * time.Millisecond, Node: "node-1", Observer: flow.SideServer,
		Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "127.0.0.1:50051", Path: "/helloworld.Greeter/SayHello",
		Status: 200, Source: netip.MustParseAddrPort("127.0.0.1:40000"), Destination: netip.MustParseAddrPort("127.0.0.1:50051"),
		Process:         flow.Process{PID: 7, Comm: "greeter", Exe: "/usr/bin/greeter", Cgroup: "/system.slice/greeter.service"},
		RequestHeaders:  []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "user-agent", Value: "grpc-go/1.85.0"}},
		ResponseHeaders: []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}},
	}
	b.ReportAllocs()
	for b.Loop() {
		evs := Events(f)
		if err := AttachFlow(evs[len(evs)-1], f); err != nil {
			b.Fatal(err)
		}
	}
}
