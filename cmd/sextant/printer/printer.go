// Package printer renders flows for `sextant observe`: one compact line per
// flow, in the spirit of `hubble observe`, or the API's JSON.
//
// What the agent could not decode exactly is printed as "?"; what was
// simply absent (no response yet, no gRPC status on the wire) as "-".
package printer

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"

	"github.com/sextant/sextant/collector/flow"
)

// Format is an output format of observe.
type Format string

const (
	Compact Format = "compact"
	JSON    Format = "json"
)

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Compact, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q (want compact or json)", s)
}

// Printer writes flows to w in one format.
type Printer struct {
	w      io.Writer
	format Format
	enc    *json.Encoder
	// Location is the time zone of compact timestamps (default time.Local).
	Location *time.Location
}

// New returns a printer of format to w.
func New(w io.Writer, format Format) *Printer {
	return &Printer{w: w, format: format, enc: json.NewEncoder(w), Location: time.Local}
}

// Print writes one flow.
func (p *Printer) Print(f *flow.Flow) error {
	if p.format == JSON {
		return p.enc.Encode(f)
	}
	_, err := io.WriteString(p.w, CompactLine(f, p.Location)+"\n")
	return err
}

const unknown = "?"

// CompactLine renders f on one line:
//
//	TIME  NODE  comm(pid) SRC -> DST  PROTOCOL  METHOD URL  STATUS  [gRPC service/method STATUS]  [OUTCOME]  LATENCY
//
// comm(pid) is the observed process; it is written after DST instead when
// that process was the server.
func CompactLine(f *flow.Flow, loc *time.Location) string {
	u := func(field string) bool { return slices.Contains(f.Unknown, field) }
	or := func(v, field string) string {
		switch {
		case v != "":
			return v
		case u(field):
			return unknown
		}
		return "-"
	}

	var b strings.Builder
	if f.Time.IsZero() {
		b.WriteString(unknown)
	} else {
		if loc == nil {
			loc = time.Local
		}
		b.WriteString(f.Time.In(loc).Format("Jan _2 15:04:05.000"))
	}
	b.WriteString("  " + known(f.Node))
	// The observed process stands at its end of the exchange, so the two
	// views of one exchange between local processes tell themselves apart.
	exchange := addr(f.Source) + " -> " + addr(f.Destination)
	if f.Observer == flow.SideServer {
		b.WriteString("  " + exchange + " " + process(f.Process))
	} else {
		b.WriteString("  " + process(f.Process) + " " + exchange)
	}
	b.WriteString("  " + known(f.Protocol))
	b.WriteString("  " + or(f.Method, "method") + " " + url(f, u))

	switch {
	case f.Status != 0:
		fmt.Fprintf(&b, "  %d", f.Status)
	case u("status"):
		b.WriteString("  " + unknown)
	default:
		b.WriteString("  -")
	}

	if g := f.GRPC; g != nil {
		call := "-"
		switch {
		case g.Service != "":
			call = g.Service + "/" + g.Method
		case u("path"):
			call = unknown
		}
		status := "-"
		switch {
		case g.Status != nil:
			status = codes.Code(*g.Status).String()
		case u("grpc_status"):
			status = unknown
		}
		b.WriteString("  gRPC " + call + " " + status)
	}

	if f.Outcome != flow.OutcomeComplete || u("outcome") {
		b.WriteString("  " + outcome(f, u("outcome")))
	}

	if u("latency") {
		b.WriteString("  " + unknown)
	} else {
		b.WriteString("  " + Duration(f.Latency))
	}
	return b.String()
}

func known(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

func process(p flow.Process) string {
	pid := unknown
	if p.PID != 0 {
		pid = fmt.Sprint(p.PID)
	}
	return known(p.Comm) + "(" + pid + ")"
}

func addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return unknown
	}
	return a.String()
}

// url joins scheme, authority and path; a part that was present but not
// decoded is "?", a part that was absent (an HTTP/1 origin-form request has
// no scheme) is left out.
func url(f *flow.Flow, u func(string) bool) string {
	part := func(v, field string) string {
		if v == "" && u(field) {
			return unknown
		}
		return v
	}
	scheme, authority, path := part(f.Scheme, "scheme"), part(f.Authority, "authority"), part(f.Path, "path")
	var b strings.Builder
	if scheme != "" {
		b.WriteString(scheme + "://")
	}
	b.WriteString(authority)
	if path != "" && path != unknown && !strings.HasPrefix(path, "/") && authority != "" {
		b.WriteString("/") // asterisk-form and the like stay readable
	}
	if path == unknown {
		path = "/" + unknown
	}
	b.WriteString(path)
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

func outcome(f *flow.Flow, unknownOutcome bool) string {
	if unknownOutcome {
		return "outcome " + unknown
	}
	s := f.Outcome.String()
	switch f.Outcome {
	case flow.OutcomeReset, flow.OutcomeRefused:
		if f.Protocol == "HTTP/2" {
			s += " " + errCode(f.ResetCode)
		}
		if f.ResetBy != flow.SideUnknown {
			s += " by " + f.ResetBy.String()
		}
	}
	return s
}

func errCode(code uint32) string {
	s := http2.ErrCode(code).String()
	if strings.HasPrefix(s, "unknown") {
		return fmt.Sprintf("0x%x", code)
	}
	return s
}

// Duration formats d with three significant digits at most: 850µs, 12.3ms, 1.25s.
func Duration(d time.Duration) string {
	switch {
	case d < 0:
		return unknown
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return trim(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return trim(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return trim(float64(d)/float64(time.Second)) + "s"
}

// trim prints v with at most three significant digits and no trailing zeros.
func trim(v float64) string {
	decimals := 2
	switch {
	case v >= 100:
		decimals = 0
	case v >= 10:
		decimals = 1
	}
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
