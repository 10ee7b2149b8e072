package http2

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/flow"
)

// stream is one exchange in flight.
type stream struct {
	id                  uint32
	start, respTime     time.Time
	end                 time.Time
	req, resp           *headerSet
	trailers            *headerSet
	reqEnded            bool
	respEnded           bool
	reqBytes, respBytes uint64
	reqMsgs, respMsgs   uint32
	reset               bool // RST_STREAM or GOAWAY ended it
	outcome             flow.Outcome
	resetCode           uint32
	resetBy             flow.Side
}

const grpcDeadlineExceeded = 4

func (s *stream) flow(end time.Time, o flow.Outcome) *flow.Flow {
	f := &flow.Flow{
		Time:          s.start,
		Latency:       end.Sub(s.start),
		Protocol:      "HTTP/2",
		StreamID:      s.id,
		RequestBytes:  s.reqBytes,
		ResponseBytes: s.respBytes,
		Outcome:       o,
	}
	if o != flow.OutcomeComplete {
		f.ResetCode, f.ResetBy = s.resetCode, s.resetBy
	}
	req := s.req
	f.Method, f.Scheme, f.Authority, f.Path = req.method, req.scheme, req.authority, req.path
	f.RequestHeaders, f.TraceParent = req.headers, req.traceParent
	if req.incomplete() {
		// A required pseudo-header we did not see was among the unknown fields.
		for name, v := range map[string]string{"method": f.Method, "scheme": f.Scheme, "path": f.Path, "authority": f.Authority} {
			if v == "" {
				f.Unknown = append(f.Unknown, name)
			}
		}
		f.Unknown = append(f.Unknown, "request_headers")
	}
	if r := s.resp; r != nil {
		f.TTFB = s.respTime.Sub(s.start)
		f.ResponseHeaders = r.headers
		if st, err := strconv.ParseUint(r.status, 10, 16); err == nil {
			f.Status = uint32(st)
		} else if r.incomplete() || r.status != "" {
			f.Unknown = append(f.Unknown, "status")
		}
		if r.incomplete() {
			f.Unknown = append(f.Unknown, "response_headers")
		}
	}
	if t := s.trailers; t != nil {
		f.ResponseHeaders = append(f.ResponseHeaders, t.headers...)
		if t.incomplete() {
			f.Unknown = append(f.Unknown, "response_trailers")
		}
	}
	s.grpc(f)
	slices.Sort(f.Unknown)
	return f
}

// grpc fills the gRPC view when the exchange is gRPC: content-type
// application/grpc*, or a grpc-status on the wire.
func (s *stream) grpc(f *flow.Flow) {
	var status *headerSet // where grpc-status came from
	source := ""
	switch {
	case s.trailers != nil && s.trailers.hasGRPCStatus:
		status, source = s.trailers, "trailers"
	case s.resp != nil && s.resp.hasGRPCStatus:
		status, source = s.resp, "trailers-only"
	}
	isGRPC := s.req.isGRPC() || (s.resp != nil && s.resp.isGRPC()) || status != nil
	if !isGRPC {
		return
	}
	g := &flow.GRPC{RequestMessages: s.reqMsgs, ResponseMessages: s.respMsgs}
	if svc, m, ok := splitGRPCPath(s.req.path); ok {
		g.Service, g.Method = svc, m
	}
	if status != nil {
		if v, err := strconv.ParseUint(status.grpcStatus, 10, 32); err == nil {
			code := uint32(v)
			g.Status, g.StatusSource = &code, source
		} else {
			f.Unknown = append(f.Unknown, "grpc_status")
		}
		g.Message = status.grpcMessage
		if m, err := url.PathUnescape(g.Message); err == nil { // grpc-message is percent-encoded
			g.Message = m
		}
	} else if s.deadlineExceeded(f) {
		// The stream was cancelled no earlier than the grpc-timeout the
		// client announced: gRPC reports that to the caller as
		// DEADLINE_EXCEEDED, though no status crosses the wire.
		code := uint32(grpcDeadlineExceeded)
		g.Status, g.StatusSource = &code, "deadline"
	}
	f.GRPC = g
}

func (s *stream) deadlineExceeded(f *flow.Flow) bool {
	// Either side may fire first: the client cancels at its deadline, and a
	// gRPC server enforces the same grpc-timeout by cancelling the stream.
	if f.Outcome != flow.OutcomeReset || s.resetCode != uint32(http2.ErrCodeCancel) {
		return false
	}
	timeout, ok := parseGRPCTimeout(s.req.grpcTimeout)
	// The client computes grpc-timeout before its headers reach the socket
	// and cancels after its timer fires, both with scheduling delay, and a
	// server reads the headers when it gets to them, so that its latency
	// is short by its own delay: allow that, not more. A cancel for another
	// reason comes earlier. Under a loaded 2-core CI machine a gRPC C-core
	// server read the headers of a 300 ms call more than 3 ms late (1 % was not
	// enough); 5 % leaves room without taking a cancel at 90 % for one.
	return ok && f.Latency+deadlineSlack(timeout) >= time.Duration(timeout)
}

func deadlineSlack(timeout int64) time.Duration {
	return max(2*time.Millisecond, time.Duration(timeout)/20)
}

// splitGRPCPath splits "/package.Service/Method".
func splitGRPCPath(p string) (service, method string, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return "", "", false
	}
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || i == len(p)-1 {
		return "", "", false
	}
	return p[1:i], p[i+1:], true
}
