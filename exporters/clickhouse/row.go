package clickhouse

import (
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/sextant/sextant/flow"
)

// Batch is a unit of insertion: ID and each row's index make every row's
// identity, so a batch written twice can be recognised.
type Batch struct {
	ID   uint64 `json:"id"`
	Rows []Row  `json:"-"`
	// Attempted: an insert of this batch failed after it may have reached
	// the server; the next Insert checks what is already there.
	Attempted bool `json:"attempted,omitempty"`
}

// Row is one flows table row, in store-independent form.
type Row struct {
	Time                 time.Time  `json:"time"`
	Node                 string     `json:"node,omitempty"`
	Service              string     `json:"service,omitempty"`
	Observer             string     `json:"observer"`
	Protocol             string     `json:"protocol,omitempty"`
	Method               string     `json:"method,omitempty"`
	Scheme               string     `json:"scheme,omitempty"`
	Authority            string     `json:"authority,omitempty"`
	Path                 string     `json:"path,omitempty"`
	Route                string     `json:"route,omitempty"`
	Status               uint16     `json:"status,omitempty"`
	GRPCService          string     `json:"grpc_service,omitempty"`
	GRPCMethod           string     `json:"grpc_method,omitempty"`
	GRPCStatus           *uint32    `json:"grpc_status,omitempty"`
	GRPCMessage          string     `json:"grpc_message,omitempty"`
	LatencyNs            uint64     `json:"latency_ns"`
	TTFBNs               uint64     `json:"ttfb_ns,omitempty"`
	RequestBytes         uint64     `json:"request_bytes"`
	ResponseBytes        uint64     `json:"response_bytes"`
	SourceAddress        netip.Addr `json:"source_address"`
	SourcePort           uint16     `json:"source_port"`
	DestinationAddress   netip.Addr `json:"destination_address"`
	DestinationPort      uint16     `json:"destination_port"`
	Outcome              string     `json:"outcome"`
	ProcessPID           uint32     `json:"process_pid,omitempty"`
	ProcessComm          string     `json:"process_comm,omitempty"`
	ProcessExe           string     `json:"process_exe,omitempty"`
	ContainerID          string     `json:"container_id,omitempty"`
	Cgroup               string     `json:"cgroup,omitempty"`
	TraceID              string     `json:"trace_id,omitempty"`
	Headers              Headers    `json:"headers,omitempty"`
	ResponseHeaders      Headers    `json:"response_headers,omitempty"`
	Unknown              []string   `json:"unknown,omitempty"`
	ConnID               uint64     `json:"conn_id,omitempty"`
	StreamID             uint32     `json:"stream_id,omitempty"`
	ResetCode            uint32     `json:"reset_code,omitempty"`
	GRPCRequestMessages  uint32     `json:"grpc_request_messages,omitempty"`
	GRPCResponseMessages uint32     `json:"grpc_response_messages,omitempty"`
	Policy               PolicyRow  `json:"policy,omitempty"`
}

// PolicyRow is the policy columns of a row (schema v3): empty for an
// exchange no policy decided.
type PolicyRow struct {
	Kind                string   `json:"kind,omitempty"` // "" exchange, "policy-verdict"
	Verdict             string   `json:"verdict,omitempty"`
	DropReason          string   `json:"drop_reason,omitempty"`
	MatchType           uint8    `json:"match_type,omitempty"`
	Direction           string   `json:"direction,omitempty"`
	IPProtocol          uint8    `json:"ip_protocol,omitempty"`
	SourceIdentity      uint32   `json:"source_identity,omitempty"`
	DestinationIdentity uint32   `json:"destination_identity,omitempty"`
	SourceEndpoint      string   `json:"source_endpoint,omitempty"`
	DestinationEndpoint string   `json:"destination_endpoint,omitempty"`
	SourceLabels        []string `json:"source_labels,omitempty"`
	DestinationLabels   []string `json:"destination_labels,omitempty"`
	IngressAllowedBy    []string `json:"ingress_allowed_by,omitempty"`
	IngressDeniedBy     []string `json:"ingress_denied_by,omitempty"`
	EgressAllowedBy     []string `json:"egress_allowed_by,omitempty"`
	EgressDeniedBy      []string `json:"egress_denied_by,omitempty"`
	Revision            uint64   `json:"revision,omitempty"`
	Hook                string   `json:"hook,omitempty"`
	Decisions           uint32   `json:"decisions,omitempty"`
}

