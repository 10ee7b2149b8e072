package link

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

// The wire form is protobuf, written and read field by field with
// protowire (no intermediate messages: encoding a flow allocates nothing,
// decoding allocates the flow and the strings it keeps). In proto3 terms:
//
//	message FollowRequest {
//	  fixed64 instance = 1;      // cursor to resume at: the server's ring instance,
//	  uint64  position = 2;      //   the position of the next entry,
//	  uint64  weight = 3;        //   the events written before it
//	  int64   since_unix_nano = 4; // without a cursor of this ring: entries whose last event is at or after
//	}
//	message Batch {
//	  repeated Entry entries = 1;
//	  fixed64 instance = 2; uint64 position = 3; uint64 weight = 4; // cursor after the batch
//	}
//	message Entry {
//	  Flow    flow = 1;
//	  fixed64 boot = 2; uint64 seq = 3; // FlowID
//	  uint32  half = 4;                 // observer.Half
//	  Lost    lost = 5;
//	}
//	message Lost { int64 time_unix_nano = 1; string node = 2; int32 source = 3; uint64 count = 4; uint32 cpu_plus_one = 5; }
//	message Flow {
//	  int64 time_unix_nano = 1; int64 latency_ns = 2; int64 ttfb_ns = 3; string node = 4;
//	  uint32 observer = 5; string protocol = 6; string method = 7; string scheme = 8;
//	  string authority = 9; string path = 10; uint32 status = 11; string route = 12;
//	  GRPC grpc = 13; uint64 request_bytes = 14; uint64 response_bytes = 15;
//	  repeated Header request_headers = 16; repeated Header response_headers = 17;
//	  string traceparent = 18; bytes source = 19; bytes destination = 20; // netip.AddrPort binary
//	  Process process = 21; uint64 conn_id = 22; uint32 stream_id = 23; uint32 outcome = 24;
//	  uint32 reset_code = 25; uint32 reset_by = 26; repeated string unknown = 27;
//	  uint32 kind = 28; Policy policy = 29;
//	}
//	message Policy { uint32 verdict = 1; uint32 drop_reason = 2; uint32 match_type = 3; uint32 direction = 4;
//	  PolicyEndpoint source = 5; PolicyEndpoint destination = 6;
//	  repeated PolicyRef ingress_allowed_by = 7; repeated PolicyRef ingress_denied_by = 8;
//	  repeated PolicyRef egress_allowed_by = 9; repeated PolicyRef egress_denied_by = 10;
//	  uint32 proto = 11; uint32 count = 12; uint64 revision = 13; string hook = 14; }
//	message PolicyEndpoint { uint32 identity = 1; uint32 id = 2; string name = 3; string namespace = 4;
//	  repeated string labels = 5; }
//	message PolicyRef { string kind = 1; string name = 2; string namespace = 3; repeated string labels = 4;
//	  uint64 revision = 5; }
//	message GRPC { string service = 1; string method = 2; optional uint32 status = 3; string status_source = 4;
//	  string message = 5; uint32 request_messages = 6; uint32 response_messages = 7; }
//	message Header { string name = 1; string value = 2; bool truncated = 3; }
//	message Process { uint32 pid = 1; string comm = 2; string exe = 3; uint64 cgroup_id = 4;
//	  string cgroup = 5; string container_id = 6; }
//
// Unknown fields are skipped (a newer peer may add some); a known field of
// the wrong wire type, a value out of range or a truncated message is an
// error, never a panic.

// FollowRequest asks a server for its ring from a cursor (or a time).
type FollowRequest struct {
	Cursor ring.Cursor
	Since  time.Time // zero: from the oldest entry held
}

// AppendFollowRequest appends the encoding of r to b.
func AppendFollowRequest(b []byte, r FollowRequest) []byte {
	b = appendCursor(b, 1, r.Cursor)
	b = appendTime(b, 4, r.Since)
	return b
}

func appendCursor(b []byte, first protowire.Number, c ring.Cursor) []byte {
	if c.Instance == 0 {
		return b
	}
	b = protowire.AppendTag(b, first, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, c.Instance)
	b = appendUint(b, first+1, c.Position)
	return appendUint(b, first+2, c.Weight)
}

