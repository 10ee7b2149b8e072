package proxy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// String renders a status as `sextant proxy status` prints it: snapshot
// version and inputs, every xDS client with what it accepted and
// rejected, Envoy, the forwarder and the redirect.
func (s Status) String() string {
	var b strings.Builder
	x := s.XDS
	fmt.Fprintf(&b, "xDS snapshot version %s", x.Version)
	if !x.Applied.IsZero() {
		fmt.Fprintf(&b, " (applied %s)", x.Applied.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "\ninputs: %s\n", x.Inputs)
	if s.LoadError != "" {
		fmt.Fprintf(&b, "REJECTED (the last good inputs stay in force): %s\n", s.LoadError)
	}
	for _, w := range x.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	for _, r := range x.Rejected {
		fmt.Fprintf(&b, "rejected %s: %s\n", r.Time.Format(time.RFC3339), r.Error)
	}
	fmt.Fprintf(&b, "\nNODE\tPROFILE\tSTREAMS\tSNAPSHOT\tACKED\tNACKS\tLAST NACK\n")
	for _, n := range x.Nodes {
		types := make([]string, 0, len(n.Acked))
		for t, v := range n.Acked {
			types = append(types, shortType(t)+"="+v)
		}
		slices.Sort(types)
		version := n.Version
		if n.Rejected != "" {
			version += " (held back: rejected " + n.Rejected + ")"
		}
		last := ""
		if n.LastNACK != nil {
			last = fmt.Sprintf("%s v%s: %s", shortType(n.LastNACK.TypeURL), n.LastNACK.Version, n.LastNACK.Error)
		}
		fmt.Fprintf(&b, "%s\t%s\t%d\t%s\t%s\t%d\t%s\n", n.ID, n.Profile, n.Streams, version, strings.Join(types, ","), n.NACKs, last)
	}
	e := s.Envoy
	fmt.Fprintf(&b, "\nEnvoy: %s", e.State)
	if e.PID != 0 {
		fmt.Fprintf(&b, ", pid %d", e.PID)
	}
	if e.Restarts > 0 {
		fmt.Fprintf(&b, ", %d restarts", e.Restarts)
	}
	if e.LastError != "" {
		fmt.Fprintf(&b, " (%s)", e.LastError)
	}
	fmt.Fprintf(&b, "\nforwarder: %d calls routed, %d sent direct (fail-open), %d refused (fail-closed)\n", s.Forwarder.Calls, s.Forwarder.Direct, s.Forwarder.Refused)
	if r := s.Redirect; r != nil {
		fmt.Fprintf(&b, "redirect: %d connects redirected, %d original destinations answered\n", r.Redirected, r.Answered)
	}
	fmt.Fprintf(&b, "access logs: %d streams, %d entries\n", s.ALS.Streams, s.ALS.Entries)
	dsts := make([]string, 0, len(s.Redirected))
	for d := range s.Redirected {
		dsts = append(dsts, d)
	}
	slices.Sort(dsts)
	for _, d := range dsts {
		fmt.Fprintf(&b, "  %s -> %s\n", d, s.Redirected[d])
	}
	return b.String()
}

// shortType is the message name of a type URL.
func shortType(url string) string {
	if i := strings.LastIndexByte(url, '.'); i >= 0 {
		return url[i+1:]
	}
	return url
}
