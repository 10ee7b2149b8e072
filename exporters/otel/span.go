package otel

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sextant/sextant/flow"
)

// Attributes of our own, for what the semantic conventions have no name for.
const (
	attrObserver       = attribute.Key("sextant.observer")        // "client" | "server"
	attrOutcome        = attribute.Key("sextant.outcome")         // flow.Outcome
	attrConnID         = attribute.Key("sextant.conn_id")         // per-agent connection id
	attrStreamID       = attribute.Key("sextant.http2.stream_id") // HTTP/2 stream
	attrResetCode      = attribute.Key("sextant.http2.reset_code")
	attrResetBy        = attribute.Key("sextant.http2.reset_by")
	attrUnknown        = attribute.Key("sextant.unknown") // fields present but not decodable
	attrGRPCReqMsgs    = attribute.Key("sextant.grpc.request_messages")
	attrGRPCRespMsgs   = attribute.Key("sextant.grpc.response_messages")
	attrGRPCStatusFrom = attribute.Key("sextant.grpc.status_source")

	// The policy view of an exchange (docs/otel.md): no semantic
	// convention covers network policy.
	attrPolicyVerdict    = attribute.Key("sextant.policy.verdict")     // FORWARDED | DROPPED | AUDIT
	attrPolicyDropReason = attribute.Key("sextant.policy.drop_reason") // POLICY_DENIED | POLICY_DENY
	attrPolicyAllowedBy  = attribute.Key("sextant.policy.allowed_by")  // kind/namespace/name, both directions
	attrPolicyDeniedBy   = attribute.Key("sextant.policy.denied_by")
	attrPolicyHook       = attribute.Key("sextant.policy.hook") // l7 (audit) | proxy
	attrSourceIdentity   = attribute.Key("sextant.source.identity")
	attrDestIdentity     = attribute.Key("sextant.destination.identity")
)

// responseHeadersEvent marks when the response headers arrived (flow.TTFB).
const responseHeadersEvent = "response headers"

// spanBuilder turns flows into finished spans. It keeps scratch state and a
// random source, so it belongs to one goroutine (the exporter's worker).
type spanBuilder struct {
	scope     scope
	resources *resourceCache
	capture   map[string]bool
	rng       *rand.ChaCha8
	attrs     []attribute.KeyValue // scratch, copied into each span
}

// scope is the instrumentation scope of every span and instrument.
type scope struct{ name, version string }

var sextantScope = scope{name: "github.com/sextant/sextant/exporters/otel"}

func newSpanBuilder(cfg Config, resources *resourceCache, seed [32]byte) *spanBuilder {
	b := &spanBuilder{
		scope:     sextantScope,
		resources: resources,
		rng:       rand.NewChaCha8(seed),
	}
	if len(cfg.CaptureHeaders) > 0 {
		b.capture = make(map[string]bool, len(cfg.CaptureHeaders))
		for _, h := range cfg.CaptureHeaders {
			b.capture[strings.ToLower(h)] = true
		}
	}
	return b
}