// DecodeFollowRequest decodes what AppendFollowRequest wrote.
func DecodeFollowRequest(b []byte) (FollowRequest, error) {
	var r FollowRequest
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.Fixed64Type, func() { r.Cursor.Instance = x })
		case 2:
			return want(typ, protowire.VarintType, func() { r.Cursor.Position = x })
		case 3:
			return want(typ, protowire.VarintType, func() { r.Cursor.Weight = x })
		case 4:
			return want(typ, protowire.VarintType, func() { r.Since = unixNano(x) })
		}
		return nil
	})
	return r, wrap("follow request", err)
}

// Encoder appends batches; its buffer is reused from batch to batch.
type Encoder struct{ buf []byte }

// Batch encodes entries and the cursor after them. The result is valid
// until the next call.
func (e *Encoder) Batch(entries []observer.Entry, next ring.Cursor) []byte {
	b := e.buf[:0]
	for i := range entries {
		var mark int
		b, mark = begin(b, 1)
		b = AppendEntry(b, &entries[i])
		b = end(b, mark)
	}
	b = appendCursor(b, 2, next)
	e.buf = b
	return b
}

// AppendEntry appends the encoding of an Entry message.
func AppendEntry(b []byte, e *observer.Entry) []byte {
	if e.Flow != nil {
		var mark int
		b, mark = begin(b, 1)
		b = AppendFlow(b, e.Flow)
		b = end(b, mark)
	}
	if e.ID.Boot != 0 {
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, e.ID.Boot)
	}
	b = appendUint(b, 3, e.ID.Seq)
	b = appendUint(b, 4, uint64(e.Half))
	if l := e.Lost; l != nil {
		var mark int
		b, mark = begin(b, 5)
		b = appendTime(b, 1, l.Time)
		b = appendString(b, 2, l.Node)
		b = appendInt(b, 3, int64(l.Source))
		b = appendUint(b, 4, l.Count)
		if l.CPU >= 0 {
			b = appendUint(b, 5, uint64(l.CPU)+1)
		}
		b = end(b, mark)
	}
	return b
}

// AppendFlow appends the encoding of a Flow message.
func AppendFlow(b []byte, f *flow.Flow) []byte {
	b = appendTime(b, 1, f.Time)
	b = appendInt(b, 2, int64(f.Latency))
	b = appendInt(b, 3, int64(f.TTFB))
	b = appendString(b, 4, f.Node)
	b = appendUint(b, 5, uint64(f.Observer))
	b = appendString(b, 6, f.Protocol)
	b = appendString(b, 7, f.Method)
	b = appendString(b, 8, f.Scheme)
	b = appendString(b, 9, f.Authority)
	b = appendString(b, 10, f.Path)
	b = appendUint(b, 11, uint64(f.Status))
	b = appendString(b, 12, f.Route)
	if g := f.GRPC; g != nil {
		var mark int
		b, mark = begin(b, 13)
		b = appendString(b, 1, g.Service)
		b = appendString(b, 2, g.Method)
		if g.Status != nil {
			b = protowire.AppendTag(b, 3, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(*g.Status))
		}
		b = appendString(b, 4, g.StatusSource)
		b = appendString(b, 5, g.Message)
		b = appendUint(b, 6, uint64(g.RequestMessages))
		b = appendUint(b, 7, uint64(g.ResponseMessages))
		b = end(b, mark)
	}
	b = appendUint(b, 14, f.RequestBytes)
	b = appendUint(b, 15, f.ResponseBytes)
	b = appendHeaders(b, 16, f.RequestHeaders)
	b = appendHeaders(b, 17, f.ResponseHeaders)
	b = appendString(b, 18, f.TraceParent)
	b = appendAddrPort(b, 19, f.Source)
	b = appendAddrPort(b, 20, f.Destination)
	if p := f.Process; p != (flow.Process{}) {
		var mark int
		b, mark = begin(b, 21)
		b = appendUint(b, 1, uint64(p.PID))
		b = appendString(b, 2, p.Comm)
		b = appendString(b, 3, p.Exe)
		b = appendUint(b, 4, p.CgroupID)
		b = appendString(b, 5, p.Cgroup)
		b = appendString(b, 6, p.ContainerID)
		b = end(b, mark)
	}
	b = appendUint(b, 22, f.ConnID)
	b = appendUint(b, 23, uint64(f.StreamID))
	b = appendUint(b, 24, uint64(f.Outcome))
	b = appendUint(b, 25, uint64(f.ResetCode))
	b = appendUint(b, 26, uint64(f.ResetBy))
	b = appendStrings(b, 27, f.Unknown)
	b = appendUint(b, 28, uint64(f.Kind))
	if p := f.Policy; p != nil {
		var mark int
		b, mark = begin(b, 29)
		b = appendPolicy(b, p)
		b = end(b, mark)
	}
	return b
}

