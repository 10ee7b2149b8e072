// Package hubble converts sextant flows into Cilium Hubble flow events, so
// that the Hubble Observer API and the stock hubble CLI can serve them.
//
// The event shape follows Hubble's L7 parser (cilium pkg/hubble/parser/seven):
// one exchange becomes a REQUEST event at request start and, when a response
// was seen on the wire, a RESPONSE event at request start + latency with the
// source and destination swapped (the response travels server → client), as
// Cilium's Envoy access-log server does. Only what sextant observed exactly is
// filled in; everything else stays at its zero value.
package hubble

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

// MessageTypeAccessLog is Cilium's monitor message type for L7 (proxy access
// log) events (cilium pkg/monitor/api.MessageTypeAccessLog); Hubble clients
// and filters use it to recognise L7 flows.
const MessageTypeAccessLog = 129

// Label keys of the observed process, set on the endpoint that the observed
// process is (source for a client, destination for a server).
const (
	LabelPID       = "sextant.io/pid"
	LabelComm      = "sextant.io/comm"
	LabelExe       = "sextant.io/exe"
	LabelCgroup    = "sextant.io/cgroup"
	LabelContainer = "sextant.io/container"
)

// Events returns the Hubble events of one exchange, with fresh random
// UUIDs: a REQUEST, followed by a RESPONSE when a response was seen.
//
// An exchange that ended without any response on the wire (reset, refused,
// connection closed, evicted, or a gRPC deadline that cancelled the stream)
// yields the REQUEST alone. Hubble does the same: Envoy logs a response
// record only for a response the client received (for an upstream timeout
// that is Envoy's own 504), never a placeholder. A RESPONSE with code 0 would
// claim a response that did not happen. A response that was seen but whose
// status could not be decoded yields a RESPONSE with code 0 (unknown).
//
// The two events share sub-messages (endpoints, trace context): treat them
// as read-only, as the ring and the gRPC server do.
func Events(f *flow.Flow) []*flowpb.Flow {
	if f == nil {
		return nil
	}
	req := Request(f, uuid.NewString())
	if !ResponseSeen(f) {
		return []*flowpb.Flow{req}
	}
	return []*flowpb.Flow{req, Response(f, req, uuid.NewString())}
}

// ResponseSeen reports whether f has a RESPONSE event (see Events).
func ResponseSeen(f *flow.Flow) bool {
	if f.Kind != flow.KindExchange {
		return false // a policy verdict is one event
	}
	return f.Status != 0 || f.TTFB > 0 || len(f.ResponseHeaders) > 0 ||
		slices.Contains(f.Unknown, "status") || slices.Contains(f.Unknown, "response_headers")
}

// ResponseTime is the time of f's RESPONSE event: request start + latency
// (or + TTFB when the latency is unknown).
func ResponseTime(f *flow.Flow) time.Time {
	switch latency := responseLatency(f); {
	case latency > 0:
		return f.Time.Add(latency)
	case f.TTFB > 0:
		return f.Time.Add(f.TTFB) // the response began then; when it ended is unknown
	}
	return f.Time
}

func responseLatency(f *flow.Flow) time.Duration {
	if f.Latency > 0 && !slices.Contains(f.Unknown, "latency") {
		return f.Latency
	}
	return 0
}

// Request is the REQUEST event of f, with UUID id.
func Request(f *flow.Flow, id string) *flowpb.Flow {
	ev := request(f)
	ev.Uuid = id
	return ev
}

// Response is the RESPONSE event of f, with UUID id. req, when not nil,
// is f's REQUEST event: the response shares its sub-messages.
func Response(f *flow.Flow, req *flowpb.Flow, id string) *flowpb.Flow {
	if req == nil {
		req = request(f)
	}
	ev := response(f, req)
	ev.Uuid = id
	return ev
}

func request(f *flow.Flow) *flowpb.Flow {
	if f.Kind == flow.KindPolicyVerdict && f.Policy != nil {
		return policyVerdict(f)
	}
	url := URL(f)
	ev := &flowpb.Flow{
		Time:             timestamppb.New(f.Time),
		Verdict:          flowpb.Verdict_FORWARDED,
		Type:             flowpb.FlowType_L7,
		NodeName:         f.Node,
		EventType:        &flowpb.CiliumEventType{Type: MessageTypeAccessLog},
		IsReply:          wrapperspb.Bool(false),
		TrafficDirection: trafficDirection(f.Observer),
		CgroupId:         f.Process.CgroupID,
		TraceContext:     traceContext(f.TraceParent),
		L7: &flowpb.Layer7{
			Type: flowpb.L7FlowType_REQUEST,
			Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method:   f.Method,
				Url:      url,
				Protocol: f.Protocol,
				Headers:  headers(f.RequestHeaders),
			}},
		},
		Summary: joinNonEmpty(f.Protocol, f.Method, url),
	}
	src, dst := addr(f.Source), addr(f.Destination)
	if src.IsValid() && dst.IsValid() {
		ev.IP = &flowpb.IP{Source: src.Addr().String(), Destination: dst.Addr().String(), IpVersion: ipVersion(src.Addr())}
		// sextant sees stream sockets only: HTTP/1 and HTTP/2 over TCP.
		ev.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort:      uint32(src.Port()),
			DestinationPort: uint32(dst.Port()),
		}}}
	}
	switch f.Observer {
	case flow.SideClient:
		ev.Source = processEndpoint(f.Process)
	case flow.SideServer:
		ev.Destination = processEndpoint(f.Process)
	}
	if f.Policy != nil {
		withPolicy(ev, f)
	}
	return ev
}

