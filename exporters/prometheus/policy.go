package prometheus

import (
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"

	"github.com/sextant/sextant/flow"
)

// policyVerdictsName counts policy decisions: every policy verdict flow
// (its Count: the kernel aggregates UDP repeats) and every exchange an L7
// rule judged (the L7 audit evaluator, a proxy).
const policyVerdictsName = "sextant_policy_verdicts_total"

type policyKey struct {
	direction, verdict, matchType, policy string
}

// policyFamily is sextant_policy_verdicts_total with the series limit of
// the other metrics. Worker goroutine only (count, overflowed are read at
// scrape time).
type policyFamily struct {
	vec        *prom.CounterVec
	series     map[policyKey]prom.Counter
	limit      int
	overflow   prom.Counter
	count      atomic.Int64
	overflowed atomic.Uint64
}

func newPolicyFamily(limit int) *policyFamily {
	return &policyFamily{
		vec: prom.NewCounterVec(prom.CounterOpts{
			Name: policyVerdictsName,
			Help: "Policy decisions, by traffic direction, verdict (FORWARDED, DROPPED, AUDIT), Cilium's match type (L7 for an L7 rule's) and deciding policy (kind/namespace/name of the first deny rule's policy, else of the first allowing one; empty for default deny).",
		}, []string{"direction", "verdict", "match_type", "policy"}),
		series: map[policyKey]prom.Counter{},
		limit:  limit,
	}
}

func (p *policyFamily) observe(f *flow.Flow) {
	pol := f.Policy
	match := flow.MatchTypeName(pol.MatchType)
	if f.Kind == flow.KindExchange {
		match = "L7"
	}
	k := policyKey{pol.Direction.String(), pol.Verdict.String(), match, pol.Label()}
	c, ok := p.series[k]
	switch {
	case ok:
	case len(p.series) >= p.limit:
		p.overflowed.Add(1)
		if p.overflow == nil {
			p.overflow = p.vec.WithLabelValues(overflow, overflow, overflow, overflow)
		}
		c = p.overflow
	default:
		c = p.vec.WithLabelValues(k.direction, k.verdict, k.matchType, k.policy)
		p.series[k] = c
		p.count.Add(1)
	}
	c.Add(float64(max(pol.Count, 1)))
}