func appendPolicy(b []byte, p *flow.Policy) []byte {
	b = appendUint(b, 1, uint64(p.Verdict))
	b = appendUint(b, 2, uint64(p.DropReason))
	b = appendUint(b, 3, uint64(p.MatchType))
	b = appendUint(b, 4, uint64(p.Direction))
	for i, e := range []*flow.PolicyEndpoint{&p.Source, &p.Destination} {
		var mark int
		b, mark = begin(b, protowire.Number(5+i))
		b = appendUint(b, 1, uint64(e.Identity))
		b = appendUint(b, 2, uint64(e.ID))
		b = appendString(b, 3, e.Name)
		b = appendString(b, 4, e.Namespace)
		b = appendStrings(b, 5, e.Labels)
		b = end(b, mark)
	}
	for i, refs := range [][]flow.PolicyRef{p.IngressAllowedBy, p.IngressDeniedBy, p.EgressAllowedBy, p.EgressDeniedBy} {
		for _, r := range refs {
			var mark int
			b, mark = begin(b, protowire.Number(7+i))
			b = appendString(b, 1, r.Kind)
			b = appendString(b, 2, r.Name)
			b = appendString(b, 3, r.Namespace)
			b = appendStrings(b, 4, r.Labels)
			b = appendUint(b, 5, r.Revision)
			b = end(b, mark)
		}
	}
	b = appendUint(b, 11, uint64(p.Proto))
	b = appendUint(b, 12, uint64(p.Count))
	b = appendUint(b, 13, p.Revision)
	return appendString(b, 14, p.Hook)
}

// appendStrings writes each string, empty ones too (a repeated field
// keeps its elements).
func appendStrings(b []byte, num protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

func appendHeaders(b []byte, num protowire.Number, hs []flow.Header) []byte {
	for _, h := range hs {
		var mark int
		b, mark = begin(b, num)
		b = appendString(b, 1, h.Name)
		b = appendString(b, 2, h.Value)
		if h.Truncated {
			b = appendUint(b, 3, 1)
		}
		b = end(b, mark)
	}
	return b
}

func appendAddrPort(b []byte, num protowire.Number, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	mark := len(b)
	b = append(b, 0) // a length of at most 16+2+zone bytes: one byte while the zone is short
	b, _ = ap.AppendBinary(b)
	return fixLength(b, mark)
}

// Zero values are left out, as proto3 does.
func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte { return appendUint(b, num, uint64(v)) }

// appendTime writes any time but the zero one (absent), the Unix epoch
// included.
func appendTime(b []byte, num protowire.Number, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(t.UnixNano()))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// begin starts a length-delimited field whose length is not known yet: one
// byte is reserved for it, and end widens it when the message is longer
// than 127 bytes (a move of the message, cheaper than sizing it first).
func begin(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return append(b, 0), len(b)
}

func end(b []byte, mark int) []byte { return fixLength(b, mark) }

// fixLength writes the length of b[mark+1:] into the byte reserved at
// b[mark], widening it as needed.
func fixLength(b []byte, mark int) []byte {
	n := len(b) - mark - 1
	size := protowire.SizeVarint(uint64(n))
	if size == 1 {
		b[mark] = byte(n)
		return b
	}
	for range size - 1 {
		b = append(b, 0)
	}
	copy(b[mark+size:], b[mark+1:mark+1+n])
	protowire.AppendVarint(b[:mark], uint64(n))
	return b
}

// Decoder decodes batches. It keeps the strings that repeat from flow to
// flow (node, protocol, method, authority, header names, process) so that
// a relay does not allocate them for every flow. Not safe for concurrent
// use.
type Decoder struct {
	strs map[string]string
}

// internMax bounds the kept strings: past it the table starts over, so a
// peer sending ever new values costs memory no longer than that.
const (
	internMax    = 4096
	internMaxLen = 128
)

func (d *Decoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > internMaxLen {
		return string(b)
	}
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if d.strs == nil || len(d.strs) >= internMax {
		d.strs = make(map[string]string, 256)
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed link message")

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

// Batch decodes a batch: its entries, appended to into, and the cursor
// after it.
func (d *Decoder) Batch(b []byte, into []observer.Entry) ([]observer.Entry, ring.Cursor, error) {
	var next ring.Cursor
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			e, err := d.Entry(v)
			if err != nil {
				return err
			}
			into = append(into, e)
		case 2:
			return want(typ, protowire.Fixed64Type, func() { next.Instance = x })
		case 3:
			return want(typ, protowire.VarintType, func() { next.Position = x })
		case 4:
			return want(typ, protowire.VarintType, func() { next.Weight = x })
		}
		return nil
	})
	return into, next, wrap("batch", err)
}

