// Package resolve turns policies, endpoints and identities into what the
// kernel enforces: per endpoint and direction, whether the direction is
// enforced (default deny) and a longest-prefix table of (remote identity,
// protocol, port prefix) → allow or deny, each entry naming the rules
// that decided it. Precedence is Cilium's: a deny rule wins over any
// allow; a direction is default-deny once a policy that selects the
// endpoint enables it; an endpoint no policy selects is not enforced.
package resolve

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	"github.com/cilium/cilium/pkg/policy/types"

	"github.com/sextant/sextant/policy/ipcache"
	"github.com/sextant/sextant/policy/source"
)

// Direction of traffic as seen from the endpoint (the datapath's numbers).
type Direction uint8

const (
	Ingress Direction = 0
	Egress  Direction = 1
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// MatchType says what kind of entry decided, with the numbers of Cilium's
// monitor API (pkg/monitor/api PolicyMatch*), which Hubble's
// policy_match_type carries.
type MatchType uint8

const (
	MatchNone      MatchType = 0
	MatchL3Only    MatchType = 1
	MatchL3L4      MatchType = 2
	MatchL4Only    MatchType = 3
	MatchAll       MatchType = 4
	MatchL3Proto   MatchType = 5
	MatchProtoOnly MatchType = 6
)

func (m MatchType) String() string {
	return [...]string{"none", "L3-Only", "L3-L4", "L4-Only", "all", "L3-Proto", "Proto-Only"}[m]
}

// IP protocol numbers the tables know.
const (
	ProtoAny uint8 = 0
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// Endpoint is a subject of policy.
type Endpoint struct {
	ID       uint32 // local endpoint number (the datapath's key)
	Name     string
	Identity ipcache.Identity
}

// Ref names the rule behind an entry: the policy, the rule's index in it
// and the section ("ingress[0]", "egressDeny[1]").
type Ref struct {
	Policy  *source.Policy
	Rule    int
	Section string
}

func (r Ref) String() string { return fmt.Sprintf("%s rule %d %s", r.Policy.ID(), r.Rule, r.Section) }

// Key is one prefix of an endpoint's table for one direction: remote
// identity (0: any), protocol (0: any, then every port) and the top
// PortBits bits of Port.
type Key struct {
	Remote   ipcache.ID
	Proto    uint8
	Port     uint16
	PortBits uint8
}

// Len is the key's prefix length below the remote identity: longer wins.
func (k Key) Len() int {
	if k.Proto == ProtoAny {
		return 0
	}
	return 1 + int(k.PortBits)
}

// Covers says whether k matches every port and protocol that o matches
// (same remote).
func (k Key) Covers(o Key) bool {
	if k.Remote != o.Remote || k.Len() > o.Len() {
		return false
	}
	if k.Proto == ProtoAny {
		return true
	}
	return k.Proto == o.Proto && prefixMatch(k.Port, k.PortBits, o.Port)
}

// Matches says whether a packet's protocol and port fall under k.
func (k Key) Matches(proto uint8, port uint16) bool {
	return k.Proto == ProtoAny || (k.Proto == proto && prefixMatch(k.Port, k.PortBits, port))
}

func prefixMatch(p uint16, bits uint8, port uint16) bool {
	if bits == 0 {
		return true
	}
	shift := 16 - bits
	return p>>shift == port>>shift
}

// Value is what a key decides.
type Value struct {
	Deny      bool
	MatchType MatchType
	Cookie    uint32 // index into Result.Refs: the rules behind the entry
}

// L7Rule is an allow entry's HTTP rules (kept for the proxy and the L7
// audit evaluator): requests on Proto/Lo..Hi from Remote (0: any) must
// match one of HTTP unless another rule allows the port without L7 rules.
type L7Rule struct {
	Remote ipcache.ID
	Proto  uint8
	Lo, Hi uint16
	HTTP   api.PortRulesHTTP // nil: the port is allowed at L7 without conditions
	Ref    Ref
}

// Table is one endpoint's policy for one direction.
type Table struct {
	Enforced bool
	// Selecting are the policies whose endpointSelector selects the
	// endpoint and that have rules for this direction; EnforcedBy those
	// that turned default deny on.
	Selecting  []*source.Policy
	EnforcedBy []*source.Policy
	Entries    map[Key]Value
	L7         []L7Rule
}

// AnyRemote: the table has entries for any remote identity (Key.Remote
// 0); without one, the kernel skips that lookup.
func (t *Table) AnyRemote() bool {
	for k := range t.Entries {
		if k.Remote == 0 {
			return true
		}
	}
	return false
}

// EndpointPolicy is one endpoint's tables.
type EndpointPolicy struct {
	Endpoint Endpoint
	Tables   [2]*Table // by Direction
}

// Result is one compiled revision.
type Result struct {
	Revision  uint64
	Endpoints map[uint32]*EndpointPolicy
	// Refs[cookie] are the rules behind entries with that cookie; Refs[0] is empty.
	Refs [][]Ref
}

// Input is what a revision is compiled from.
type Input struct {
	Revision   uint64
	Policies   []*source.Policy
	Endpoints  []Endpoint
	Identities []ipcache.Identity // every identity a peer can have: reserved, endpoints, CIDR
}

// CIDRs returns every prefix the policies name (CIDRs and their
// exceptions): each needs a CIDR identity so that the longest-prefix
// lookup of an address tells which rules cover it.
func CIDRs(policies []*source.Policy) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	add := func(s api.CIDR) {
		if p, err := source.ParseCIDR(string(s)); err == nil && p.Bits() > 0 && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range policies {
		for _, r := range p.Rules {
			forEachPeer(r, func(_ Direction, _ bool, _ int, pe peers, _ any) {
				for _, c := range pe.cidrs {
					add(c)
				}
				for _, s := range pe.sets {
					add(s.Cidr)
					for _, e := range s.ExceptCIDRs {
						add(e)
					}
				}
			})
		}
	}
	return out
}

type peers struct {
	endpoints []api.EndpointSelector
	cidrs     api.CIDRSlice
	sets      api.CIDRRuleSlice
	entities  api.EntitySlice
}

func (p peers) empty() bool {
	return len(p.endpoints) == 0 && len(p.cidrs) == 0 && len(p.sets) == 0 && len(p.entities) == 0
}

// forEachPeer calls fn for each ingress/egress (deny) section of a rule
// with its peers and its ports (api.PortRules or api.PortDenyRules).
func forEachPeer(r *api.Rule, fn func(dir Direction, deny bool, i int, pe peers, ports any)) {
	for i, in := range r.Ingress {
		fn(Ingress, false, i, peers{in.FromEndpoints, in.FromCIDR, in.FromCIDRSet, in.FromEntities}, in.ToPorts)
	}
	for i, in := range r.IngressDeny {
		fn(Ingress, true, i, peers{in.FromEndpoints, in.FromCIDR, in.FromCIDRSet, in.FromEntities}, in.ToPorts)
	}
	for i, eg := range r.Egress {
		fn(Egress, false, i, peers{eg.ToEndpoints, eg.ToCIDR, eg.ToCIDRSet, eg.ToEntities}, eg.ToPorts)
	}
	for i, eg := range r.EgressDeny {
		fn(Egress, true, i, peers{eg.ToEndpoints, eg.ToCIDR, eg.ToCIDRSet, eg.ToEntities}, eg.ToPorts)
	}
}

func section(dir Direction, deny bool, i int) string {
	s := dir.String()
	if deny {
		s += "Deny"
	}
	return fmt.Sprintf("%s[%d]", s, i)
}

// Selects says whether a rule's endpointSelector selects a label set.
func Selects(r *api.Rule, l labels.LabelArray) bool {
	return types.NewLabelSelector(r.EndpointSelector).Matches(l)
}

// portSpec is one decoded toPorts entry (proto 0: any, lo=hi=0: all ports)
// and its L7 rules.
type portSpec struct {
	proto  uint8
	lo, hi uint16
	http   api.PortRulesHTTP
	hasL7  bool
}

func portSpecs(ports any) []portSpec {
	var out []portSpec
	add := func(pps []api.PortProtocol, rules *api.L7Rules) {
		for _, pp := range pps {
			pr, err := source.ParsePortProtocol(pp)
			if err != nil {
				continue // rejected at decoding
			}
			ps := portSpec{lo: pr.Lo, hi: pr.Hi}
			if rules != nil && len(rules.HTTP) > 0 {
				ps.http, ps.hasL7 = rules.HTTP, true
			}
			switch pr.Proto {
			case api.ProtoTCP:
				ps.proto = ProtoTCP
				out = append(out, ps)
			case api.ProtoUDP:
				ps.proto = ProtoUDP
				out = append(out, ps)
			default:
				// ANY: TCP and UDP, the protocols a host's sockets speak here.
				for _, p := range []uint8{ProtoTCP, ProtoUDP} {
					ps.proto = p
					out = append(out, ps)
				}
			}
		}
	}
	switch ps := ports.(type) {
	case api.PortRules:
		for _, p := range ps {
			add(p.Ports, p.Rules)
		}
	case api.PortDenyRules:
		for _, p := range ps {
			add(p.Ports, nil)
		}
	}
	return out
}

// remotes returns the identities a peer list selects; wildcard is true
// when it selects every identity (the table's remote 0). CIDR identities
// (labels cidr:… and reserved:world-…) are matched by CIDR peers, and by
// label selectors that could select such labels (entities, and selectors
// whose every key is of source reserved, cidr or any).
func remotes(pe peers, others, cidrIDs []ipcache.Identity) (sel []ipcache.ID, wildcard bool) {
	type labelSel struct {
		s       *types.LabelSelector
		cidrToo bool
	}
	var selectors []labelSel
	for _, es := range pe.endpoints {
		if es.IsWildcard() {
			return nil, true
		}
		selectors = append(selectors, labelSel{types.NewLabelSelector(es), mayMatchCIDR(es)})
	}
	for _, e := range pe.entities {
		for _, es := range api.EntitySelectorMapping[e] {
			if es.IsWildcard() {
				return nil, true
			}
			selectors = append(selectors, labelSel{types.NewLabelSelector(es), true})
		}
	}
	type cidrSel struct {
		base   netip.Prefix
		except []netip.Prefix
	}
	var cidrs []cidrSel
	for _, c := range pe.cidrs {
		if p, err := source.ParseCIDR(string(c)); err == nil {
			cidrs = append(cidrs, cidrSel{base: p})
		}
	}
	for _, s := range pe.sets {
		p, err := source.ParseCIDR(string(s.Cidr))
		if err != nil {
			continue
		}
		cs := cidrSel{base: p}
		for _, e := range s.ExceptCIDRs {
			if ep, err := source.ParseCIDR(string(e)); err == nil {
				cs.except = append(cs.except, ep)
			}
		}
		cidrs = append(cidrs, cs)
	}
	within := func(outer netip.Prefix, id ipcache.Identity) bool {
		if id.Prefix.IsValid() {
			return id.Prefix.Addr().Is4() == outer.Addr().Is4() && id.Prefix.Bits() >= outer.Bits() && outer.Contains(id.Prefix.Addr())
		}
		// A /0 also covers the addresses no CIDR identity covers.
		return outer.Bits() == 0 && (id.ID == ipcache.WorldFor(outer.Addr()) || id.ID == ipcache.World)
	}
	matches := func(id ipcache.Identity, isCIDR bool) bool {
		for _, s := range selectors {
			if (!isCIDR || s.cidrToo) && s.s.Matches(id.Labels) {
				return true
			}
		}
		for _, c := range cidrs {
			if within(c.base, id) && !slices.ContainsFunc(c.except, func(e netip.Prefix) bool { return within(e, id) }) {
				return true
			}
		}
		return false
	}
	for _, id := range others {
		if matches(id, false) {
			sel = append(sel, id.ID)
		}
	}
	if slices.ContainsFunc(selectors, func(s labelSel) bool { return s.cidrToo }) {
		for _, id := range cidrIDs {
			if matches(id, true) {
				sel = append(sel, id.ID)
			}
		}
		return sel, false
	}
	// Only CIDR peers can select CIDR identities: look at the identities
	// inside each CIDR (cidrIDs is sorted by address).
	seen := map[ipcache.ID]bool{}
	for _, c := range cidrs {
		start, _ := slices.BinarySearchFunc(cidrIDs, c.base.Addr(), func(id ipcache.Identity, a netip.Addr) int { return id.Prefix.Addr().Compare(a) })
		for _, id := range cidrIDs[start:] {
			if !c.base.Contains(id.Prefix.Addr()) {
				break
			}
			if !seen[id.ID] && matches(id, true) {
				seen[id.ID] = true
				sel = append(sel, id.ID)
			}
		}
	}
	return sel, false
}

// mayMatchCIDR: could a selector select a CIDR identity, whose labels are
// all of source cidr or reserved? Not when it requires a label of another
// source (a namespaced policy's selectors always require the k8s
// namespace label).
func mayMatchCIDR(es api.EndpointSelector) bool {
	for k := range es.MatchLabels {
		src, _, ok := strings.Cut(k, ":")
		if !ok || (src != labels.LabelSourceReserved && src != labels.LabelSourceCIDR && src != labels.LabelSourceAny) {
			return false
		}
	}
	return true
}

// Compile computes every endpoint's tables.
func Compile(in Input) *Result {
	res := &Result{Revision: in.Revision, Endpoints: map[uint32]*EndpointPolicy{}, Refs: [][]Ref{nil}}
	cookies := map[string]uint32{}
	cookie := func(refs []Ref) uint32 {
		var b strings.Builder
		for _, r := range refs {
			fmt.Fprintf(&b, "%p/%d/%s;", r.Policy, r.Rule, r.Section)
		}
		if c, ok := cookies[b.String()]; ok {
			return c
		}
		c := uint32(len(res.Refs))
		res.Refs = append(res.Refs, refs)
		cookies[b.String()] = c
		return c
	}
	// Peer selection does not depend on the subject: compute it once per rule section.
	type sectionKey struct {
		r    *api.Rule
		dir  Direction
		deny bool
		i    int
	}
	type selected struct {
		ids      []ipcache.ID
		wildcard bool
	}
	peerCache := map[sectionKey]selected{}
	subjects := map[*api.Rule]*types.LabelSelector{}
	selects := func(r *api.Rule, l labels.LabelArray) bool {
		s, ok := subjects[r]
		if !ok {
			s = types.NewLabelSelector(r.EndpointSelector)
			subjects[r] = s
		}
		return s.Matches(l)
	}
	var cidrIDs, otherIDs []ipcache.Identity
	for _, id := range in.Identities {
		if id.Prefix.IsValid() {
			cidrIDs = append(cidrIDs, id)
		} else {
			otherIDs = append(otherIDs, id)
		}
	}
	slices.SortFunc(cidrIDs, func(a, b ipcache.Identity) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	for _, ep := range in.Endpoints {
		epol := &EndpointPolicy{Endpoint: ep}
		res.Endpoints[ep.ID] = epol
		var keys [2]map[Key]*acc
		for d := range epol.Tables {
			epol.Tables[d] = &Table{Entries: map[Key]Value{}}
			keys[d] = map[Key]*acc{}
		}
		for _, p := range in.Policies {
			for ri, r := range p.Rules {
				if !selects(r, ep.Identity.Labels) {
					continue
				}
				dd := r.EnableDefaultDeny
				has := [2]bool{len(r.Ingress)+len(r.IngressDeny) > 0, len(r.Egress)+len(r.EgressDeny) > 0}
				on := [2]bool{dd.Ingress != nil && *dd.Ingress, dd.Egress != nil && *dd.Egress}
				for d := range 2 {
					t := epol.Tables[d]
					if has[d] && !slices.Contains(t.Selecting, p) {
						t.Selecting = append(t.Selecting, p)
					}
					if on[d] {
						t.Enforced = true
						if !slices.Contains(t.EnforcedBy, p) {
							t.EnforcedBy = append(t.EnforcedBy, p)
						}
					}
				}
				forEachPeer(r, func(dir Direction, deny bool, i int, pe peers, ports any) {
					sk := sectionKey{r, dir, deny, i}
					sel, ok := peerCache[sk]
					if !ok {
						if !pe.empty() {
							sel.ids, sel.wildcard = remotes(pe, otherIDs, cidrIDs)
						} else {
							sel.wildcard = true // only ports: any peer (L4-only)
						}
						peerCache[sk] = sel
					}
					specs := portSpecs(ports)
					if pe.empty() && len(specs) == 0 {
						return // `{}`: selects the endpoint, allows nothing
					}
					ref := Ref{Policy: p, Rule: ri, Section: section(dir, deny, i)}
					rems := sel.ids
					if sel.wildcard {
						rems = []ipcache.ID{0}
					}
					for _, remote := range rems {
						if len(specs) == 0 {
							mt := MatchL3Only
							if remote == 0 {
								mt = MatchAll
							}
							add(keys[dir], Key{Remote: remote}, deny, mt, ref)
							if !deny {
								epol.Tables[dir].L7 = append(epol.Tables[dir].L7, L7Rule{Remote: remote, Ref: ref})
							}
							continue
						}
						for _, s := range specs {
							mt := matchType(remote, s)
							for _, k := range portPrefixes(remote, s) {
								add(keys[dir], k, deny, mt, ref)
							}
							if !deny {
								epol.Tables[dir].L7 = append(epol.Tables[dir].L7, L7Rule{Remote: remote, Proto: s.proto, Lo: s.lo, Hi: s.hi, HTTP: s.http, Ref: ref})
							}
						}
					}
				})
			}
		}
		for d := range 2 {
			t := epol.Tables[d]
			m := keys[d]
			// Deny precedence within one remote's subtree: an allow prefix
			// that a deny prefix covers is removed, so the longest match for
			// its ports is the deny (or a longer deny). Across subtrees
			// (remote and any) the datapath looks both up and a deny wins.
			for k, a := range m {
				if a.deny {
					continue
				}
				for dk, da := range m {
					if da.deny && dk.Covers(k) {
						delete(m, k)
						break
					}
				}
			}
			for k, a := range m {
				t.Entries[k] = Value{Deny: a.deny, MatchType: a.matchType, Cookie: cookie(a.refs)}
			}
			if !t.Enforced && len(t.Entries) > 0 {
				// Allow entries without default deny change nothing: only
				// deny entries are enforced (Cilium's non-default-deny policies).
				for k, v := range t.Entries {
					if !v.Deny {
						delete(t.Entries, k)
					}
				}
			}
		}
	}
	return res
}

// acc accumulates the rules of one key while compiling.
type acc struct {
	refs      []Ref
	deny      bool
	matchType MatchType
}

// add merges a rule into a key: a deny replaces allows, refs accumulate.
func add(m map[Key]*acc, k Key, deny bool, mt MatchType, ref Ref) {
	a, ok := m[k]
	if !ok {
		m[k] = &acc{refs: []Ref{ref}, deny: deny, matchType: mt}
		return
	}
	switch {
	case deny && !a.deny:
		a.deny, a.refs, a.matchType = true, []Ref{ref}, mt
	case deny == a.deny && !slices.Contains(a.refs, ref):
		a.refs = append(a.refs, ref)
	}
}

func matchType(remote ipcache.ID, s portSpec) MatchType {
	switch {
	case remote != 0 && s.lo == 0:
		return MatchL3Proto
	case remote != 0:
		return MatchL3L4
	case s.lo == 0:
		return MatchProtoOnly
	}
	return MatchL4Only
}

// portPrefixes splits a port range into the fewest prefixes.
func portPrefixes(remote ipcache.ID, s portSpec) []Key {
	if s.lo == 0 && s.hi == 0 {
		return []Key{{Remote: remote, Proto: s.proto}}
	}
	var out []Key
	lo, hi := uint32(s.lo), uint32(s.hi)
	for lo <= hi {
		size := uint32(1)
		bits := uint8(16)
		for bits > 0 {
			next := size << 1
			if lo%next != 0 || lo+next-1 > hi {
				break
			}
			size, bits = next, bits-1
		}
		out = append(out, Key{Remote: remote, Proto: s.proto, Port: uint16(lo), PortBits: bits})
		lo += size
	}
	return out
}

// Verdict of a lookup.
type Verdict uint8

const (
	// NotEnforced: the direction is not enforced and no deny rule matched.
	NotEnforced Verdict = iota
	Allowed
	// DeniedByRule: a deny rule matched (Hubble's POLICY_DENY).
	DeniedByRule
	// DeniedByDefault: enforced and no allow rule matched (POLICY_DENIED).
	DeniedByDefault
)

func (v Verdict) String() string {
	return [...]string{"not enforced (allowed)", "allowed", "denied by rule", "denied by default"}[v]
}

// Decision is the result of a lookup, as the datapath computes it.
type Decision struct {
	Verdict   Verdict
	MatchType MatchType
	Cookie    uint32
	Key       Key
}

// Decide looks a packet up the way the kernel programs do: the longest
// prefix in the remote identity's subtree and in the any-remote subtree;
// a deny in either wins, then an allow (the remote's first), else the
// direction's default.
func (t *Table) Decide(remote ipcache.ID, proto uint8, port uint16) Decision {
	spec, specOK := t.longest(remote, proto, port)
	any, anyOK := t.longest(0, proto, port)
	pick := func(k Key, v Value) Decision {
		d := Decision{Verdict: Allowed, MatchType: v.MatchType, Cookie: v.Cookie, Key: k}
		if v.Deny {
			d.Verdict = DeniedByRule
		}
		return d
	}
	switch {
	case specOK && t.Entries[spec].Deny:
		return pick(spec, t.Entries[spec])
	case anyOK && t.Entries[any].Deny:
		return pick(any, t.Entries[any])
	case specOK && remote != 0:
		return pick(spec, t.Entries[spec])
	case anyOK:
		return pick(any, t.Entries[any])
	case t.Enforced:
		return Decision{Verdict: DeniedByDefault}
	}
	return Decision{Verdict: NotEnforced}
}

func (t *Table) longest(remote ipcache.ID, proto uint8, port uint16) (Key, bool) {
	best, found := Key{}, false
	for k := range t.Entries {
		if k.Remote == remote && k.Matches(proto, port) && (!found || k.Len() > best.Len()) {
			best, found = k, true
		}
	}
	return best, found
}

// SortedKeys returns a table's keys in a stable order (for listings).
func (t *Table) SortedKeys() []Key {
	keys := make([]Key, 0, len(t.Entries))
	for k := range t.Entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Remote != b.Remote {
			return a.Remote < b.Remote
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.PortBits < b.PortBits
	})
	return keys
}