// response derives the RESPONSE event from the REQUEST event: same exchange,
// same direction, endpoints swapped.
func response(f *flow.Flow, req *flowpb.Flow) *flowpb.Flow {
	latency := responseLatency(f)
	url := req.GetL7().GetHttp().GetUrl()
	ev := &flowpb.Flow{
		Time:             timestamppb.New(ResponseTime(f)),
		Verdict:          req.Verdict,
		DropReason:       req.DropReason,
		DropReasonDesc:   req.DropReasonDesc,
		IngressAllowedBy: req.IngressAllowedBy,
		IngressDeniedBy:  req.IngressDeniedBy,
		EgressAllowedBy:  req.EgressAllowedBy,
		EgressDeniedBy:   req.EgressDeniedBy,
		Type:             req.Type,
		NodeName:         req.NodeName,
		EventType:        &flowpb.CiliumEventType{Type: MessageTypeAccessLog},
		IsReply:          wrapperspb.Bool(true),
		Reply:            true,
		TrafficDirection: req.TrafficDirection,
		CgroupId:         req.CgroupId,
		TraceContext:     req.TraceContext, // shared: events are read-only once built
		Source:           req.Destination,
		Destination:      req.Source,
		L7: &flowpb.Layer7{
			Type:      flowpb.L7FlowType_RESPONSE,
			LatencyNs: uint64(latency),
			Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code:     f.Status,
				Method:   f.Method,
				Url:      url,
				Protocol: f.Protocol,
				Headers:  headers(f.ResponseHeaders),
			}},
		},
	}
	if ip := req.GetIP(); ip != nil {
		ev.IP = &flowpb.IP{Source: ip.Destination, Destination: ip.Source, IpVersion: ip.IpVersion}
	}
	if tcp := req.GetL4().GetTCP(); tcp != nil {
		ev.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort:      tcp.DestinationPort,
			DestinationPort: tcp.SourcePort,
		}}}
	}
	// Cilium's response summary: "HTTP/1.1 200 1ms (GET http://host/path)".
	var b strings.Builder
	b.WriteString(f.Protocol)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(uint64(f.Status), 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(int64(latency/time.Millisecond), 10))
	b.WriteString("ms (")
	b.WriteString(joinNonEmpty(f.Method, url))
	b.WriteByte(')')
	ev.Summary = b.String()
	return ev
}

// URL is the request URL as Hubble shows it: scheme://authority/path when
// all three are known, the path alone when scheme or authority is unknown,
// and empty when the path is unknown (a URL without its path would name a
// different resource).
//
// HTTP/1.x requests carry no scheme unless in absolute form; sextant read
// them as cleartext from the socket, which is what the "http" scheme means,
// so "http" is what was observed, not a guess.
func URL(f *flow.Flow) string {
	if f.Path == "" {
		return ""
	}
	scheme := f.Scheme
	if scheme == "" && strings.HasPrefix(f.Protocol, "HTTP/1.") {
		scheme = "http"
	}
	// Paths that are not origin-form ("*" for OPTIONS, authority-form for
	// CONNECT) do not combine with an authority into a URL.
	if scheme == "" || f.Authority == "" || !strings.HasPrefix(f.Path, "/") {
		return f.Path
	}
	return scheme + "://" + f.Authority + f.Path
}

func headers(hs []flow.Header) []*flowpb.HTTPHeader {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*flowpb.HTTPHeader, 0, len(hs))
	for _, h := range hs {
		// Decoders drop secrets already; checking again keeps a decoder
		// bug from ever exporting a credential.
		if flow.IsSecret(h.Name) {
			continue
		}
		out = append(out, &flowpb.HTTPHeader{Key: h.Name, Value: h.Value})
	}
	// Hubble lists headers sorted by name; the stable sort keeps the wire
	// order of repeated names.
	slices.SortStableFunc(out, func(a, b *flowpb.HTTPHeader) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func processEndpoint(p flow.Process) *flowpb.Endpoint {
	labels := processLabels(p)
	if len(labels) == 0 {
		return nil
	}
	return &flowpb.Endpoint{Labels: labels}
}

// processLabels are the observed process's labels, sorted.
func processLabels(p flow.Process) []string {
	labels := make([]string, 0, 5)
	add := func(key, value string) {
		if value != "" {
			labels = append(labels, key+"="+value)
		}
	}
	if p.PID != 0 {
		add(LabelPID, strconv.FormatUint(uint64(p.PID), 10))
	}
	add(LabelComm, p.Comm)
	add(LabelExe, p.Exe)
	add(LabelCgroup, p.Cgroup)
	add(LabelContainer, p.ContainerID)
	if len(labels) == 0 {
		return nil
	}
	slices.Sort(labels) // as Hubble does
	return labels
}

func trafficDirection(s flow.Side) flowpb.TrafficDirection {
	switch s {
	case flow.SideServer:
		return flowpb.TrafficDirection_INGRESS
	case flow.SideClient:
		return flowpb.TrafficDirection_EGRESS
	}
	return flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN
}

// addr unmaps IPv4-mapped IPv6 addresses of dual-stack sockets: the peer
// speaks IPv4, and Hubble IP filters compare the plain IPv4 form.
func addr(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func ipVersion(a netip.Addr) flowpb.IPVersion {
	if a.Is4() {
		return flowpb.IPVersion_IPv4
	}
	return flowpb.IPVersion_IPv6
}

func joinNonEmpty(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p)
	}
	return b.String()
}