// parentOf returns the remote span context named by the flow's W3C
// traceparent (and tracestate, when that header was seen), or an invalid
// one. The propagator does the validation: version, lengths, all-zero ids.
func parentOf(f *flow.Flow) trace.SpanContext {
	if f.TraceParent == "" {
		return trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{"traceparent": f.TraceParent}
	for _, h := range f.RequestHeaders {
		if h.Name == "tracestate" && !h.Truncated {
			carrier["tracestate"] = h.Value
		}
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
}

// span builds the span of one flow. The span's own id is always new; its
// trace id and parent come from the traceparent when there is a valid one.
func (b *spanBuilder) span(f *flow.Flow, route string) sdktrace.ReadOnlySpan {
	parent := parentOf(f)
	var tid trace.TraceID
	if parent.IsValid() {
		tid = parent.TraceID()
	} else {
		parent = trace.SpanContext{}
		b.fill(tid[:])
	}
	var sid trace.SpanID
	b.fill(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     sid,
		TraceFlags: trace.FlagsSampled, // we export every flow: the span is recorded
		TraceState: parent.TraceState(),
	})

	stub := tracetest.SpanStub{
		Name:        spanName(f, route),
		SpanContext: sc,
		Parent:      parent,
		SpanKind:    spanKind(f.Observer),
		StartTime:   f.Time,
		EndTime:     f.Time.Add(f.Latency),
		Attributes:  b.attributes(f, route),
		Status:      spanStatus(f),
		Resource:    b.resources.get(serviceOf(f)),
	}
	stub.InstrumentationScope.Name = b.scope.name
	stub.InstrumentationScope.Version = b.scope.version
	stub.InstrumentationScope.SchemaURL = semconv.SchemaURL
	if f.TTFB > 0 && f.TTFB <= f.Latency {
		stub.Events = []sdktrace.Event{{Name: responseHeadersEvent, Time: f.Time.Add(f.TTFB)}}
	}
	return stub.Snapshot()
}

func (b *spanBuilder) fill(p []byte) {
	for len(p) >= 8 {
		v := b.rng.Uint64()
		for i := range 8 {
			p[i] = byte(v >> (8 * i))
		}
		p = p[8:]
	}
}

func spanKind(s flow.Side) trace.SpanKind {
	switch s {
	case flow.SideServer:
		return trace.SpanKindServer
	case flow.SideClient:
		return trace.SpanKindClient
	}
	return trace.SpanKindInternal
}

// spanName follows the semantic conventions: "{rpc.service}/{rpc.method}"
// for gRPC, "{method} {route}" for HTTP, "{method}" alone without a route,
// and "HTTP" when the method is unknown or not a standard one.
func spanName(f *flow.Flow, route string) string {
	if g := f.GRPC; g != nil && g.Service != "" && g.Method != "" {
		return g.Service + "/" + g.Method
	}
	m, known := httpMethod(f.Method)
	if !known {
		m = "HTTP"
	}
	if route != "" {
		return m + " " + route
	}
	return m
}

// httpMethod returns the semconv method: the known methods as they are,
// anything else "_OTHER".
func httpMethod(m string) (string, bool) {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY":
		return m, true
	}
	return "_OTHER", false
}

// serverAddr returns server.address and server.port: from :authority / Host
// as the conventions ask, the port from the socket when the authority has
// none (the observed connection's destination is the server's socket).
func serverAddr(f *flow.Flow) (string, int) {
	host, port := "", 0
	if f.Authority != "" {
		if h, p, err := net.SplitHostPort(f.Authority); err == nil {
			host = h
			if n, err := strconv.Atoi(p); err == nil {
				port = n
			}
		} else {
			host = strings.TrimSuffix(strings.TrimPrefix(f.Authority, "["), "]")
		}
	}
	if host == "" && f.Destination.IsValid() {
		host = f.Destination.Addr().Unmap().String()
	}
	if port == 0 && f.Destination.IsValid() {
		port = int(f.Destination.Port())
	}
	return host, port
}

func addrAttrs(attrs []attribute.KeyValue, ap netip.AddrPort, addr func(string) attribute.KeyValue, port func(int) attribute.KeyValue) []attribute.KeyValue {
	if !ap.IsValid() {
		return attrs
	}
	return append(attrs, addr(ap.Addr().Unmap().String()), port(int(ap.Port())))
}

