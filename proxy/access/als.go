package access

import (
	"errors"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"

	"github.com/sextant/sextant/flow"
)

// ALS receives Envoy's access logs (envoy.service.accesslog.v3, the
// bootstrap's sextant-als cluster) and turns each HTTP entry into a
// record.
type ALS struct {
	alsv3.UnimplementedAccessLogServiceServer
	sink Sink
	// PoliciesFor names the L7 policies on a server address, for the
	// denied_by of a request Envoy's RBAC refused without a policy match
	// (the default deny). Nil: none known.
	PoliciesFor                  func(netip.AddrPort) []string
	streams, entries, tcpEntries atomic.Uint64
}

// ALSStats count what the receiver saw.
type ALSStats struct {
	Streams, Entries, TCPEntries uint64
}

// Stats are the receiver's counters.
func (a *ALS) Stats() ALSStats {
	return ALSStats{Streams: a.streams.Load(), Entries: a.entries.Load(), TCPEntries: a.tcpEntries.Load()}
}

// NewALS makes a receiver sending records to sink.
func NewALS(sink Sink) *ALS { return &ALS{sink: sink} }

// Register puts the service on g (a server on the ALS unix socket).
func (a *ALS) Register(g *grpc.Server) { alsv3.RegisterAccessLogServiceServer(g, a) }

// StreamAccessLogs reads one Envoy's stream until it ends.
func (a *ALS) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	a.streams.Add(1)
	var node string
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if id := msg.GetIdentifier(); id != nil {
			node = id.GetNode().GetId() // sent on a stream's first message only
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			a.entries.Add(1)
			a.sink(a.record(node, e))
		}
		a.tcpEntries.Add(uint64(len(msg.GetTcpLogs().GetLogEntry())))
	}
}

// rbacDenied is Envoy's response_code_details of an RBAC denial; the
// bracket names the policy that matched ("none" for a default deny).
var rbacDenied = regexp.MustCompile(`^rbac_access_denied_matched_policy\[(.*)\]$`)

func (a *ALS) record(node string, e *alsdata.HTTPAccessLogEntry) Record {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	f := flow.Flow{
		Node:          node,
		Method:        req.GetRequestMethod().String(),
		Scheme:        req.GetScheme(),
		Authority:     req.GetAuthority(),
		Path:          req.GetPath(),
		Status:        resp.GetResponseCode().GetValue(),
		RequestBytes:  req.GetRequestBodyBytes(),
		ResponseBytes: resp.GetResponseBodyBytes(),
		Source:        addrPort(c.GetDownstreamRemoteAddress()),
		Destination:   addrPort(c.GetDownstreamLocalAddress()),
		Observer:      flow.SideClient,
	}
	if strings.HasPrefix(c.GetUpstreamCluster(), "inbound:") {
		f.Observer = flow.SideServer
	}
	if t := c.GetStartTime(); t != nil {
		f.Time = t.AsTime()
	}
	if d := c.GetTimeToLastDownstreamTxByte(); d != nil {
		f.Latency = d.AsDuration()
	}
	if d := c.GetTimeToFirstDownstreamTxByte(); d != nil {
		f.TTFB = d.AsDuration()
	}
	switch e.GetProtocolVersion() {
	case alsdata.HTTPAccessLogEntry_HTTP2:
		f.Protocol = "HTTP/2"
	case alsdata.HTTPAccessLogEntry_HTTP11:
		f.Protocol = "HTTP/1.1"
	case alsdata.HTTPAccessLogEntry_HTTP10:
		f.Protocol = "HTTP/1.0"
	case alsdata.HTTPAccessLogEntry_HTTP3:
		f.Protocol = "HTTP/3"
	}
	if f.Status == 0 {
		f.Unknown = append(f.Unknown, "status")
	}
	if ct := req.GetRequestHeaders()["content-type"]; strings.HasPrefix(ct, "application/grpc") {
		svc, method, _ := strings.Cut(strings.TrimPrefix(f.Path, "/"), "/")
		f.GRPC = &flow.GRPC{Service: svc, Method: method}
		st, src := resp.GetResponseTrailers()["grpc-status"], "trailers"
		if st == "" {
			st, src = resp.GetResponseHeaders()["grpc-status"], "trailers-only"
		}
		if n, err := strconv.ParseUint(st, 10, 32); err == nil {
			code := uint32(n)
			f.GRPC.Status, f.GRPC.StatusSource = &code, src
			f.GRPC.Message = resp.GetResponseTrailers()["grpc-message"]
		}
	}
	if ct := req.GetRequestHeaders()["content-type"]; ct != "" {
		f.RequestHeaders = append(f.RequestHeaders, flow.Header{Name: "content-type", Value: ct})
	}
	d := Decision{Source: "envoy", Verdict: VerdictForwarded}
	if m := rbacDenied.FindStringSubmatch(resp.GetResponseCodeDetails()); m != nil || c.GetResponseFlags().GetUnauthorizedDetails() != nil {
		d.Verdict, d.DropReason = VerdictDropped, DropReasonPolicyDenied
		if m != nil && m[1] != "none" && m[1] != "" {
			d.DeniedBy = []string{m[1]}
		} else if a.PoliciesFor != nil {
			d.DeniedBy = a.PoliciesFor(f.Destination)
		}
	}
	return Record{Flow: f, Decision: d}
}

func addrPort(a *corev3.Address) netip.AddrPort {
	sa := a.GetSocketAddress()
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, uint16(sa.GetPortValue()))
}
