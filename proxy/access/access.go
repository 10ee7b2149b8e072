// Package access turns what the proxies report about each request into
// flows with an L7 verdict: Envoy's access logs (the ALS gRPC service,
// envoy.service.accesslog.v3) and grpc-go xDS servers' RBAC audit events
// (google.golang.org/grpc/authz/audit). The agent hands the records to
// the same pipeline as the flows its probes observe.
package access

import (
	"slices"
	"sync"

	"github.com/sextant/sextant/flow"
)

// Verdict is the proxy's decision on a request.
type Verdict uint8

const (
	VerdictUnknown   Verdict = iota
	VerdictForwarded         // allowed and sent on
	VerdictDropped           // refused by policy (PERMISSION_DENIED, 403)
)

func (v Verdict) String() string {
	return [...]string{"UNKNOWN", "FORWARDED", "DROPPED"}[v]
}

// DropReasonPolicyDenied is Hubble's drop_reason_desc for a request no
// rule allows (Cilium's default deny once L7 rules select a port).
const DropReasonPolicyDenied = "POLICY_DENIED"

// Decision is the L7 verdict of one request, in the terms of Hubble's
// Flow (verdict, drop_reason_desc, ingress_allowed_by/_denied_by).
type Decision struct {
	Verdict    Verdict  `json:"verdict"`
	DropReason string   `json:"drop_reason,omitempty"`
	AllowedBy  []string `json:"allowed_by,omitempty"` // policies ("namespace/name")
	DeniedBy   []string `json:"denied_by,omitempty"`
	// Source says who decided: "grpc-rbac" (an xDS server's audit
	// logger) or "envoy" (an access log entry).
	Source string `json:"source"`
}

// Record is one request a proxy reported.
type Record struct {
	Flow     flow.Flow `json:"flow"`
	Decision Decision  `json:"decision"`
}

// Sink receives records; it must not block for long (it runs on the
// request path of grpc-go servers).
type Sink func(Record)

// sinks routes audit events to their sink: grpc-go builds audit loggers
// from a process-wide registry, so the RBAC config names its sink by id
// (xds.Options.AuditSink) and the logger finds it here.
var sinks = struct {
	sync.RWMutex
	m map[string]Sink
}{m: map[string]Sink{}}

// RegisterSink makes s the sink named id until the returned func is
// called.
func RegisterSink(id string, s Sink) (unregister func()) {
	sinks.Lock()
	sinks.m[id] = s
	sinks.Unlock()
	return func() {
		sinks.Lock()
		delete(sinks.m, id)
		sinks.Unlock()
	}
}

func sinkFor(id string) Sink {
	sinks.RLock()
	defer sinks.RUnlock()
	return sinks.m[id]
}

func clone(s []string) []string { return slices.Clone(s) }
