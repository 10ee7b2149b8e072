package flow

import "strconv"

// Kind says what a Flow stands for. Every consumer sees both kinds
// through the same sinks; each decides what it does with the second.
type Kind uint8

const (
	// KindExchange is an observed request/response exchange (the zero
	// value: every decoder's flow).
	KindExchange Kind = iota
	// KindPolicyVerdict is one L3/L4 policy decision of the kernel (a
	// connect, a SYN, a datagram): Policy is set, the L7 fields are empty,
	// Source and Destination are the 5-tuple as far as the hook knew it.
	KindPolicyVerdict
)

func (k Kind) String() string {
	if k == KindPolicyVerdict {
		return "policy-verdict"
	}
	return "exchange"
}

// Verdict is what policy did with the traffic, with Hubble's numbers
// (flow.Verdict of cilium/api/v1/flow).
type Verdict uint8

const (
	VerdictUnknown   Verdict = 0
	VerdictForwarded Verdict = 1
	VerdictDropped   Verdict = 2
	// VerdictAudit: a deny that audit mode (or the L7 audit evaluator,
	// where no proxy is in the path) let through.
	VerdictAudit Verdict = 4
)

func (v Verdict) String() string {
	switch v {
	case VerdictForwarded:
		return "FORWARDED"
	case VerdictDropped:
		return "DROPPED"
	case VerdictAudit:
		return "AUDIT"
	}
	return "UNKNOWN"
}

// DropReason says why traffic was (or, audited, would have been) denied,
// with Hubble's numbers (flow.DropReason).
type DropReason uint32

const (
	NoDropReason DropReason = 0
	// PolicyDenied: default deny, no rule allowed it.
	PolicyDenied DropReason = 133
	// PolicyDeny: a deny rule matched.
	PolicyDeny DropReason = 181
)

func (r DropReason) String() string {
	switch r {
	case NoDropReason:
		return ""
	case PolicyDenied:
		return "POLICY_DENIED"
	case PolicyDeny:
		return "POLICY_DENY"
	}
	return "DROP_REASON_" + strconv.FormatUint(uint64(r), 10)
}

// Hooks of Policy.Hook that are not kernel hooks.
const (
	// HookL7Audit: the L7 audit evaluator judged an observed request.
	HookL7Audit = "l7"
	// HookProxy: a node proxy (Envoy, the gRPC forwarder, a gRPC xDS
	// server) decided a request.
	HookProxy = "proxy"
)

// Policy is what policy decided about a flow: for a KindPolicyVerdict
// flow the decision itself; for an exchange, the decisions that allowed
// its connection (AllowedBy of each direction, when sextant knows them)
// and, when an L7 rule judged the request, that judgement (Verdict,
// DropReason, DeniedBy, Hook "l7" or "proxy").
type Policy struct {
	Verdict    Verdict    `json:"verdict"`
	DropReason DropReason `json:"drop_reason,omitempty"`
	// MatchType is Cilium's policy_match_type (1 L3-only, 2 L3-L4,
	// 3 L4-only, 4 all, 5 L3-proto, 6 proto-only; 0 none).
	MatchType uint8 `json:"match_type,omitempty"`
	// Direction of the decision, from the deciding endpoint: Ingress
	// into it, Egress out of it.
	Direction   Direction      `json:"direction"`
	Source      PolicyEndpoint `json:"source"`
	Destination PolicyEndpoint `json:"destination"`

	IngressAllowedBy []PolicyRef `json:"ingress_allowed_by,omitempty"`
	IngressDeniedBy  []PolicyRef `json:"ingress_denied_by,omitempty"`
	EgressAllowedBy  []PolicyRef `json:"egress_allowed_by,omitempty"`
	EgressDeniedBy   []PolicyRef `json:"egress_denied_by,omitempty"`

	// Proto is the IP protocol (6 TCP, 17 UDP).
	Proto uint8 `json:"proto,omitempty"`
	// Count is how many decisions this flow stands for (the kernel
	// reports a UDP flow once per second and counts the repeats); 1 for
	// every TCP decision and L7 judgement.
	Count    uint32 `json:"count,omitempty"`
	Revision uint64 `json:"revision,omitempty"`
	// Hook is where it was decided: connect, sendmsg, cgroup_skb,
	// tcx_ingress, tcx_egress (kernel), l7 (audit), proxy.
	Hook string `json:"hook,omitempty"`
}

// PolicyEndpoint is one side of a decision: its security identity and
// what names it.
type PolicyEndpoint struct {
	Identity  uint32   `json:"identity,omitempty"`
	ID        uint32   `json:"id,omitempty"` // local endpoint id, 0 for remote peers
	Name      string   `json:"name,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Labels    []string `json:"labels,omitempty"` // "source:key=value", sorted
}

// PolicyRef names a policy in allowed_by / denied_by.
type PolicyRef struct {
	Kind      string   `json:"kind,omitempty"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	Revision  uint64   `json:"revision,omitempty"`
}

// String is kind/namespace/name (kind/name for cluster-wide policies).
func (r PolicyRef) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// AllowedBy and DeniedBy are the policies of the decision's own direction.
func (p *Policy) AllowedBy() []PolicyRef {
	if p.Direction == Ingress {
		return p.IngressAllowedBy
	}
	return p.EgressAllowedBy
}

func (p *Policy) DeniedBy() []PolicyRef {
	if p.Direction == Ingress {
		return p.IngressDeniedBy
	}
	return p.EgressDeniedBy
}

// Label names the deciding policy in metrics: the first deny rule's
// policy, else the first allowing one, "" for default deny.
func (p *Policy) Label() string {
	refs := p.AllowedBy()
	if d := p.DeniedBy(); len(d) > 0 {
		refs = d
	}
	if len(refs) == 0 {
		return ""
	}
	return refs[0].String()
}

// Decided reports whether the flow is itself a decision to count: every
// policy verdict, and an exchange's L7 judgement. An exchange that only
// carries what allowed its connection repeats a decision counted already.
func (f *Flow) Decided() bool {
	if f.Policy == nil {
		return false
	}
	return f.Kind == KindPolicyVerdict || f.Policy.Hook == HookL7Audit || f.Policy.Hook == HookProxy
}

// MatchTypeName is the metrics label of a match type, Cilium's names.
func MatchTypeName(m uint8) string {
	switch m {
	case 0:
		return "none"
	case 1:
		return "L3-Only"
	case 2:
		return "L3-L4"
	case 3:
		return "L4-Only"
	case 4:
		return "all"
	case 5:
		return "L3-Proto"
	case 6:
		return "Proto-Only"
	}
	return "match_" + strconv.Itoa(int(m))
}
