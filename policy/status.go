package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sextant/sextant/policy/resolve"
	"github.com/sextant/sextant/policy/source"
)

// Status is what `sextant policy list` shows.
type Status struct {
	Revision   uint64
	Applied    time.Time
	PolicyDir  string
	Policies   []PolicyStatus
	Endpoints  []EndpointStatus
	Rejections []Rejection
	// EndpointErrors: entries of the endpoints file that could not be
	// resolved (missing cgroup, netns) or a file that does not parse.
	EndpointErrors string
	ApplyError     string
	// VerdictsLost: records the programs could not write because the
	// kernel's ring was full (the agent read it too slowly).
	VerdictsLost uint64
}

// Rejection is a policy file whose latest content was rejected (its last
// good content stays in force): each error with file:line and field.
type Rejection struct {
	File   string
	Errors []string
	Time   time.Time
}

// PolicyStatus is one policy in force.
type PolicyStatus struct {
	ID        string
	File      string
	Line      int
	Rules     int
	Endpoints []string // names of the endpoints it selects
}

// EndpointStatus is one endpoint.
type EndpointStatus struct {
	Name            string
	EpID            uint32
	Identity        uint32
	Labels          []string
	Cgroup          string
	Netns           string
	IngressEnforced bool
	EgressEnforced  bool
	Audit           bool
	IngressEntries  int
	EgressEntries   int
}

// Status reports the revision in force, its policies and endpoints and
// the rejected files.
func (e *Engine) Status() Status {
	e.mu.RLock()
	defer e.mu.RUnlock()
	s := Status{PolicyDir: e.cfg.PolicyDir, VerdictsLost: e.verdictsLost()}
	for _, r := range e.snap.Rejections {
		rej := Rejection{File: r.File, Time: r.Time}
		for _, err := range r.Errors {
			rej.Errors = append(rej.Errors, err.Error())
		}
		s.Rejections = append(s.Rejections, rej)
	}
	if e.epErr != nil {
		s.EndpointErrors = e.epErr.Error()
	}
	if e.applyErr != nil {
		s.ApplyError = e.applyErr.Error()
	}
	rev := e.cur
	if rev == nil {
		return s
	}
	s.Revision, s.Applied = rev.number, rev.applied
	for _, p := range rev.policies {
		ps := PolicyStatus{ID: p.ID(), File: p.File, Line: p.Line, Rules: len(p.Rules)}
		for id, ep := range rev.endpoints {
			pol := rev.result.Endpoints[id]
			for _, t := range pol.Tables {
				if slices.Contains(t.Selecting, p) && !slices.Contains(ps.Endpoints, ep.Name) {
					ps.Endpoints = append(ps.Endpoints, ep.Name)
				}
			}
		}
		slices.Sort(ps.Endpoints)
		s.Policies = append(s.Policies, ps)
	}
	for id, ep := range rev.endpoints {
		pol := rev.result.Endpoints[id]
		s.Endpoints = append(s.Endpoints, EndpointStatus{
			Name: ep.Name, EpID: id, Identity: uint32(pol.Endpoint.Identity.ID), Labels: ep.Labels.GetModel(),
			Cgroup: ep.CgroupPath, Netns: ep.NetnsPath,
			IngressEnforced: pol.Tables[resolve.Ingress].Enforced, EgressEnforced: pol.Tables[resolve.Egress].Enforced,
			Audit: ep.Audit || e.cfg.Audit, IngressEntries: len(pol.Tables[resolve.Ingress].Entries), EgressEntries: len(pol.Tables[resolve.Egress].Entries),
		})
	}
	slices.SortFunc(s.Endpoints, func(a, b EndpointStatus) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// String renders a status for the CLI.
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Revision %d", s.Revision)
	if !s.Applied.IsZero() {
		fmt.Fprintf(&b, " (applied %s)", s.Applied.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, ", policy directory %s\n\nPOLICY\tFILE\tRULES\tENDPOINTS\n", s.PolicyDir)
	for _, p := range s.Policies {
		fmt.Fprintf(&b, "%s\t%s:%d\t%d\t%s\n", p.ID, p.File, p.Line, p.Rules, strings.Join(p.Endpoints, ","))
	}
	fmt.Fprintf(&b, "\nENDPOINT\tID\tIDENTITY\tINGRESS\tEGRESS\tLABELS\n")
	for _, e := range s.Endpoints {
		mode := func(enforced bool, n int) string {
			m := "allow-all"
			if enforced {
				m = "default-deny"
			}
			if e.Audit {
				m += "(audit)"
			}
			return fmt.Sprintf("%s/%d", m, n)
		}
		fmt.Fprintf(&b, "%s\t%d\t%d\t%s\t%s\t%s\n", e.Name, e.EpID, e.Identity, mode(e.IngressEnforced, e.IngressEntries), mode(e.EgressEnforced, e.EgressEntries), strings.Join(e.Labels, ","))
	}
	if len(s.Rejections) > 0 {
		fmt.Fprintf(&b, "\nREJECTED (the last good version of each file stays in force)\n")
		for _, r := range s.Rejections {
			for _, err := range r.Errors {
				fmt.Fprintf(&b, "%s\n", err)
			}
		}
	}
	if s.EndpointErrors != "" {
		fmt.Fprintf(&b, "\nENDPOINT ERRORS\n%s\n", s.EndpointErrors)
	}
	if s.ApplyError != "" {
		fmt.Fprintf(&b, "\nAPPLY ERROR\n%s\n", s.ApplyError)
	}
	return b.String()
}

// Validate checks policy files without applying them (`sextant policy
// validate FILE…`): every rejected document's errors, with file:line.
// A directory stands for its policy files.
func Validate(paths ...string) error {
	files, err := policyFiles(paths)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		_, fe := source.ReadFile(f)
		errs = append(errs, fe...)
	}
	return errors.Join(errs...)
}

// policyFiles expands directories into their policy files (by name
// order, as the agent reads them).
func policyFiles(paths []string) ([]string, error) {
	var files []string
	var errs []error
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !info.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if !e.IsDir() && source.IsPolicyFile(e.Name()) {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	return files, errors.Join(errs...)
}