func policyRowOf(f *flow.Flow) PolicyRow {
	var r PolicyRow
	if f.Kind != flow.KindExchange {
		r.Kind = f.Kind.String()
	}
	p := f.Policy
	if p == nil {
		return r
	}
	r.Verdict, r.DropReason, r.MatchType = p.Verdict.String(), p.DropReason.String(), p.MatchType
	r.Direction, r.IPProtocol, r.Revision, r.Hook = p.Direction.String(), p.Proto, p.Revision, p.Hook
	r.SourceIdentity, r.DestinationIdentity = p.Source.Identity, p.Destination.Identity
	r.SourceEndpoint, r.DestinationEndpoint = endpointName(p.Source), endpointName(p.Destination)
	r.SourceLabels, r.DestinationLabels = p.Source.Labels, p.Destination.Labels
	r.IngressAllowedBy, r.IngressDeniedBy = refNames(p.IngressAllowedBy), refNames(p.IngressDeniedBy)
	r.EgressAllowedBy, r.EgressDeniedBy = refNames(p.EgressAllowedBy), refNames(p.EgressDeniedBy)
	if f.Decided() {
		r.Decisions = max(p.Count, 1)
	}
	return r
}

// endpointName is namespace/name of a local endpoint, "" for a peer.
func endpointName(e flow.PolicyEndpoint) string {
	switch {
	case e.Name == "":
		return ""
	case e.Namespace == "":
		return e.Name
	}
	return e.Namespace + "/" + e.Name
}

// refNames are the policies as kind/namespace/name.
func refNames(refs []flow.PolicyRef) []string {
	if len(refs) == 0 {
		return nil
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.String()
	}
	return out
}

// Headers are header fields with lower-case, unique names, sorted by name;
// repeated fields are joined with ", " as HTTP allows. Names and Values are
// parallel.
type Headers struct {
	Names  []string `json:"n,omitempty"`
	Values []string `json:"v,omitempty"`
}

func (h Headers) isEmpty() bool { return len(h.Names) == 0 }

// Map returns the headers as a map (for Map columns).
func (h Headers) Map() map[string]string {
	m := make(map[string]string, len(h.Names))
	for i, n := range h.Names {
		m[n] = h.Values[i]
	}
	return m
}

func headersOf(hs []flow.Header) Headers {
	if len(hs) == 0 {
		return Headers{}
	}
	out := Headers{Names: make([]string, 0, len(hs)), Values: make([]string, 0, len(hs))}
	for _, h := range hs {
		name := strings.ToLower(h.Name)
		if strings.HasPrefix(name, ":") {
			continue // pseudo-headers have their own columns
		}
		out.Names = append(out.Names, name)
		out.Values = append(out.Values, h.Value)
	}
	sort.Stable(byName(out))
	// Join repeated names in place.
	w := 0
	for r := 0; r < len(out.Names); r++ {
		if w > 0 && out.Names[w-1] == out.Names[r] {
			out.Values[w-1] += ", " + out.Values[r]
			continue
		}
		out.Names[w], out.Values[w] = out.Names[r], out.Values[r]
		w++
	}
	out.Names, out.Values = out.Names[:w], out.Values[:w]
	return out
}

type byName Headers

func (h byName) Len() int           { return len(h.Names) }
func (h byName) Less(i, j int) bool { return h.Names[i] < h.Names[j] }
func (h byName) Swap(i, j int) {
	h.Names[i], h.Names[j] = h.Names[j], h.Names[i]
	h.Values[i], h.Values[j] = h.Values[j], h.Values[i]
}