func (b *spanBuilder) attributes(f *flow.Flow, route string) []attribute.KeyValue {
	a := b.attrs[:0]

	// HTTP
	if f.Method != "" {
		m, known := httpMethod(f.Method)
		a = append(a, semconv.HTTPRequestMethodKey.String(m))
		if !known {
			a = append(a, semconv.HTTPRequestMethodOriginal(f.Method))
		}
	}
	if f.Status != 0 {
		a = append(a, semconv.HTTPResponseStatusCodeKey.Int(int(f.Status)))
	}
	if f.Scheme != "" {
		a = append(a, semconv.URLScheme(f.Scheme))
	}
	if f.Path != "" {
		p, q, hasQuery := strings.Cut(f.Path, "?")
		a = append(a, semconv.URLPath(p))
		if hasQuery {
			a = append(a, semconv.URLQuery(redactQuery(q)))
		}
		if f.Observer == flow.SideClient && f.Scheme != "" && f.Authority != "" {
			u := f.Scheme + "://" + f.Authority + p
			if hasQuery {
				u += "?" + redactQuery(q)
			}
			a = append(a, semconv.URLFull(u))
		}
	}
	if route != "" {
		if f.Observer == flow.SideClient {
			a = append(a, semconv.URLTemplate(route))
		} else {
			a = append(a, semconv.HTTPRoute(route))
		}
	}
	if f.RequestBytes > 0 || f.Method != "" {
		a = append(a, semconv.HTTPRequestBodySize(int(f.RequestBytes)))
	}
	if f.Status != 0 {
		a = append(a, semconv.HTTPResponseBodySize(int(f.ResponseBytes)))
	}
	for _, h := range f.RequestHeaders {
		if h.Name == "user-agent" {
			a = append(a, semconv.UserAgentOriginal(h.Value))
		}
		if b.capture[h.Name] {
			a = append(a, semconv.HTTPRequestHeader(h.Name, h.Value))
		}
	}
	if b.capture != nil {
		for _, h := range f.ResponseHeaders {
			if b.capture[h.Name] {
				a = append(a, semconv.HTTPResponseHeader(h.Name, h.Value))
			}
		}
	}

	// Network
	if host, port := serverAddr(f); host != "" {
		a = append(a, semconv.ServerAddress(host))
		if port != 0 {
			a = append(a, semconv.ServerPort(port))
		}
	}
	a = addrAttrs(a, f.Source, semconv.ClientAddress, semconv.ClientPort)
	peer := f.Source
	if f.Observer == flow.SideClient {
		peer = f.Destination
	}
	a = addrAttrs(a, peer, semconv.NetworkPeerAddress, semconv.NetworkPeerPort)
	if v := f.ProtocolVersion(); v != "" {
		a = append(a, semconv.NetworkProtocolName("http"), semconv.NetworkProtocolVersion(v))
	}

	// gRPC
	if g := f.GRPC; g != nil {
		a = append(a, semconv.RPCSystemGRPC)
		if g.Service != "" {
			a = append(a, semconv.RPCService(g.Service))
		}
		if g.Method != "" {
			a = append(a, semconv.RPCMethod(g.Method))
		}
		if g.Status != nil {
			a = append(a, semconv.RPCGRPCStatusCodeKey.Int(int(*g.Status)))
		}
		if g.StatusSource != "" {
			a = append(a, attrGRPCStatusFrom.String(g.StatusSource))
		}
		a = append(a, attrGRPCReqMsgs.Int(int(g.RequestMessages)), attrGRPCRespMsgs.Int(int(g.ResponseMessages)))
	}

	if et := errorType(f); et != "" {
		a = append(a, semconv.ErrorTypeKey.String(et))
	}

	// Ours
	a = append(a, attrObserver.String(f.Observer.String()), attrOutcome.String(f.Outcome.String()), attrConnID.Int64(int64(f.ConnID)))
	if f.StreamID != 0 {
		a = append(a, attrStreamID.Int(int(f.StreamID)))
	}
	if f.Outcome == flow.OutcomeReset || f.Outcome == flow.OutcomeRefused {
		a = append(a, attrResetCode.Int(int(f.ResetCode)), attrResetBy.String(f.ResetBy.String()))
	}
	if p := f.Policy; p != nil {
		a = policyAttributes(a, p)
	}
	if len(f.Unknown) > 0 {
		a = append(a, attrUnknown.StringSlice(f.Unknown))
	}

	b.attrs = a
	return append([]attribute.KeyValue(nil), a...)
}

