package hubble

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// traceContext extracts the trace id of a W3C traceparent header
// (https://www.w3.org/TR/trace-context/#traceparent-header). Hubble's
// TraceParent message carries the trace id only, so span id and flags are
// validated but not exported. An invalid header yields nil, as in Hubble.
func traceContext(traceparent string) *flowpb.TraceContext {
	id, ok := traceID(traceparent)
	if !ok {
		return nil
	}
	return &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: id}}
}

// traceID validates "version-traceid-parentid-flags" like the OpenTelemetry
// propagator that Hubble uses: lower-case hex, version ff forbidden, version
// 00 with exactly four fields, all-zero trace or parent id invalid.
func traceID(h string) (string, bool) {
	h = strings.TrimSpace(h)
	// Future versions may append fields after the flags.
	if len(h) < 55 || (len(h) > 55 && h[55] != '-') {
		return "", false
	}
	version, trace, parent, flags := h[0:2], h[3:35], h[36:52], h[53:55]
	if h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return "", false
	}
	if !lowerHex(version) || version == "ff" || (version == "00" && len(h) != 55) {
		return "", false
	}
	if !lowerHex(trace) || !lowerHex(parent) || !lowerHex(flags) || allZero(trace) || allZero(parent) {
		return "", false
	}
	return trace, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool { return strings.Trim(s, "0") == "" }