// rowOf turns a flow into a row.
func rowOf(f *flow.Flow) Row {
	r := Row{
		Time:               f.Time.UTC(),
		Node:               f.Node,
		Observer:           f.Observer.String(),
		Protocol:           f.Protocol,
		Method:             f.Method,
		Scheme:             f.Scheme,
		Authority:          f.Authority,
		Path:               f.Path,
		Route:              f.Route,
		Status:             uint16(min(f.Status, 0xffff)),
		LatencyNs:          uint64(max(f.Latency, 0)),
		TTFBNs:             uint64(max(f.TTFB, 0)),
		RequestBytes:       f.RequestBytes,
		ResponseBytes:      f.ResponseBytes,
		SourceAddress:      f.Source.Addr(),
		SourcePort:         f.Source.Port(),
		DestinationAddress: f.Destination.Addr(),
		DestinationPort:    f.Destination.Port(),
		Outcome:            f.Outcome.String(),
		ProcessPID:         f.Process.PID,
		ProcessComm:        f.Process.Comm,
		ProcessExe:         f.Process.Exe,
		ContainerID:        f.Process.ContainerID,
		Cgroup:             f.Process.Cgroup,
		TraceID:            traceID(f.TraceParent),
		Headers:            headersOf(f.RequestHeaders),
		ResponseHeaders:    headersOf(f.ResponseHeaders),
		Unknown:            f.Unknown,
		ConnID:             f.ConnID,
		StreamID:           f.StreamID,
		ResetCode:          f.ResetCode,
		Policy:             policyRowOf(f),
	}
	if g := f.GRPC; g != nil {
		r.GRPCService, r.GRPCMethod, r.GRPCMessage = g.Service, g.Method, g.Message
		r.GRPCRequestMessages, r.GRPCResponseMessages = g.RequestMessages, g.ResponseMessages
		if g.Status != nil {
			s := *g.Status
			r.GRPCStatus = &s
		}
	}
	r.Service = serviceOf(&r)
	return r
}

// serviceOf names what was called, the same from the client's and the
// server's side of an exchange: the gRPC service, else the authority
// (Host), else the destination address and port.
func serviceOf(r *Row) string {
	switch {
	case r.GRPCService != "":
		return r.GRPCService
	case r.Authority != "":
		return r.Authority
	case r.DestinationAddress.IsValid():
		return netip.AddrPortFrom(r.DestinationAddress, r.DestinationPort).String()
	}
	return ""
}

// traceID returns the trace id of a W3C traceparent
// (version-traceid-parentid-flags), or "" when it is not valid.
func traceID(tp string) string {
	tp = strings.TrimSpace(tp)
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || (len(tp) > 55 && tp[55] != '-') {
		return ""
	}
	version, id := tp[0:2], tp[3:35]
	if !lowerHex(version) || version == "ff" || !lowerHex(id) || strings.Trim(id, "0") == "" {
		return ""
	}
	return id
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ipv6 returns a as a 16-byte address (IPv4 mapped), the unspecified
// address when unknown.
func ipv6(a netip.Addr) netip.Addr {
	if !a.IsValid() {
		return netip.IPv6Unspecified()
	}
	return netip.AddrFrom16(a.As16())
}

// addrString is the legacy (String column) form: "" when unknown.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

// day is the partition (UTC date) of a row.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// splitByDay groups row indexes by partition, in first-seen order: one
// insert per partition is one part, written atomically.
func splitByDay(rows []Row) (days []string, groups map[string][]int) {
	groups = make(map[string][]int, 1)
	for i := range rows {
		d := day(rows[i].Time)
		if _, ok := groups[d]; !ok {
			days = append(days, d)
		}
		groups[d] = append(groups[d], i)
	}
	return days, groups
}