// Entry decodes an Entry message: a flow or a lost-event notice.
func (d *Decoder) Entry(b []byte) (observer.Entry, error) {
	var e observer.Entry
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			f, err := d.Flow(v)
			e.Flow = f
			return err
		case 2:
			return want(typ, protowire.Fixed64Type, func() { e.ID.Boot = x })
		case 3:
			return want(typ, protowire.VarintType, func() { e.ID.Seq = x })
		case 4:
			if x > uint64(observer.ResponseHalf) {
				return fmt.Errorf("half %d", x)
			}
			return want(typ, protowire.VarintType, func() { e.Half = observer.Half(x) })
		case 5:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			l, err := d.lost(v)
			e.Lost = l
			return err
		}
		return nil
	})
	if err == nil && (e.Flow == nil) == (e.Lost == nil) {
		err = errors.New("an entry is a flow or a lost-event notice")
	}
	return e, err
}

func (d *Decoder) lost(b []byte) (*observer.Lost, error) {
	l := &observer.Lost{CPU: -1}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.VarintType, func() { l.Time = unixNano(x) })
		case 2:
			return want(typ, protowire.BytesType, func() { l.Node = d.intern(v) })
		case 3:
			return want(typ, protowire.VarintType, func() { l.Source = flowpb.LostEventSource(int32(x)) })
		case 4:
			return want(typ, protowire.VarintType, func() { l.Count = x })
		case 5:
			if x == 0 || x > 1<<31 {
				return fmt.Errorf("cpu %d", int64(x)-1)
			}
			return want(typ, protowire.VarintType, func() { l.CPU = int32(x - 1) })
		}
		return nil
	})
	return l, err
}

