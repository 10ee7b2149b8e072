// Package printer renders Observer API events for `sextant observe`: one
// compact line per event in the style of `hubble observe`, an aligned
// table, or the API's JSON (one GetFlowsResponse per line, as
// `hubble observe -o json` prints it).
package printer

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sextant/sextant/observer/hubble"
)

// Format is an output format of observe.
type Format string

const (
	Compact Format = "compact"
	Table   Format = "table"
	JSON    Format = "json"
)

// ParseFormat returns the format named s.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Compact, Table, JSON:
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q (want compact, table or json)", s)
}

// Printer writes events to w in one format.
type Printer struct {
	w      io.Writer
	format Format
	table  *tabwriter.Writer
	header bool
	// Location is the time zone of timestamps (default time.Local).
	Location *time.Location
}

// New returns a printer of format to w.
func New(w io.Writer, format Format) *Printer {
	p := &Printer{w: w, format: format, Location: time.Local}
	if format == Table {
		p.table = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	}
	return p
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// Print writes one event.
func (p *Printer) Print(e *observerpb.GetFlowsResponse) error {
	switch p.format {
	case JSON:
		b, err := jsonOpts.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	case Table:
		if !p.header {
			fmt.Fprintln(p.table, "TIMESTAMP\tNODE\tSOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY")
			p.header = true
		}
		if l := e.GetLostEvents(); l != nil {
			_, err := fmt.Fprintf(p.table, "%s\t%s\t\t\tEVENTS LOST\t\t%s\n", p.time(e.GetTime().AsTime()), e.GetNodeName(), lostText(l))
			return err
		}
		f := e.GetFlow()
		if f == nil {
			return nil
		}
		_, err := fmt.Fprintf(p.table, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.time(f.GetTime().AsTime()), f.GetNodeName(),
			endpoint(f.GetSource(), f.GetIP().GetSource(), sourcePort(f)),
			endpoint(f.GetDestination(), f.GetIP().GetDestination(), destinationPort(f)),
			eventType(f), f.GetVerdict(), f.GetSummary())
		return err
	}
	if _, err := io.WriteString(p.w, p.CompactLine(e)); err != nil {
		return err
	}
	_, err := io.WriteString(p.w, "\n")
	return err
}

// Flush writes what a table holds back to align its columns.
func (p *Printer) Flush() error {
	if p.table != nil {
		return p.table.Flush()
	}
	return nil
}

// CompactLine renders e as `hubble observe` does, with the observed
// process next to its address:
//
//	Nov 25 20:08:25.225 [node]: 127.0.0.1:47970 (curl:4242) -> 127.0.0.1:18080 http-request FORWARDED (HTTP/2 GET http://127.0.0.1:18080/x)
func (p *Printer) CompactLine(e *observerpb.GetFlowsResponse) string {
	if l := e.GetLostEvents(); l != nil {
		return fmt.Sprintf("%s [%s]: EVENTS LOST: %s", p.time(e.GetTime().AsTime()), e.GetNodeName(), lostText(l))
	}
	f := e.GetFlow()
	if f == nil {
		return fmt.Sprintf("%s [%s]: unsupported event", p.time(e.GetTime().AsTime()), e.GetNodeName())
	}
	return fmt.Sprintf("%s [%s]: %s -> %s %s %s (%s)", p.time(f.GetTime().AsTime()), f.GetNodeName(),
		endpoint(f.GetSource(), f.GetIP().GetSource(), sourcePort(f)),
		endpoint(f.GetDestination(), f.GetIP().GetDestination(), destinationPort(f)),
		eventType(f), f.GetVerdict(), f.GetSummary())
}

func (p *Printer) time(t time.Time) string {
	loc := p.Location
	if loc == nil {
		loc = time.Local
	}
	return t.In(loc).Format(time.StampMilli)
}

func lostText(l *flowpb.LostEvent) string {
	s := l.GetSource().String()
	if cpu := l.GetCpu(); cpu != nil {
		s += fmt.Sprintf(" CPU(%d)", cpu.GetValue())
	}
	return fmt.Sprintf("%s %d", s, l.GetNumEventsLost())
}

func sourcePort(f *flowpb.Flow) uint32 {
	return f.GetL4().GetTCP().GetSourcePort() + f.GetL4().GetUDP().GetSourcePort()
}

func destinationPort(f *flowpb.Flow) uint32 {
	return f.GetL4().GetTCP().GetDestinationPort() + f.GetL4().GetUDP().GetDestinationPort()
}

// endpoint writes "ip:port (comm:pid)"; the process part only for the
// endpoint that is the observed process, "?" for an address that is unknown.
func endpoint(ep *flowpb.Endpoint, ip string, port uint32) string {
	addr := "?"
	if ip != "" {
		addr = ip
		if strings.Contains(ip, ":") {
			addr = "[" + ip + "]"
		}
		if port != 0 {
			addr = fmt.Sprintf("%s:%d", addr, port)
		}
	}
	var comm, pid string
	for _, l := range ep.GetLabels() {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case hubble.LabelComm:
			comm = v
		case hubble.LabelPID:
			pid = v
		}
	}
	switch {
	case comm != "" && pid != "":
		addr += " (" + comm + ":" + pid + ")"
	case comm != "" || pid != "":
		addr += " (" + comm + pid + ")"
	}
	// A policy endpoint: its name and security identity, as Hubble shows them.
	if id := ep.GetIdentity(); id != 0 {
		name := ep.GetPodName()
		if ns := ep.GetNamespace(); ns != "" && name != "" {
			name = ns + "/" + name
		}
		if name != "" {
			addr += " " + name
		}
		addr += fmt.Sprintf(" (ID:%d)", id)
	}
	return addr
}

// eventType names the event as Hubble does: http-request, http-response,
// policy-verdict.
func eventType(f *flowpb.Flow) string {
	if f.GetEventType().GetType() == hubble.MessageTypePolicyVerdict {
		return "policy-verdict"
	}
	l7 := f.GetL7()
	if l7 == nil {
		return f.GetType().String()
	}
	proto := "l7"
	if l7.GetHttp() != nil {
		proto = "http"
	}
	switch l7.GetType() {
	case flowpb.L7FlowType_REQUEST:
		return proto + "-request"
	case flowpb.L7FlowType_RESPONSE:
		return proto + "-response"
	}
	return proto
}
