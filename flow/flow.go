// Package flow defines the request/response record that the collector
// produces and every later stage (ring, API, relay, exporters) consumes.
//
// A Flow only carries what was observed exactly. Fields that could not be
// decoded (for example a path that referenced HPACK state from before the
// agent started) are left empty and named in Unknown: never guessed.
package flow

import (
	"net/netip"
	"path"
	"time"
)

// Side says which end of the exchange the observed process was.
type Side uint8

const (
	SideUnknown Side = iota
	SideClient       // the observed process sent the request
	SideServer       // the observed process received the request
)

func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideServer:
		return "server"
	}
	return "unknown"
}

// Direction says which way bytes moved, seen from the observed process
// (the kernel's numbering: 0 written by it, 1 read by it).
type Direction uint8

const (
	Egress  Direction = 0 // the process wrote the bytes
	Ingress Direction = 1 // the process read the bytes
)

// Other is the opposite direction.
func (d Direction) Other() Direction { return d ^ 1 }

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// Outcome says how the exchange ended.
type Outcome uint8

const (
	OutcomeComplete Outcome = iota // both sides ended their half of the stream
	OutcomeReset                   // RST_STREAM (ResetCode, ResetBy say which and who)
	OutcomeRefused                 // GOAWAY: the stream was above the peer's last stream id
	OutcomeClosed                  // the connection closed before the exchange finished
	OutcomeEvicted                 // state evicted (limits) before the exchange finished
)

func (o Outcome) String() string {
	return [...]string{"complete", "reset", "refused", "closed", "evicted"}[o]
}

// Header is one non-secret header field as seen on the wire.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Truncated: Value is the first bytes of a longer value (flows keep
	// at most 1 KiB of one header value).
	Truncated bool `json:"truncated,omitempty"`
}

// Process identifies the observed process.
type Process struct {
	PID         uint32 `json:"pid"`
	Comm        string `json:"comm,omitempty"`
	Exe         string `json:"exe,omitempty"`
	CgroupID    uint64 `json:"cgroup_id,omitempty"`
	Cgroup      string `json:"cgroup,omitempty"`       // cgroup v2 path
	ContainerID string `json:"container_id,omitempty"` // from the cgroup path, when it names one
}

// GRPC holds the gRPC view of an HTTP/2 exchange (content-type application/grpc*).
type GRPC struct {
	Service string `json:"service,omitempty"`
	Method  string `json:"method,omitempty"`
	// Status is the grpc-status code; nil when none was seen (and not inferable exactly).
	Status *uint32 `json:"status,omitempty"`
	// StatusSource: "trailers", "trailers-only", or "deadline" (the client reset
	// the stream after the grpc-timeout it sent had elapsed).
	StatusSource     string `json:"status_source,omitempty"`
	Message          string `json:"message,omitempty"`
	RequestMessages  uint32 `json:"request_messages"`
	ResponseMessages uint32 `json:"response_messages"`
}

// Flow is one observed request/response exchange or, with Kind
// KindPolicyVerdict, one policy decision.
type Flow struct {
	Kind     Kind          `json:"kind,omitempty"`
	Time     time.Time     `json:"time"`              // request start (first request header frame / bytes)
	Latency  time.Duration `json:"latency_ns"`        // request start → end of response
	TTFB     time.Duration `json:"ttfb_ns,omitempty"` // request start → response headers
	Node     string        `json:"node,omitempty"`
	Observer Side          `json:"observer"`
	Protocol string        `json:"protocol"` // "HTTP/2", "HTTP/1.1", "HTTP/1.0"

	Method    string `json:"method,omitempty"`
	Scheme    string `json:"scheme,omitempty"`
	Authority string `json:"authority,omitempty"`
	Path      string `json:"path,omitempty"`
	Status    uint32 `json:"status,omitempty"` // HTTP status; 0 when unknown or absent
	// Route is the path's template (/api/users/{id}), set once by the
	// agent's route stage; "" when the path is unknown.
	Route string `json:"route,omitempty"`

	GRPC *GRPC `json:"grpc,omitempty"`

	RequestBytes  uint64 `json:"request_bytes"`  // body bytes (DATA payload without padding)
	ResponseBytes uint64 `json:"response_bytes"` // body bytes

	RequestHeaders  []Header `json:"request_headers,omitempty"`
	ResponseHeaders []Header `json:"response_headers,omitempty"`
	TraceParent     string   `json:"traceparent,omitempty"`

	Source      netip.AddrPort `json:"source"`      // the client
	Destination netip.AddrPort `json:"destination"` // the server
	Process     Process        `json:"process"`

	ConnID   uint64 `json:"conn_id"`
	StreamID uint32 `json:"stream_id,omitempty"`

	Outcome   Outcome `json:"outcome"`
	ResetCode uint32  `json:"reset_code,omitempty"` // RST_STREAM / GOAWAY error code
	ResetBy   Side    `json:"reset_by,omitempty"`

	// Unknown names fields that were present but could not be decoded exactly
	// (e.g. "path", "status", "authority").
	Unknown []string `json:"unknown,omitempty"`

	// Policy is what policy decided (policy.go); nil where no policy
	// decided anything.
	Policy *Policy `json:"policy,omitempty"`
}

func (s Side) MarshalText() ([]byte, error)    { return []byte(s.String()), nil }
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

func (s *Side) UnmarshalText(b []byte) error {
	switch string(b) {
	case "client":
		*s = SideClient
	case "server":
		*s = SideServer
	default:
		*s = SideUnknown
	}
	return nil
}

func (o *Outcome) UnmarshalText(b []byte) error {
	for i, name := range [...]string{"complete", "reset", "refused", "closed", "evicted"} {
		if string(b) == name {
			*o = Outcome(i)
			return nil
		}
	}
	*o = OutcomeComplete
	return nil
}

// shortContainerID is how many hex digits of a container id name a
// service: the length docker ps and crictl ps show.
const shortContainerID = 12

// Service names the observed workload by the most stable identity the flow
// has: its container (replicas share an image, not a pid), else its
// executable's base name, else the kernel's comm. Every exporter names
// services this way, so metrics, spans and dashboards agree.
func (p Process) Service() string {
	switch {
	case p.ContainerID != "":
		return p.ContainerID[:min(len(p.ContainerID), shortContainerID)]
	case p.Exe != "":
		return path.Base(p.Exe)
	}
	return p.Comm
}

// ProtocolVersion is the semconv network.protocol.version of Protocol
// ("2", "1.1", "1.0"; "" when unknown).
func (f *Flow) ProtocolVersion() string {
	switch f.Protocol {
	case "HTTP/2":
		return "2"
	case "HTTP/1.1":
		return "1.1"
	case "HTTP/1.0":
		return "1.0"
	}
	return ""
}