// Flow decodes a Flow message.
func (d *Decoder) Flow(b []byte) (*flow.Flow, error) {
	f := new(flow.Flow)
	// Both header lists in one allocation, sized by a first pass over the
	// tags (cheaper than growing two slices).
	if req, resp := countHeaders(b); req+resp > 0 {
		hs := make([]flow.Header, 0, req+resp)
		if req > 0 {
			f.RequestHeaders = hs[0:0:req]
		}
		if resp > 0 {
			f.ResponseHeaders = hs[req:req:(req + resp)]
		}
	}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.VarintType, func() { f.Time = unixNano(x) })
		case 2:
			return want(typ, protowire.VarintType, func() { f.Latency = time.Duration(x) })
		case 3:
			return want(typ, protowire.VarintType, func() { f.TTFB = time.Duration(x) })
		case 4:
			return want(typ, protowire.BytesType, func() { f.Node = d.intern(v) })
		case 5:
			if x > uint64(flow.SideServer) {
				return fmt.Errorf("observer side %d", x)
			}
			return want(typ, protowire.VarintType, func() { f.Observer = flow.Side(x) })
		case 6:
			return want(typ, protowire.BytesType, func() { f.Protocol = d.intern(v) })
		case 7:
			return want(typ, protowire.BytesType, func() { f.Method = d.intern(v) })
		case 8:
			return want(typ, protowire.BytesType, func() { f.Scheme = d.intern(v) })
		case 9:
			return want(typ, protowire.BytesType, func() { f.Authority = d.intern(v) })
		case 10:
			return want(typ, protowire.BytesType, func() { f.Path = string(v) })
		case 11:
			return want32(typ, x, func() { f.Status = uint32(x) })
		case 12:
			return want(typ, protowire.BytesType, func() { f.Route = d.intern(v) })
		case 13:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			g, err := d.grpc(v)
			f.GRPC = g
			return err
		case 14:
			return want(typ, protowire.VarintType, func() { f.RequestBytes = x })
		case 15:
			return want(typ, protowire.VarintType, func() { f.ResponseBytes = x })
		case 16, 17:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			h, err := d.header(v)
			if num == 16 {
				f.RequestHeaders = append(f.RequestHeaders, h)
			} else {
				f.ResponseHeaders = append(f.ResponseHeaders, h)
			}
			return err
		case 18:
			return want(typ, protowire.BytesType, func() { f.TraceParent = string(v) })
		case 19, 20:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			var ap netip.AddrPort
			if err := ap.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("address: %w", err)
			}
			if !ap.IsValid() {
				return errors.New("address without IP")
			}
			if num == 19 {
				f.Source = ap
			} else {
				f.Destination = ap
			}
		case 21:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			return d.process(v, &f.Process)
		case 22:
			return want(typ, protowire.VarintType, func() { f.ConnID = x })
		case 23:
			return want32(typ, x, func() { f.StreamID = uint32(x) })
		case 24:
			if x > uint64(flow.OutcomeEvicted) {
				return fmt.Errorf("outcome %d", x)
			}
			return want(typ, protowire.VarintType, func() { f.Outcome = flow.Outcome(x) })
		case 25:
			return want32(typ, x, func() { f.ResetCode = uint32(x) })
		case 26:
			if x > uint64(flow.SideServer) {
				return fmt.Errorf("reset by side %d", x)
			}
			return want(typ, protowire.VarintType, func() { f.ResetBy = flow.Side(x) })
		case 27:
			return want(typ, protowire.BytesType, func() { f.Unknown = append(f.Unknown, d.intern(v)) })
		case 28:
			if x > uint64(flow.KindPolicyVerdict) {
				return fmt.Errorf("kind %d", x)
			}
			return want(typ, protowire.VarintType, func() { f.Kind = flow.Kind(x) })
		case 29:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			p, err := d.policy(v)
			f.Policy = p
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if f.Kind == flow.KindPolicyVerdict && f.Policy == nil {
		return nil, errors.New("a policy verdict without its policy")
	}
	return f, nil
}

func (d *Decoder) policy(b []byte) (*flow.Policy, error) {
	p := new(flow.Policy)
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			switch flow.Verdict(x) {
			case flow.VerdictUnknown, flow.VerdictForwarded, flow.VerdictDropped, flow.VerdictAudit:
			default:
				return fmt.Errorf("verdict %d", x)
			}
			return want(typ, protowire.VarintType, func() { p.Verdict = flow.Verdict(x) })
		case 2:
			return want32(typ, x, func() { p.DropReason = flow.DropReason(x) })
		case 3:
			return want8(typ, x, func() { p.MatchType = uint8(x) })
		case 4:
			if x > uint64(flow.Ingress) {
				return fmt.Errorf("direction %d", x)
			}
			return want(typ, protowire.VarintType, func() { p.Direction = flow.Direction(x) })
		case 5, 6:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			e := &p.Source
			if num == 6 {
				e = &p.Destination
			}
			return d.policyEndpoint(v, e)
		case 7, 8, 9, 10:
			if typ != protowire.BytesType {
				return errType(num, typ)
			}
			r, err := d.policyRef(v)
			refs := [...]*[]flow.PolicyRef{&p.IngressAllowedBy, &p.IngressDeniedBy, &p.EgressAllowedBy, &p.EgressDeniedBy}[num-7]
			*refs = append(*refs, r)
			return err
		case 11:
			return want8(typ, x, func() { p.Proto = uint8(x) })
		case 12:
			return want32(typ, x, func() { p.Count = uint32(x) })
		case 13:
			return want(typ, protowire.VarintType, func() { p.Revision = x })
		case 14:
			return want(typ, protowire.BytesType, func() { p.Hook = d.intern(v) })
		}
		return nil
	})
	return p, err
}

func (d *Decoder) policyEndpoint(b []byte, e *flow.PolicyEndpoint) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want32(typ, x, func() { e.Identity = uint32(x) })
		case 2:
			return want32(typ, x, func() { e.ID = uint32(x) })
		case 3:
			return want(typ, protowire.BytesType, func() { e.Name = d.intern(v) })
		case 4:
			return want(typ, protowire.BytesType, func() { e.Namespace = d.intern(v) })
		case 5:
			return want(typ, protowire.BytesType, func() { e.Labels = append(e.Labels, d.intern(v)) })
		}
		return nil
	})
}