// redactQuery replaces the values of the query parameters the semantic
// conventions name as credentials (url.query: AWSAccessKeyId, Signature,
// sig, X-Goog-Signature) with REDACTED.
func redactQuery(q string) string {
	if !strings.Contains(q, "=") {
		return q
	}
	parts := strings.Split(q, "&")
	changed := false
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		switch k {
		case "AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature":
			parts[i] = k + "=REDACTED"
			changed = true
		}
	}
	if !changed {
		return q
	}
	return strings.Join(parts, "&")
}

// grpcServerErrors are the codes that mark a gRPC server span as failed; the
// others are the caller's problem (semantic conventions, gRPC).
var grpcServerErrors = map[uint32]bool{2: true, 4: true, 12: true, 13: true, 14: true, 15: true}

var grpcCodeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func grpcCodeName(c uint32) string {
	if int(c) < len(grpcCodeNames) {
		return grpcCodeNames[c]
	}
	return strconv.FormatUint(uint64(c), 10)
}

// failed reports whether the exchange failed from the observer's point of
// view, and why (the error.type value):
//   - gRPC with a status: non-OK for a client; for a server only the codes
//     that are the server's fault.
//   - HTTP status: 5xx for a server, >= 400 for a client.
//   - no status at all: the stream was reset or refused, or the connection
//     closed before the response ended. Evicted state is our limit, not the
//     exchange's failure: unknown, so not an error.
func errorType(f *flow.Flow) string {
	if g := f.GRPC; g != nil && g.Status != nil {
		c := *g.Status
		if c != 0 && (f.Observer != flow.SideServer || grpcServerErrors[c]) {
			return grpcCodeName(c)
		}
		return ""
	}
	if f.Status != 0 {
		if f.Status >= 500 || (f.Status >= 400 && f.Observer != flow.SideServer) {
			return strconv.Itoa(int(f.Status))
		}
		return ""
	}
	switch f.Outcome {
	case flow.OutcomeReset, flow.OutcomeRefused, flow.OutcomeClosed:
		return f.Outcome.String()
	}
	return ""
}

func spanStatus(f *flow.Flow) sdktrace.Status {
	if errorType(f) == "" {
		return sdktrace.Status{Code: codes.Unset}
	}
	s := sdktrace.Status{Code: codes.Error}
	// HTTP status errors carry no description (the code says it all); gRPC
	// ones carry grpc-message.
	if g := f.GRPC; g != nil && g.Status != nil {
		s.Description = g.Message
	}
	return s
}

func policyAttributes(a []attribute.KeyValue, p *flow.Policy) []attribute.KeyValue {
	a = append(a, attrPolicyVerdict.String(p.Verdict.String()))
	if p.DropReason != flow.NoDropReason {
		a = append(a, attrPolicyDropReason.String(p.DropReason.String()))
	}
	names := func(refs ...[]flow.PolicyRef) []string {
		var out []string
		for _, rs := range refs {
			for _, r := range rs {
				out = append(out, r.String())
			}
		}
		return out
	}
	if allowed := names(p.IngressAllowedBy, p.EgressAllowedBy); len(allowed) > 0 {
		a = append(a, attrPolicyAllowedBy.StringSlice(allowed))
	}
	if denied := names(p.IngressDeniedBy, p.EgressDeniedBy); len(denied) > 0 {
		a = append(a, attrPolicyDeniedBy.StringSlice(denied))
	}
	if p.Hook != "" {
		a = append(a, attrPolicyHook.String(p.Hook))
	}
	if p.Source.Identity != 0 {
		a = append(a, attrSourceIdentity.Int64(int64(p.Source.Identity)))
	}
	if p.Destination.Identity != 0 {
		a = append(a, attrDestIdentity.Int64(int64(p.Destination.Identity)))
	}
	return a
}
