package access

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

func sockAddr(a string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: a, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// A real gRPC client (Envoy's ALS proto types, as Envoy sends them) over
// a unix socket, as the bootstrap configures it.
func TestALSEntriesBecomeRecords(t *testing.T) {
	var mu sync.Mutex
	var got []Record
	als := NewALS(func(r Record) { mu.Lock(); got = append(got, r); mu.Unlock() })
	als.PoliciesFor = func(a netip.AddrPort) []string {
		if a.String() == "127.0.0.1:50051" {
			return []string{"default/echo-l7"}
		}
		return nil
	}
	sock := t.TempDir() + "/als.sock"
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	als.Register(g)
	go g.Serve(l)
	defer g.Stop()

	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := alsv3.NewAccessLogServiceClient(cc).StreamAccessLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	entry := func(details string, code uint32, grpcStatus string, cluster string) *alsdata.HTTPAccessLogEntry {
		return &alsdata.HTTPAccessLogEntry{
			ProtocolVersion: alsdata.HTTPAccessLogEntry_HTTP2,
			CommonProperties: &alsdata.AccessLogCommon{
				StartTime:                  timestamppb.New(start),
				TimeToLastDownstreamTxByte: durationpb.New(3 * time.Millisecond),
				DownstreamRemoteAddress:    sockAddr("127.0.0.1", 40000),
				DownstreamLocalAddress:     sockAddr("127.0.0.1", 50051),
				UpstreamCluster:            cluster,
			},
			Request: &alsdata.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_POST, Scheme: "http", Authority: "echo",
				Path: "/echo.Echo/Ping", RequestHeaders: map[string]string{"content-type": "application/grpc"}, RequestBodyBytes: 12},
			Response: &alsdata.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseCodeDetails: details,
				ResponseHeaders: map[string]string{"grpc-status": grpcStatus}, ResponseBodyBytes: 0},
		}
	}
	if err := stream.Send(&alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-node-1"}, LogName: "sextant"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*alsdata.HTTPAccessLogEntry{
			entry("via_upstream", 200, "0", "default/echo-a"),
			entry("rbac_access_denied_matched_policy[none]", 200, "7", "inbound:127.0.0.1:50051"),
		}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(got), got)
	}
	ok, denied := got[0], got[1]
	if ok.Decision.Verdict != VerdictForwarded || ok.Flow.Observer != flow.SideClient || ok.Flow.Node != "envoy-node-1" ||
		ok.Flow.GRPC == nil || ok.Flow.GRPC.Service != "echo.Echo" || *ok.Flow.GRPC.Status != 0 || ok.Flow.Latency != 3*time.Millisecond ||
		ok.Flow.Source.String() != "127.0.0.1:40000" || ok.Flow.Destination.String() != "127.0.0.1:50051" || !ok.Flow.Time.Equal(start) {
		t.Errorf("forwarded record: %+v grpc=%+v", ok, ok.Flow.GRPC)
	}
	if denied.Decision.Verdict != VerdictDropped || denied.Decision.DropReason != DropReasonPolicyDenied ||
		len(denied.Decision.DeniedBy) != 1 || denied.Decision.DeniedBy[0] != "default/echo-l7" ||
		denied.Flow.Observer != flow.SideServer || *denied.Flow.GRPC.Status != 7 || denied.Flow.GRPC.StatusSource != "trailers-only" {
		t.Errorf("denied record: %+v", denied)
	}
	if st := als.Stats(); st.Streams != 1 || st.Entries != 2 {
		t.Errorf("stats %+v", st)
	}
}