func (d *Decoder) policyRef(b []byte) (flow.PolicyRef, error) {
	var r flow.PolicyRef
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.BytesType, func() { r.Kind = d.intern(v) })
		case 2:
			return want(typ, protowire.BytesType, func() { r.Name = d.intern(v) })
		case 3:
			return want(typ, protowire.BytesType, func() { r.Namespace = d.intern(v) })
		case 4:
			return want(typ, protowire.BytesType, func() { r.Labels = append(r.Labels, d.intern(v)) })
		case 5:
			return want(typ, protowire.VarintType, func() { r.Revision = x })
		}
		return nil
	})
	return r, err
}

// countHeaders counts the request (16) and response (17) header fields of
// a Flow message; it stops quietly at malformed input (the decoding pass
// reports it).
func countHeaders(b []byte) (req, resp int) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return
		}
		b = b[n:]
		switch num {
		case 16:
			req++
		case 17:
			resp++
		}
	}
	return
}

func (d *Decoder) grpc(b []byte) (*flow.GRPC, error) {
	g := new(flow.GRPC)
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.BytesType, func() { g.Service = d.intern(v) })
		case 2:
			return want(typ, protowire.BytesType, func() { g.Method = d.intern(v) })
		case 3:
			return want32(typ, x, func() { st := uint32(x); g.Status = &st })
		case 4:
			return want(typ, protowire.BytesType, func() { g.StatusSource = d.intern(v) })
		case 5:
			return want(typ, protowire.BytesType, func() { g.Message = string(v) })
		case 6:
			return want32(typ, x, func() { g.RequestMessages = uint32(x) })
		case 7:
			return want32(typ, x, func() { g.ResponseMessages = uint32(x) })
		}
		return nil
	})
	return g, err
}

func (d *Decoder) header(b []byte) (flow.Header, error) {
	var h flow.Header
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want(typ, protowire.BytesType, func() { h.Name = d.intern(v) })
		case 2:
			return want(typ, protowire.BytesType, func() { h.Value = string(v) })
		case 3:
			return want(typ, protowire.VarintType, func() { h.Truncated = x != 0 })
		}
		return nil
	})
	return h, err
}

func (d *Decoder) process(b []byte, p *flow.Process) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			return want32(typ, x, func() { p.PID = uint32(x) })
		case 2:
			return want(typ, protowire.BytesType, func() { p.Comm = d.intern(v) })
		case 3:
			return want(typ, protowire.BytesType, func() { p.Exe = d.intern(v) })
		case 4:
			return want(typ, protowire.VarintType, func() { p.CgroupID = x })
		case 5:
			return want(typ, protowire.BytesType, func() { p.Cgroup = d.intern(v) })
		case 6:
			return want(typ, protowire.BytesType, func() { p.ContainerID = d.intern(v) })
		}
		return nil
	})
}

// fields calls fn for every field of the message b: v is a
// length-delimited value, x a varint or fixed value. Groups are refused.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			return fmt.Errorf("field %d: wire type %d not used here", num, typ)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return fmt.Errorf("field %d: %w", num, err)
		}
	}
	return nil
}

// want runs set when the field has the wire type its number calls for.
func want(typ, wantType protowire.Type, set func()) error {
	if typ != wantType {
		return fmt.Errorf("wire type %d, want %d", typ, wantType)
	}
	set()
	return nil
}

// want32 is want for a varint that must fit 32 bits.
func want32(typ protowire.Type, x uint64, set func()) error {
	if x > 1<<32-1 {
		return fmt.Errorf("value %d exceeds 32 bits", x)
	}
	return want(typ, protowire.VarintType, set)
}

// want8 is want for a varint that must fit 8 bits.
func want8(typ protowire.Type, x uint64, set func()) error {
	if x > 0xff {
		return fmt.Errorf("value %d exceeds 8 bits", x)
	}
	return want(typ, protowire.VarintType, set)
}

func errType(num protowire.Number, typ protowire.Type) error {
	return fmt.Errorf("wire type %d for a message", typ)
}

func unixNano(x uint64) time.Time { return time.Unix(0, int64(x)).UTC() }
